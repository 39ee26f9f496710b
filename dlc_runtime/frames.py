"""Batches of frames on the host or on a GPU, and what each backend does with them.

A batch is (B, H, W, 3) uint8 RGB, C-contiguous. It is either a numpy array (CPU decode) or a
*device batch*: a CUDA tensor with ``__cuda_array_interface__`` (NVDEC decode, assembled with
torch). GPU backends take a device batch where it lies (torch as a tensor, TensorRT and
onnxruntime's IOBinding by its pointer), so a frame decoded on the GPU never crosses to the host;
every other backend gets a host copy through :func:`to_host`.

This module imports no torch: a device batch is handled through the attributes it exposes.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from dlc_runtime.errors import BackendError

#: a host (numpy) or device (CUDA tensor) batch of uint8 RGB frames.
Frames = Any


def on_device(frames: Frames) -> bool:
    """True for a device batch (anything but a numpy array)."""
    return not isinstance(frames, np.ndarray)


def frame_count(frames: Frames) -> int:
    return int(frames.shape[0])


def to_host(frames: Frames) -> np.ndarray:
    """The batch as a numpy array (a device batch is copied down; a numpy one is returned)."""
    if isinstance(frames, np.ndarray):
        return frames
    cpu = getattr(frames, "cpu", None)  # torch tensors
    if cpu is not None:
        return np.ascontiguousarray(cpu().numpy())
    return np.ascontiguousarray(np.from_dlpack(frames))


def cuda_pointer(frames: Frames) -> int:
    """The device address of a device batch's first byte (``__cuda_array_interface__``)."""
    interface = getattr(frames, "__cuda_array_interface__", None)
    if interface is None:
        raise BackendError(f"frames of type {type(frames).__name__} are not in GPU memory "
                           "(no __cuda_array_interface__)")
    return int(interface["data"][0])


def cuda_device_index(frames: Frames) -> int | None:
    """The CUDA device a device batch lives on (None when it does not say)."""
    device = getattr(frames, "device", None)
    index = getattr(device, "index", None)
    return None if index is None else int(index)


def check_device_frames(frames: Frames) -> None:
    """A device batch must be uint8 (B, H, W, 3) and contiguous, as a host batch is."""
    shape = tuple(int(s) for s in frames.shape)
    dtype = str(getattr(frames, "dtype", ""))
    contiguous = getattr(frames, "is_contiguous", lambda: True)()
    if not dtype.endswith("uint8") or len(shape) != 4 or shape[-1] != 3 or not contiguous:
        raise BackendError(f"backend expects contiguous uint8 (B, H, W, 3) frames, got "
                           f"{dtype} {shape}{'' if contiguous else ' (not contiguous)'}")


__all__ = ["Frames", "on_device", "frame_count", "to_host", "cuda_pointer",
           "cuda_device_index", "check_device_frames"]
