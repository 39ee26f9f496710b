"""What a format is: it writes an artifact of every graph of any task, lists it in the
manifest, and opens it through the runtime's own backend for the task's parity harness.

Adding a format is one module with an :class:`ArtifactFormat` subclass and one line in
``formats_for`` (``dlc_export/formats/__init__.py``).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Iterator

import numpy as np

from dlc_runtime.backends import make_backend
from dlc_runtime.bundle import GraphSpec, Manifest, TensorSpec

if TYPE_CHECKING:
    from dlc_export.tasks.base import ExportContext
    from dlc_export.tasks.base import ExportGraph
    from dlc_runtime.backends import Backend


def graph_entry(graph: ExportGraph, file: str, opset: int | None = None) -> GraphSpec:
    """A manifest entry for an artifact of ``graph`` (its own copy of the tensor specs)."""
    return GraphSpec(file=file, opset=opset,
                     inputs=[TensorSpec(t.name, t.dtype, list(t.shape)) for t in graph.inputs],
                     outputs=[TensorSpec(t.name, t.dtype, list(t.shape))
                              for t in graph.outputs])


class ArtifactFormat(ABC):
    """One kind of artifact at one precision.

    Attributes:
        kind: "onnx", "torch" or "tensorrt" (with the precision, the report's file name).
        precision: "fp32", "fp16" or "int8".
        runtime_backend: the ``dlc_runtime`` backend that runs it.
    """

    kind: str
    runtime_backend: str

    def __init__(self, precision: str = "fp32"):
        self.precision = precision

    @property
    def label(self) -> str:
        return f"{self.kind}_{self.precision}"

    @property
    def report_file(self) -> str:
        """Where its parity report goes (the fp32 ONNX graphs' is the manifest's ``parity``)."""
        return "parity.json" if self.label == "onnx_fp32" else f"parity.{self.label}.json"

    @property
    def what(self) -> str:
        """Its name in error lines ("TensorRT fp16 engine"; "" for the fp32 ONNX graphs)."""
        return ""

    @property
    def not_written(self) -> str:
        """What a failed check means, for the error line."""
        return "the bundle was not written (--allow-parity-failure writes it anyway)"

    def backend_label(self, ctx: ExportContext) -> str:
        """The report's ``backend`` field."""
        return f"{self.runtime_backend}-{self.precision}"

    def artifact_precision(self, graph: ExportGraph) -> str:
        """The precision ``graph`` is written in: graphs without a half network (detectors)
        stay fp32 in every reduced-precision artifact."""
        return self.precision if graph.has_half or self.precision == "fp32" else "fp32"

    def graph_name(self, graph: str, precision: str | None = None) -> str:
        """The manifest name of ``graph``'s artifact of this kind."""
        return graph

    @abstractmethod
    def write(self, ctx: ExportContext) -> None:
        """Writes the artifacts of every graph of ``ctx.task`` into the staging folder and
        adds them to ``ctx.manifest`` (the pipeline saves it)."""

    def link(self, ctx: ExportContext, nested: Manifest, folder: str, as_graph: str) -> None:
        """Lists, under ``as_graph``, this kind's artifact of a nested bundle's pose graph
        (CTD's conditions bundle), its file relative to ``ctx.staging``."""
        spec = nested.graphs.get(self.graph_name("pose"))
        if spec is not None:
            ctx.manifest.graphs[self.graph_name(as_graph)] = GraphSpec(
                file=f"{folder}/{spec.file}", opset=spec.opset, inputs=list(spec.inputs),
                outputs=list(spec.outputs))

    def frame_sets(self, ctx: ExportContext) -> list[np.ndarray]:
        """The frames its check runs on."""
        return [ctx.source.frames]

    def backend_options(self, ctx: ExportContext, graph: str) -> dict:
        return {"graph": graph}

    def device(self, ctx: ExportContext) -> str:
        return "cpu"

    @contextmanager
    def open_backends(self, ctx: ExportContext) -> Iterator[dict[str, Backend]]:
        """task graph name -> the runtime backend running this artifact of it."""
        bundle = ctx.bundle()
        with ExitStack() as stack:
            yield {name: stack.enter_context(make_backend(
                       bundle, self.runtime_backend, device=self.device(ctx),
                       **self.backend_options(ctx, name)))
                   for name in ctx.task.graphs}
