"""INT8 calibration for TensorRT 8.5-10.x builds (``dlc_export.tensorrt_build``): frames from the
user's videos and an ``IInt8EntropyCalibrator2`` that uploads them with cuda-python.

TensorRT 11 has no calibrators (int8 needs Q/DQ nodes in the graph); nothing here runs there.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dlc_export.errors import TensorRTBuildError
from dlc_io import atomic_write_bytes


def calibration_frames_from_videos(videos: Sequence[str | os.PathLike[str]],
                                   count: int = 64) -> np.ndarray:
    """``count`` frames spread over ``videos`` (all the same size), for INT8 calibration."""
    from dlc_export.frames import frames_from_video

    if not videos:
        raise TensorRTBuildError("int8 calibration needs at least one video")
    per_video = max(1, -(-count // len(videos)))
    frames = [frames_from_video(v, per_video) for v in videos]
    sizes = {f.shape[1:3] for f in frames}
    if len(sizes) > 1:
        raise TensorRTBuildError(f"calibration videos differ in frame size {sorted(sizes)}; "
                                 "calibrate with videos of one size")
    return np.concatenate(frames)[:count]


def make_calibrator(trt: Any, frames: np.ndarray, batch_size: int, input_name: str,
                     cache_path: Path | None,
                     extra: dict[str, np.ndarray] | None = None) -> Any:
    """An IInt8EntropyCalibrator2 over uint8 frames (and the graph's further inputs, e.g.
    boxes, one row per frame), uploaded with cuda-python."""
    from dlc_runtime.backends.tensorrt_backend import DeviceBuffer, cuda_call, cuda_runtime

    rt = cuda_runtime()

    class FrameCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.inputs = {input_name: np.ascontiguousarray(frames),
                           **{k: np.ascontiguousarray(v) for k, v in (extra or {}).items()}}
            self.batch_size = batch_size
            self.position = 0
            self.buffers = {name: DeviceBuffer() for name in self.inputs}
            for name, data in self.inputs.items():
                self.buffers[name].ensure(data[:batch_size].nbytes)

        def get_batch_size(self) -> int:
            return self.batch_size

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self.position + self.batch_size > len(self.inputs[input_name]):
                return None  # TensorRT's signal that calibration data is exhausted
            for name, data in self.inputs.items():
                batch = data[self.position:self.position + self.batch_size]
                cuda_call(rt.cudaMemcpy(self.buffers[name].ptr, batch.ctypes.data, batch.nbytes,
                                        rt.cudaMemcpyKind.cudaMemcpyHostToDevice), "upload")
            self.position += self.batch_size
            return [self.buffers[n].ptr if n in self.buffers else 0 for n in names]

        def read_calibration_cache(self) -> bytes | None:
            if cache_path is not None and cache_path.is_file():
                return cache_path.read_bytes()
            return None

        def write_calibration_cache(self, cache: Any) -> None:
            if cache_path is not None:
                atomic_write_bytes(cache_path, bytes(cache))

        def __del__(self) -> None:
            try:
                for buffer in self.buffers.values():
                    buffer.free()
            except Exception:  # interpreter shutdown: the driver frees it anyway
                pass

    return FrameCalibrator()


__all__ = ["calibration_frames_from_videos", "make_calibrator"]
