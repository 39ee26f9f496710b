"""A fake ``PyNvVideoCodec`` module: the 2.x ``SimpleDecoder`` surface that
``dlc_runtime.nvdec`` uses, decoding with OpenCV on the CPU. No GPU, no NVDEC.

What it keeps of the real library (read from its sources, 2.0):

- ``SimpleDecoder(enc_file_path, gpu_id=0, ..., use_device_memory=True, ...,
  output_color_type=OutputColorType.NATIVE, ...)``; a stream whose metadata has no frame count
  is refused at construction, as the real wrapper does; a file the demuxer cannot open raises a
  multi-line ``PyNvVCException``.
- ``get_stream_metadata()`` -> ``width, height, num_frames, average_fps, duration, bitrate,
  codec_name``; ``seek_to_index(i)`` (``IndexError`` out of range); ``get_batch_frames(n)``: the
  next ``n`` frames, never past the metadata count, fewer at the end of the stream. The codec is
  checked at the first decode, where the real decoder creates its NVDEC session.
- Frames reuse the decoder's memory: each ``get_batch_frames`` call overwrites the frames the
  previous call returned (the real one unlocks and reuses its surfaces), so a consumer that does
  not copy them in time sees other pixels.
- Frames are laid out as the real ones: ``OutputColorType.NATIVE`` gives NV12, (H * 3 / 2, W)
  (luma rows, then interleaved Cb/Cr rows; made here with OpenCV's BT.601 RGB -> YUV 4:2:0),
  ``RGB`` gives interleaved (H, W, 3).
- Frames expose ``shape``, ``dtype``, ``timestamp``, ``__dlpack__(stream=None)`` (no
  ``max_version``: torch falls back as it does for the real one) and ``__dlpack_device__``; here
  they are host memory (kDLCPU), so ``NvdecVideoIterator`` runs with ``batch_device="cpu"``.

``module.calls`` records what was asked (constructor arguments, seeks, batch requests)::

    fake = install_fake_nvdec(monkeypatch, unsupported_codecs={"mpeg4"})
"""
from __future__ import annotations

import enum
import sys
import types
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

#: OpenCV fourcc (lowercase) -> FFmpeg codec name, as the real metadata reports it.
CODEC_NAMES = {"mp4v": "mpeg4", "fmp4": "mpeg4", "mjpg": "mjpeg", "avc1": "h264",
               "h264": "h264", "hev1": "hevc"}


def make_fake_pynvvideocodec(unsupported_codecs: set[str] | frozenset[str] = frozenset(),
                             fail_at: int | None = None,
                             wrong_layout: bool = False) -> types.ModuleType:
    """The fake module.

    Args:
        unsupported_codecs: codec names whose first decode raises ``PyNvVCExceptionUnsupported``
            (a GPU whose NVDEC lacks them).
        fail_at: frame index whose decode raises ``PyNvVCException`` (a corrupt packet).
        wrong_layout: frames in a layout the iterator did not ask for (4:4:4 planes (3 H, W)
            for NATIVE, planar RGB (3, H, W) for RGB), as a 4:4:4 stream or another library
            version would give.
    """
    nvc = types.ModuleType("PyNvVideoCodec")
    nvc.__version__ = "2.0.0+fake"
    calls: dict[str, Any] = {"opened": [], "seeks": [], "batches": []}
    nvc.calls = calls
    nvc.OutputColorType = enum.Enum("OutputColorType", ["NATIVE", "RGB", "RGBP"], start=0)

    class PyNvVCException(Exception):
        pass

    class PyNvVCExceptionUnsupported(Exception):
        pass

    nvc.PyNvVCException = PyNvVCException
    nvc.PyNvVCExceptionUnsupported = PyNvVCExceptionUnsupported

    @dataclass
    class StreamMetadata:
        width: int
        height: int
        num_frames: int
        average_fps: float
        duration: float
        bitrate: int
        codec_name: str

    class DecodedFrame:
        def __init__(self, array: np.ndarray, timestamp: int) -> None:
            self._array = array
            self.timestamp = timestamp
            self.shape = tuple(array.shape)
            self.dtype = "|u1"

        def __dlpack__(self, stream: Any = None) -> Any:
            return self._array.__dlpack__()

        def __dlpack_device__(self) -> tuple[int, int]:
            return self._array.__dlpack_device__()

    class SimpleDecoder:
        def __init__(self, enc_file_path: str, gpu_id: int = 0, cuda_context: int = 0,
                     cuda_stream: int = 0, use_device_memory: bool = True, max_width: int = 0,
                     max_height: int = 0, need_scanned_stream_metadata: bool = False,
                     decoder_cache_size: int = 4,
                     output_color_type: Any = nvc.OutputColorType.NATIVE,
                     bWaitForSessionWarmUp: bool = False,
                     enableDecodeStats: bool = False) -> None:
            calls["opened"].append(dict(path=enc_file_path, gpu_id=gpu_id,
                                        use_device_memory=use_device_memory,
                                        output_color_type=output_color_type))
            self._cap = cv2.VideoCapture(enc_file_path)
            if not self._cap.isOpened():
                raise PyNvVCException(f"Demuxer: cannot open {enc_file_path}\n"
                                      "FFmpegDemuxer.h:231 avformat_open_input failed")
            fourcc = int(self._cap.get(cv2.CAP_PROP_FOURCC))
            tag = "".join(chr((fourcc >> 8 * i) & 0xFF) for i in range(4)).lower()
            self._meta = StreamMetadata(
                width=int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                height=int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                num_frames=max(int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT)), 0),
                average_fps=float(self._cap.get(cv2.CAP_PROP_FPS)), duration=0.0, bitrate=0,
                codec_name=CODEC_NAMES.get(tag, tag))
            if self._meta.num_frames == 0:
                raise Exception("Elementary streams not supported by Simple Decoder. "
                                "Invalid input stream.")
            if output_color_type not in (nvc.OutputColorType.NATIVE, nvc.OutputColorType.RGB):
                raise NotImplementedError(f"the fake does not make {output_color_type}")
            self._rgb = output_color_type == nvc.OutputColorType.RGB
            self._next = 0
            self._pool: list[np.ndarray] = []
            self._session = False

        def get_stream_metadata(self) -> StreamMetadata:
            return self._meta

        def seek_to_index(self, index: int) -> None:
            if not 0 <= index < self._meta.num_frames:
                raise IndexError(f"Index {index} is out of range [0, "
                                 f"{self._meta.num_frames - 1}]")
            calls["seeks"].append(index)
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, index)
            self._next = index

        def get_batch_frames(self, batch_size: int) -> list[DecodedFrame]:
            calls["batches"].append(batch_size)
            if not self._session:
                if self._meta.codec_name in unsupported_codecs:
                    raise PyNvVCExceptionUnsupported(
                        f"Codec {self._meta.codec_name} not supported on this GPU\n"
                        "NvDecoder.cpp:412 cuvidGetDecoderCaps: bIsSupported == 0")
                self._session = True
            end = min(self._next + batch_size, self._meta.num_frames)
            frames = []
            for slot, index in enumerate(range(self._next, end)):
                if index == fail_at:
                    raise PyNvVCException(f"CUDA error: CUDA_ERROR_INVALID_SOURCE at frame "
                                          f"{index}\nNvDecoder.cpp:655 cuvidDecodePicture")
                ok, bgr = self._cap.read()
                if not ok:
                    break  # end of the stream before the metadata count
                frames.append(DecodedFrame(self._convert(slot, bgr), index))
                self._next = index + 1
            return frames

        def _convert(self, slot: int, bgr: np.ndarray) -> np.ndarray:
            """The frame in the decoder's reused memory (pool slot ``slot``)."""
            h, w = bgr.shape[:2]
            if wrong_layout:
                frame = np.ascontiguousarray(np.concatenate([bgr[..., c] for c in range(3)])) \
                    if not self._rgb else np.ascontiguousarray(bgr[..., ::-1].transpose(2, 0, 1))
            elif self._rgb:
                frame = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            else:  # I420 (Y, U plane, V plane) -> NV12 (Y, interleaved UV rows)
                i420 = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420).reshape(-1)
                u = i420[h * w: h * w * 5 // 4].reshape(h // 2, w // 2)
                v = i420[h * w * 5 // 4:].reshape(h // 2, w // 2)
                frame = np.concatenate([i420[:h * w].reshape(h, w),
                                        np.stack([u, v], axis=-1).reshape(h // 2, w)])
            while len(self._pool) <= slot:
                self._pool.append(np.empty(0, np.uint8))
            if self._pool[slot].shape != frame.shape:
                self._pool[slot] = np.empty(frame.shape, np.uint8)
            self._pool[slot][...] = frame
            return self._pool[slot]

    nvc.SimpleDecoder = SimpleDecoder
    return nvc


def install_fake_nvdec(monkeypatch: Any, **options: Any) -> types.ModuleType:
    """Puts a fake ``PyNvVideoCodec`` in ``sys.modules`` for the test (``options``: see
    :func:`make_fake_pynvvideocodec`)."""
    fake = make_fake_pynvvideocodec(**options)
    monkeypatch.setitem(sys.modules, "PyNvVideoCodec", fake)
    return fake
