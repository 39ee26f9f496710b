"""NV12 -> RGB on the GPU with the colours the CPU decoder gives.

Why not PyNvVideoCodec's own RGB output: its CUDA kernel converts with the stream's colour matrix,
BT.709 when the stream does not name one (most lab videos), where the CPU decoder (OpenCV, through
FFmpeg's swscale) uses BT.601. Saturated colours then differ by up to ~30 levels (mean
~6 on textured frames), enough to move keypoints of a model trained on OpenCV-decoded frames.
This module converts NVDEC's native NV12 as swscale does for limited-range 8-bit video: BT.601
coefficients, luma scaled by 255/219 and chroma by 255/224, each chroma sample shared by its 2x2
luma block, truncated to uint8 (tests/test_nvdec.py measures it against OpenCV on raw I420
video: within 2 levels).

torch is handed in by the caller (this module imports none, like the rest of the runtime).
"""
from __future__ import annotations

from typing import Any

#: per output channel R, G, B: (Cb, Cr) weights of BT.601 (ITU-R BT.601, Kr 0.299, Kb 0.114).
BT601_CHROMA = ((0.0, 1.402), (-0.344136, -0.714136), (1.772, 0.0))
LUMA_SCALE = 255.0 / 219.0
CHROMA_SCALE = 255.0 / 224.0


def nv12_frame_size(shape: tuple[int, ...]) -> tuple[int, int] | None:
    """(height, width) of an NV12 frame of ``shape`` ((H * 3 / 2, W)), None if not NV12-shaped
    or of odd size (4:2:0 chroma needs even sizes)."""
    if len(shape) != 2 or shape[0] % 3:
        return None
    height, width = shape[0] * 2 // 3, shape[1]
    if height % 2 or width % 2 or height == 0:
        return None
    return height, width


def nv12_to_rgb(torch: Any, nv12: Any, out: Any) -> None:
    """Convert a batch of NV12 frames into ``out``.

    Args:
        torch: the torch module.
        nv12: (B, H * 3 / 2, W) uint8: the luma rows, then the interleaved Cb/Cr rows.
        out: (B, H, W, 3) uint8, contiguous: receives the RGB frames (same device).
    """
    b, h, w = int(out.shape[0]), int(out.shape[1]), int(out.shape[2])
    # Viewing luma as (B, H/2, 2, W/2, 2) lets a (B, H/2, 1, W/2, 1) chroma term broadcast over
    # its 2x2 block: nearest upsampling with no upsampled copy.
    luma = nv12[:, :h].to(torch.float32).sub_(16.0).mul_(LUMA_SCALE).view(b, h // 2, 2, w // 2, 2)
    chroma = nv12[:, h:].reshape(b, h // 2, w // 2, 2).to(torch.float32)
    chroma = chroma.sub_(128.0).mul_(CHROMA_SCALE)
    cb, cr = chroma[..., 0], chroma[..., 1]
    rgb = out.view(b, h // 2, 2, w // 2, 2, 3)
    for channel, (wb, wr) in enumerate(BT601_CHROMA):
        term = (cb * wb + cr * wr)[:, :, None, :, None]
        rgb[..., channel].copy_((luma + term).floor_().clamp_(0.0, 255.0))


__all__ = ["nv12_to_rgb", "nv12_frame_size", "BT601_CHROMA"]
