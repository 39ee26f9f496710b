"""Which decoder reads a video: NVDEC on the GPU or OpenCV on the CPU, and why.

:func:`open_video` returns an iterator with the :class:`~dlc_runtime.video.VideoIterator`
interface: :class:`~dlc_runtime.video.VideoIterator` (host numpy batches) or
:class:`~dlc_runtime.nvdec.NvdecVideoIterator` (device batches, :mod:`dlc_runtime.frames`).

``decoder="auto"`` takes NVDEC only where it saves work: the backend runs on a CUDA device and
takes device batches (else every frame would be copied back to the host, which the CPU decoder
avoids), PyNvVideoCodec and a CUDA torch are installed, and NVDEC decodes this file's first
frame. Otherwise the CPU decodes. Either way one INFO line on the ``dlc_runtime.decoders``
logger says which decoder runs and why, e.g. ``decoder: cpu (the backend takes host frames
only)``. ``"nvdec"`` forces NVDEC (a one-line :class:`VideoError` says what is missing);
``"cpu"`` forces OpenCV.

Nothing here imports torch or PyNvVideoCodec unless NVDEC is considered.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from dlc_runtime.errors import VideoError
from dlc_runtime.video import VideoIterator

log = logging.getLogger(__name__)

DECODERS = ("auto", "cpu", "nvdec")


def _gpu_id(device: str) -> int | None:
    """The CUDA device index of ``device`` ("cuda" -> 0, "cuda:1" -> 1), None if not CUDA."""
    kind, _, index = device.partition(":")
    if kind != "cuda":
        return None
    return int(index) if index.isdigit() else 0


def nvdec_missing() -> str | None:
    """What keeps NVDEC from running here (None: PyNvVideoCodec and a CUDA torch are there).

    Imports PyNvVideoCodec and torch; only called when NVDEC is considered.
    """
    from dlc_runtime.nvdec import first_line, import_pynvvideocodec, import_torch

    try:
        import_pynvvideocodec()
    except ImportError:
        return "PyNvVideoCodec is not installed"
    except Exception as exc:  # installed, but the NVIDIA driver's libraries do not load
        return f"PyNvVideoCodec does not load: {first_line(exc)}"
    try:
        torch = import_torch()
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "torch sees no CUDA GPU"
    return None


def open_video(path: str | os.PathLike[str], *, decoder: str = "auto", device: str = "cpu",
               accepts_device_frames: bool = False, batch_size: int = 8, prefetch: int = 4,
               start: int = 0, stop: int | None = None, allow_truncated: bool = False,
               nvdec_options: dict[str, Any] | None = None,
               cpu_options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """Open ``path`` with the decoder ``decoder`` picks (see the module docstring).

    Args:
        path: the video file.
        decoder: "auto", "cpu" or "nvdec".
        device: the backend's device ("cpu", "cuda", "cuda:N"); NVDEC decodes on that GPU
            (GPU 0 when NVDEC is forced for a CPU backend).
        accepts_device_frames: the consumer takes device batches (the pipeline's
            ``accepts_device_frames``, from its backend's).
        batch_size, prefetch, start, stop, allow_truncated: as for :class:`VideoIterator`.
        nvdec_options: further :class:`~dlc_runtime.nvdec.NvdecVideoIterator` arguments
            (``hold``, ``colour``; the tests' ``batch_device``).
        cpu_options: further :class:`VideoIterator` arguments (``stride``,
            ``skip_unreadable``, ``seek``); NVDEC decodes every frame, so a caller selecting
            frames drops the others from its batches.

    Returns:
        (iterator, reason): the open iterator (the caller closes it; it is a context manager)
        and the logged reason, which starts with the decoder's name: ``"nvdec (...)"`` or
        ``"cpu (...)"``.

    Raises:
        VideoError: an unknown ``decoder``; ``"nvdec"`` forced where it cannot run; the video
            cannot be decoded by the chosen decoder (CPU: also after an NVDEC fallback).
    """
    if decoder not in DECODERS:
        raise VideoError(f"unknown decoder {decoder!r}; use one of {', '.join(DECODERS)}")
    args = dict(batch_size=batch_size, prefetch=prefetch, start=start, stop=stop,
                allow_truncated=allow_truncated)
    cpu_args = {**args, **(cpu_options or {})}
    gpu_id = _gpu_id(device)

    if decoder == "cpu":
        return _cpu(path, cpu_args, "asked for with decoder='cpu'")
    if decoder == "nvdec":
        missing = nvdec_missing()
        if missing is not None:
            from dlc_runtime.nvdec import INSTALL_HINT

            raise VideoError(f"decoder 'nvdec' cannot run here: {missing}; {INSTALL_HINT} "
                             "(with a CUDA build of torch), or use decoder='cpu'")
        iterator = _nvdec(path, args, gpu_id or 0, nvdec_options)  # VideoError: as it says
        why = "asked for with decoder='nvdec'"
        if not accepts_device_frames:
            why += "; the backend takes host frames, so each batch is copied to the host"
        return _chosen(iterator, "nvdec", why)

    if gpu_id is None:
        return _cpu(path, cpu_args, f"the backend runs on '{device}', not on a CUDA GPU")
    if not accepts_device_frames:
        return _cpu(path, cpu_args, "the backend takes host frames only")
    missing = nvdec_missing()
    if missing is not None:
        from dlc_runtime.nvdec import INSTALL_HINT

        return _cpu(path, cpu_args, f"{missing}; {INSTALL_HINT} to decode on the GPU")
    try:
        iterator = _nvdec(path, args, gpu_id, nvdec_options)
    except VideoError as exc:  # its advice ("use decoder='cpu'") is what happens here
        return _cpu(path, cpu_args, str(exc).split("; ")[0])
    codec = f"{iterator.codec} " if iterator.codec else ""
    return _chosen(iterator, "nvdec", f"{codec}decoded on cuda:{gpu_id}, frames stay on the "
                                      "GPU for the backend")


def _nvdec(path: str | os.PathLike[str], args: dict[str, Any], gpu_id: int,
           options: dict[str, Any] | None) -> Any:
    from dlc_runtime.nvdec import NvdecVideoIterator

    return NvdecVideoIterator(path, gpu_id=gpu_id, **args, **(options or {}))


def _cpu(path: str | os.PathLike[str], args: dict[str, Any], why: str) -> tuple[Any, str]:
    return _chosen(VideoIterator(path, **args), "cpu", why)


def _chosen(iterator: Any, name: str, why: str) -> tuple[Any, str]:
    reason = f"{name} ({why})"
    log.info("decoder: %s", reason)
    return iterator, reason


__all__ = ["DECODERS", "open_video", "nvdec_missing"]
