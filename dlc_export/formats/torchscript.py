"""Torch artifacts (runtime backend ``torch``, GPUs without TensorRT): ``<graph>.<precision>.
torchscript.pt`` (or ``.pt2`` with ``torch_method="export"``), manifest ``<graph>_torch_<p>``.

fp16 and bf16 run the network in that dtype (``dlc_export.half``; bf16 is torch-only: ONNX and
TensorRT take fp16); graphs without a reduced network (detectors) get one fp32 artifact, which the
runtime runs beside any pose precision. Each artifact is
checked as the runtime loads it, on the parity frames and on another batch and frame size
(traced shapes must generalise).
"""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import numpy as np
import torch

from dlc_export.formats.base import ArtifactFormat, graph_entry
from dlc_export.tasks.base import second_frames
from dlc_export.torch_artifact import save_torch_artifact, torch_artifact_file
from dlc_runtime.backends.torch_backend import torch_graph_name

if TYPE_CHECKING:
    from dlc_export.tasks.base import ExportContext


class TorchFormat(ArtifactFormat):
    kind = "torch"
    runtime_backend = "torch"

    def __init__(self, precision: str = "fp32", method: str = "torchscript"):
        super().__init__(precision)
        self.method = method

    @property
    def not_written(self) -> str:
        return "the torch artifact was not written"

    @property
    def what(self) -> str:
        return f"torch {self.precision} artifact"

    def graph_name(self, graph: str, precision: str | None = None) -> str:
        return torch_graph_name(precision or self.precision, graph)

    def backend_label(self, ctx: ExportContext) -> str:
        return f"torch-{self.method}-{self.precision}-{torch.device(ctx.options.device).type}"

    def device(self, ctx: ExportContext) -> str:
        return ctx.options.device

    def write(self, ctx: ExportContext) -> None:
        device = torch.device(ctx.options.device)
        for graph in ctx.task.graphs.values():
            precision = self.artifact_precision(graph)
            name = self.graph_name(graph.name, precision)
            if name in ctx.manifest.graphs:
                continue  # the detector's fp32 artifact serves every pose precision
            reduced = precision != "fp32"  # half() converts a copy
            module = graph.half(precision) if reduced else graph.module
            if device.type != "cpu":  # a copy: the caller's module stays the CPU reference
                module = (module if reduced else copy.deepcopy(module)).to(device)
            args = tuple(torch.from_numpy(np.ascontiguousarray(a)).to(device)
                         for a in graph.example)
            file = torch_artifact_file(precision, self.method, graph.name)
            save_torch_artifact(module.eval(), args, ctx.staging / file, self.method,
                                max_batch=ctx.manifest.input.batch.max,
                                what=f"{graph.what} ({precision})")
            ctx.manifest.graphs[name] = graph_entry(graph, file)

    def frame_sets(self, ctx: ExportContext) -> list[np.ndarray]:
        return [ctx.source.frames, second_frames(ctx.source.frames)]

    def backend_options(self, ctx: ExportContext, graph: str) -> dict:
        return {"graph": graph, "precision": self.precision}
