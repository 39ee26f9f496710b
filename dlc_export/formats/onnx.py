"""ONNX graphs, one file per graph: ``<graph>.onnx`` (fp32, in every bundle) and the fp16
variant ``<graph>.fp16.onnx`` (manifest ``<graph>_onnx_fp16``).

The fp16 variant keeps the graph's inputs and outputs as they are (uint8 frames in, fp32
keypoints out) and runs the network in half (``dlc_export.half``): the form TensorRT 11's
strongly typed networks and ONNX Runtime's CUDA fp16 kernels want. ONNX Runtime's CPU provider
runs it too (it computes the half nodes it has no kernel for in fp32), which is where its parity
is checked without a GPU. Graphs without a half network (detectors) are not duplicated: the
runtime runs their fp32 graph beside an fp16 pose graph.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from dlc_export.formats.base import ArtifactFormat, graph_entry
from dlc_export.onnx_export import export_onnx
from dlc_runtime.backends.onnxruntime_backend import onnx_graph_name

if TYPE_CHECKING:
    from dlc_export.tasks.base import ExportContext


class OnnxFormat(ArtifactFormat):
    kind = "onnx"
    runtime_backend = "onnxruntime"

    def graph_name(self, graph: str, precision: str | None = None) -> str:
        return onnx_graph_name(graph, precision or self.precision)

    @property
    def what(self) -> str:
        return "" if self.precision == "fp32" else f"{self.precision} ONNX graph"

    def backend_label(self, ctx: ExportContext) -> str:
        return "onnxruntime-cpu" + ("" if self.precision == "fp32" else f"-{self.precision}")

    def write(self, ctx: ExportContext) -> None:
        for graph in ctx.task.graphs.values():
            precision = self.artifact_precision(graph)
            name = self.graph_name(graph.name, precision)
            if name in ctx.manifest.graphs:
                continue  # a graph without a half network keeps its fp32 file
            module = graph.half() if precision == "fp16" else graph.module
            file = f"{graph.name}.onnx" if precision == "fp32" \
                else f"{graph.name}.{precision}.onnx"
            frames, *further = (torch.from_numpy(np.ascontiguousarray(a))
                                for a in graph.example)
            export_onnx(module, frames, ctx.staging / file, output_names=graph.output_names,
                        extra_inputs=dict(zip(graph.extra_input_names, further)),
                        opset=ctx.options.opset, simplify=ctx.options.simplify,
                        what=f"ONNX export of {graph.what}"
                        + ("" if precision == "fp32" else f" ({precision})"))
            ctx.manifest.graphs[name] = graph_entry(graph, file, ctx.options.opset)

    def backend_options(self, ctx: ExportContext, graph: str) -> dict:
        return {"graph": self.graph_name(graph, self.artifact_precision(ctx.task.graphs[graph]))}
