"""GPU video decoding with NVDEC (PyNvVideoCodec): batches of RGB frames that stay on the GPU.

The :class:`dlc_runtime.video.VideoIterator` contract (batches ``(indices, frames)``, start/stop,
truncation check, one-line :class:`VideoError`), but ``frames`` is a *device batch*
(:mod:`dlc_runtime.frames`): a contiguous CUDA ``torch.uint8`` tensor (B, H, W, 3), RGB.

PyNvVideoCodec's ``SimpleDecoder`` (``use_device_memory=True``) hands out frames in GPU memory
with ``__dlpack__``; each is wrapped by ``torch.from_dlpack`` (no copy) and copied into a
preallocated batch, as the decoder reuses its surfaces on its next call. ``colour="bt601"``
(default) takes NVDEC's native NV12 and converts each batch with the CPU decoder's colours
(:mod:`dlc_runtime.nv12` says why); ``"nvdec"`` takes the library's RGB (the stream's matrix,
BT.709 when unnamed). This per-frame loop and the GPU work run in the decode thread on a side
stream, which the thread waits for before handing a batch out (complete on any stream).

Batch memory is a ring of ``prefetch + hold + 1`` batches, allocated once. A batch handed out is
not overwritten until the consumer has asked for ``hold`` more: a consumer may keep reading (or
have kernels queued that read) its ``hold`` latest batches, the current one included. The default
(4) covers a plain loop over the torch CUDA backend, which keeps up to 3 batches in flight.

torch and PyNvVideoCodec are imported when an iterator is created, never with ``dlc_runtime``.
The choice of decoder and the fallback to the CPU are in :mod:`dlc_runtime.decoders`.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from typing import Any

import numpy as np

from dlc_runtime.decode_thread import DecodeThread
from dlc_runtime.errors import VideoError
from dlc_runtime.nv12 import nv12_frame_size, nv12_to_rgb

#: what to install for NVDEC decoding (named in every "missing" message).
INSTALL_HINT = 'pip install "dlc-deploy[nvdec]"'
#: batches a consumer may still read after it received them (see the module docstring).
DEFAULT_HOLD = 4
#: colour conversions: "bt601" (NV12 converted as the CPU decoder does), "nvdec" (the library's).
COLOURS = ("bt601", "nvdec")


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (PyNvVideoCodec's span several lines)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def import_pynvvideocodec() -> Any:
    """The PyNvVideoCodec module. Raises ImportError when absent; other exceptions when it is
    installed but cannot load (it loads the NVIDIA driver's libraries at import)."""
    return importlib.import_module("PyNvVideoCodec")


def import_torch() -> Any:
    """torch, imported when NVDEC is considered (it assembles the device batches)."""
    import torch

    return torch


class NvdecVideoIterator(DecodeThread):
    """Iterate over a video in batches ``(frame_indices, frames)`` decoded by NVDEC.

    ``frame_indices`` is a numpy (B,) int64 array, ``frames`` a contiguous (B, H, W, 3) uint8 RGB
    torch tensor on ``cuda:gpu_id`` (the last batch may be smaller).

    Args:
        path: the video file (a seekable container: mp4, mkv, avi, mov...).
        batch_size: frames per batch.
        prefetch: decoded batches kept ready in the queue.
        start: first frame index to read.
        stop: frame index to stop before (None = end of the video).
        allow_truncated: accept a video that ends before its metadata frame count.
        gpu_id: the GPU that decodes and holds the batches.
        hold: batches the consumer may still read after receiving them (module docstring).
        colour: "bt601" (the CPU decoder's colours) or "nvdec" (PyNvVideoCodec's conversion).
        batch_device: where batches are assembled; None = ``cuda:gpu_id``. Only the tests set
            it ("cpu"), with a fake PyNvVideoCodec that hands out host frames.

    Raises:
        VideoError: PyNvVideoCodec or a CUDA torch is missing, or NVDEC cannot open or decode
            the first frame of the file (missing, corrupt, codec or pixel format NVDEC or this
            class does not handle).
    """

    thread_prefix = "nvdec"

    def __init__(self, path: str | os.PathLike[str], batch_size: int = 8, prefetch: int = 4,
                 start: int = 0, stop: int | None = None, allow_truncated: bool = False,
                 gpu_id: int = 0, hold: int = DEFAULT_HOLD, colour: str = "bt601",
                 batch_device: str | None = None) -> None:
        if hold < 1:
            raise ValueError(f"hold must be >= 1, got {hold}")
        if colour not in COLOURS:
            raise ValueError(f"colour must be one of {', '.join(COLOURS)}, got {colour!r}")
        self.hold, self.gpu_id, self.colour = int(hold), int(gpu_id), colour
        self._decoder: Any = None
        self._ring: list[Any] = []
        self._staging: Any = None  # NV12 frames of the batch being filled (colour "bt601")
        self._setup(path, batch_size, prefetch, start, stop, allow_truncated)
        nvc, torch = self._load_libraries()
        self.device = torch.device(batch_device or f"cuda:{self.gpu_id}")
        self._cuda = self.device.type == "cuda"
        if self._cuda and not torch.cuda.is_available():
            raise VideoError("NVDEC decoding needs torch with CUDA, but this torch sees no CUDA "
                             "GPU (CPU-only build or no driver); install a CUDA build of torch, "
                             "or use decoder='cpu'")
        self._stream = torch.cuda.Stream(self.device) if self._cuda else None
        native = nvc.OutputColorType.NATIVE if colour == "bt601" else nvc.OutputColorType.RGB
        try:
            self._decoder = nvc.SimpleDecoder(str(self.path), gpu_id=self.gpu_id,
                                              use_device_memory=True, output_color_type=native)
            meta = self._decoder.get_stream_metadata()
        except Exception as exc:  # PyNvVCException, RuntimeError, ... (one per failure kind)
            self._decoder = None
            raise VideoError(f"cannot decode video {self.path} with NVDEC: {first_line(exc)}; "
                             "re-encode it (e.g. `ffmpeg -i in.mp4 -c:v libx264 out.mp4`) or "
                             "use decoder='cpu'") from exc
        self.fps = float(getattr(meta, "average_fps", 0.0) or 0.0)
        # Metadata only (SimpleDecoder never yields more); the true count is n_decoded.
        self.n_frames = max(int(getattr(meta, "num_frames", 0) or 0), 0)
        self.width, self.height = int(meta.width), int(meta.height)
        self.codec = str(getattr(meta, "codec_name", "") or "")
        self._pending_first = False  # frame `start` already sits in the first batch
        if self.expected_frames != 0:
            self._decode_first_frame()

    def _load_libraries(self) -> tuple[Any, Any]:
        try:
            nvc, self._torch = import_pynvvideocodec(), import_torch()
        except ImportError as exc:
            raise VideoError(f"NVDEC decoding needs PyNvVideoCodec and torch ({first_line(exc)});"
                             f" {INSTALL_HINT}, or use decoder='cpu'") from exc
        except Exception as exc:  # installed, but its driver libraries do not load
            raise VideoError(f"PyNvVideoCodec does not load ({first_line(exc)}); check the "
                             "NVIDIA driver, or use decoder='cpu'") from exc
        return nvc, self._torch

    # ----------------------------------------------------------------------------------------
    @property
    def ring_size(self) -> int:
        """Batches allocated: queued (prefetch) + held by the consumer (hold) + being filled."""
        return self.prefetch + self.hold + 1

    def _on_stream(self) -> contextlib.AbstractContextManager[Any]:
        stack = contextlib.ExitStack()
        if self._cuda:
            stack.enter_context(self._torch.cuda.device(self.device))
            stack.enter_context(self._torch.cuda.stream(self._stream))
        return stack

    def _sync(self) -> None:
        # The copies must be done before the decoder reuses its surfaces (its next call) and
        # before the batch is handed out.
        if self._stream is not None:
            self._stream.synchronize()

    def _frame_shape(self) -> tuple[int, ...]:
        if self.colour == "bt601":
            return (self.height * 3 // 2, self.width)
        return (self.height, self.width, 3)

    def _as_tensor(self, frame: Any, index: int) -> Any:
        """One decoded frame as a uint8 tensor sharing the decoder's memory (NV12 or RGB)."""
        tensor = self._torch.from_dlpack(frame)
        if tensor.dtype != self._torch.uint8 or tuple(tensor.shape) != self._frame_shape():
            kind = "NV12" if self.colour == "bt601" else "RGB"
            raise VideoError(
                f"cannot decode video {self.path} with NVDEC: frame {index} came as "
                f"{str(tensor.dtype).replace('torch.', '')} {tuple(tensor.shape)}, expected "
                f"uint8 {kind} {self._frame_shape()} (another pixel format, e.g. 10-bit or "
                "4:4:4, or a changing resolution); use decoder='cpu'")
        return tensor

    def _decode_first_frame(self) -> None:
        """Decode frame ``start`` here, in the caller's thread: a file or codec NVDEC cannot
        handle fails at construction (so the CPU can take over), and the frame size comes from
        real pixels."""
        try:
            if self.start > 0:
                self._decoder.seek_to_index(self.start)
            frames = self._decoder.get_batch_frames(1)
        except Exception as exc:
            self.close()
            raise VideoError(f"cannot decode video {self.path} with NVDEC: "
                             f"{first_line(exc)}; use decoder='cpu'") from exc
        if not frames:
            self.close()
            raise VideoError(f"cannot decode video {self.path} with NVDEC: the first frame "
                             f"(index {self.start}) cannot be read; use decoder='cpu'")
        shape = tuple(int(d) for d in getattr(frames[0], "shape", ()))
        size = nv12_frame_size(shape) if self.colour == "bt601" else \
            (shape[:2] if len(shape) == 3 and shape[2] == 3 else None)
        # NV12's height comes from its row count: it must agree with the container's, else the
        # frame is another layout (a 4:4:4 frame has 3 H rows).
        if size is not None and (self.colour != "bt601" or self.height in (0, size[0])):
            self.height, self.width = size
        if self.colour == "bt601" and (self.height % 2 or self.width % 2):
            self.close()
            raise VideoError(f"cannot decode video {self.path} with NVDEC: its {self.width}x"
                             f"{self.height} frames have an odd size, which the NV12 conversion "
                             "does not take; use colour='nvdec' or decoder='cpu'")
        try:
            with self._on_stream():
                first = self._as_tensor(frames[0], self.start)
                self._ring = self._allocate()
                self._target(self._ring[0])[0].copy_(first)
                self._sync()
        except BaseException:
            self.close()
            raise
        self._pending_first = True

    def _allocate(self) -> list[Any]:
        torch = self._torch
        shape = (self.batch_size, self.height, self.width, 3)
        try:
            if self.colour == "bt601":
                self._staging = torch.empty((self.batch_size, *self._frame_shape()),
                                            dtype=torch.uint8, device=self.device)
            return [torch.empty(shape, dtype=torch.uint8, device=self.device)
                    for _ in range(self.ring_size)]
        except torch.OutOfMemoryError as exc:
            mib = (self.ring_size + 1) * int(np.prod(shape)) / 2**20
            raise VideoError(f"not enough GPU memory for NVDEC's {self.ring_size} batches of "
                             f"{shape} ({mib:.0f} MiB); lower batch_size or prefetch, or use "
                             "decoder='cpu'") from exc

    def _target(self, batch: Any) -> Any:
        """Where decoded frames of ``batch`` are copied: the NV12 staging or the batch."""
        return self._staging if self.colour == "bt601" else batch

    def _wanted(self) -> int:
        """Frames the next batch should hold (0: done)."""
        n = self.batch_size
        if self.stop is not None:
            n = min(n, self.stop - self.start - self.n_decoded)
        if self.n_frames > 0:  # SimpleDecoder yields nothing past the metadata count
            n = min(n, self.n_frames - self.start - self.n_decoded)
        return max(n, 0)

    def _fill(self, batch: Any, n: int, index: int) -> int:
        """Decode up to ``n`` frames into ``batch``; returns how many (fewer: end of video)."""
        target, count = self._target(batch), 0
        if self._pending_first:
            count, self._pending_first = 1, False
        while count < n and not self._stop_event.is_set():
            asked = n - count
            try:
                frames = self._decoder.get_batch_frames(asked)
            except Exception as exc:
                raise VideoError(f"NVDEC failed on video {self.path} decoding frames "
                                 f"{index + count}-{index + n - 1}: {first_line(exc)}; "
                                 "re-encode it or use decoder='cpu'") from exc
            for frame in frames:
                target[count].copy_(self._as_tensor(frame, index + count), non_blocking=True)
                count += 1
            self._sync()
            if len(frames) < asked:  # the decoder reached the end of the stream
                break
        if count and self.colour == "bt601":
            nv12_to_rgb(self._torch, self._staging[:count], batch[:count])
            self._sync()
        return count

    def _produce(self) -> None:
        with self._on_stream():
            index, batches = self.start, 0
            while not self._stop_event.is_set():  # type: ignore[union-attr]
                n = self._wanted()
                if n <= 0:
                    return
                batch = self._ring[batches % len(self._ring)]
                count = self._fill(batch, n, index)
                if count:
                    indices = np.arange(index, index + count, dtype=np.int64)
                    if not self._put((indices, batch[:count])):
                        return
                    index += count
                    batches += 1
                    self.n_decoded += count
                if count < n:
                    return

    def _check_iterable(self) -> None:
        if self._decoder is None and self.expected_frames != 0:
            raise RuntimeError("this NvdecVideoIterator is closed")

    def _release(self) -> None:
        # Batches already handed out stay valid (they keep their memory alive).
        self._decoder = None  # its destructor frees the NVDEC session and surfaces
        self._ring, self._staging = [], None


__all__ = ["NvdecVideoIterator", "INSTALL_HINT", "DEFAULT_HOLD", "import_pynvvideocodec",
           "import_torch", "first_line", "COLOURS"]
