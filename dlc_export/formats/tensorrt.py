"""TensorRT engines, one per graph (``<graph>.engine``), built from the graph's ONNX file for
this machine's GPU and recorded in the manifest's ``engines`` with their fingerprints.

TensorRT is imported only when an engine is built (``dlc_export.tensorrt_build``). Engines are
built for one frame size (the task's ``engine_frame_size``); the check resizes the parity frames
to it (both sides see the same frames, so the comparison stays exact). int8 calibrates on the
given videos, with the task's calibration data for the graphs' further inputs (TensorRT
8.5-10.x). On TensorRT 11 (strongly typed networks) an fp16 engine is built from the graph's fp16
ONNX variant (``<graph>.fp16.onnx``, written before by ``OnnxFormat("fp16")``, see
``formats_for``); graphs without a half network (detectors) build an fp32 engine there.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from dlc_export.formats.base import ArtifactFormat

if TYPE_CHECKING:
    from dlc_export.tasks.base import ExportContext
    from dlc_runtime.bundle import Manifest

#: Shared by every build on this machine: TensorRT reuses kernel timings across engines.
TIMING_CACHE = Path.home() / ".cache" / "dlc-deploy" / "tensorrt-timing.cache"


class TensorRTFormat(ArtifactFormat):
    kind = "tensorrt"
    runtime_backend = "tensorrt"

    @property
    def what(self) -> str:
        return f"TensorRT {self.precision} engine"

    def device(self, ctx: ExportContext) -> str:
        return "cuda"

    def write(self, ctx: ExportContext) -> None:
        from dlc_export.tensorrt_build import (calibration_frames_from_videos, export_tensorrt,
                                               import_tensorrt, refuse_strongly_typed_int8,
                                               strongly_typed_only)
        from dlc_runtime.backends.onnxruntime_backend import onnx_graph_name

        strongly_typed = strongly_typed_only()
        if strongly_typed and self.precision == "int8":
            refuse_strongly_typed_int8(import_tensorrt())  # before reading any video

        frames = calibration_frames_from_videos(ctx.options.calibration_videos) \
            if self.precision == "int8" else None
        further = ctx.task.calibration_inputs(ctx, frames) if frames is not None else {}
        ctx.save_manifest()  # the builder reads the ONNX graphs from the staged bundle
        TIMING_CACHE.parent.mkdir(parents=True, exist_ok=True)
        for name, graph in ctx.task.graphs.items():
            precision, source = self.precision, name
            if strongly_typed:  # the graph's types are the engine's
                precision = self.artifact_precision(graph)
                source = onnx_graph_name(name, precision) if precision == "fp16" else name
            entry = export_tensorrt(ctx.staging, precision=precision,
                                    frame_size=ctx.task.engine_frame_size(ctx),
                                    engine_name=f"{name}.engine", graph=name, onnx_graph=source,
                                    timing_cache_path=TIMING_CACHE, calibration_frames=frames,
                                    calibration_inputs=further.get(name))
            self._record(ctx, entry)

    def link(self, ctx: ExportContext, nested: Manifest, folder: str, as_graph: str) -> None:
        for entry in nested.engines:
            if entry.get("graph", "pose") == "pose":
                self._record(ctx, {**entry, "file": f"{folder}/{entry['file']}",
                                   "graph": as_graph})

    @staticmethod
    def _record(ctx: ExportContext, entry: dict) -> None:
        from dlc_export.tensorrt_build import with_engine

        ctx.manifest.engines = with_engine(ctx.manifest.engines, entry)

    def frame_sets(self, ctx: ExportContext) -> list[np.ndarray]:
        height, width = ctx.task.engine_frame_size(ctx)
        frames = ctx.source.frames
        if tuple(frames.shape[1:3]) != (height, width):
            frames = np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA)
                               for f in frames])
        return [frames]
