"""OpenVINO artifacts (runtime backend ``openvino``, CPUs) at fp32, bf16 or int8.

- fp32: nothing new is written: OpenVINO runs the bundle's fp32 ONNX graphs; the check says it
  gives their keypoints (``parity.openvino_fp32.json``).
- bf16: also nothing new on disk (bf16 is how OpenVINO compiles the fp32 graph on a CPU with
  bf16 units); the manifest lists ``<graph>_openvino_bf16`` on the graph's ONNX file, so the
  runtime runs bf16 only for a bundle whose bf16 was checked. Needs a CPU with bf16 units.
- int8: ``<graph>.int8.xml`` + ``.bin`` (``<graph>_openvino_int8``), quantized by NNCF on frames
  of the user's videos (``openvino_int8.py``).

Graphs without a half network (detectors) stay fp32, as in every reduced-precision format.
A reduced precision has two reports, both gating the export: the task's parity harness vs the
PyTorch model (``parity.openvino_<p>.json``, the stated reduced-precision gate of
``dlc_export.parity``) and, on the same real frames through the runtime pipeline, its keypoints
vs the fp32 graph's on the keypoints fp32 detects (``parity.openvino_<p>.vs_fp32.json``: median
and 95th percentile, :data:`AGREEMENT_GATE`).
"""
from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

from dlc_export.errors import ParityError
from dlc_export.formats.base import ArtifactFormat, graph_entry
from dlc_io import atomic_write_text
from dlc_runtime.backends.openvino_backend import openvino_graph_name, report_files

if TYPE_CHECKING:
    from dlc_export.tasks.base import ExportContext
    from dlc_runtime.backends import Backend

log = logging.getLogger(__name__)

#: The gate of a reduced precision's keypoints vs the fp32 graph's, on the keypoints fp32
#: detects (likelihood >= pcutoff) in the parity frames: the median within 1 px (the issue's
#: accuracy target for CPU speed-ups), the 95th percentile within 4 px (half a stride-8 cell:
#: at most one keypoint in twenty may move to a neighbouring heatmap cell). Measured figures:
#: benchmarks/results/openvino_cpu.json.
AGREEMENT_GATE = {"median_px": 1.0, "p95_px": 4.0}
#: Frames NNCF calibrates on, spread over the calibration videos (TensorRT int8 takes as many).
CALIBRATION_FRAMES = 64


class OpenVinoFormat(ArtifactFormat):
    kind = "openvino"
    runtime_backend = "openvino"

    @property
    def what(self) -> str:
        return f"OpenVINO {self.precision}"

    @property
    def report_file(self) -> str:
        return report_files(self.precision)[0]

    def backend_label(self, ctx: ExportContext) -> str:
        return f"openvino-cpu-{self.precision}"

    def graph_name(self, graph: str, precision: str | None = None) -> str:
        return openvino_graph_name(graph, precision or self.precision)

    def write(self, ctx: ExportContext) -> None:
        if self.precision == "bf16":
            self._list_bf16(ctx)
        elif self.precision == "int8":
            self._quantize(ctx)

    def _list_bf16(self, ctx: ExportContext) -> None:
        for graph in ctx.task.graphs.values():
            if graph.has_half:
                entry = graph_entry(graph, ctx.manifest.graphs[graph.name].file)
                ctx.manifest.graphs[self.graph_name(graph.name)] = entry

    def _quantize(self, ctx: ExportContext) -> None:
        from dlc_export.formats.openvino_int8 import calibration_items, quantize_to_ir
        from dlc_export.tensorrt_calibration import calibration_frames_from_videos

        frames = calibration_frames_from_videos(ctx.options.calibration_videos,
                                                CALIBRATION_FRAMES)
        ctx.save_manifest()  # the task's calibration inputs run the staged bundle
        further = ctx.task.calibration_inputs(ctx, frames)
        for name, graph in ctx.task.graphs.items():
            if not graph.has_half:
                continue
            source = ctx.staging / ctx.manifest.graphs[name].file
            file = f"{name}.int8.xml"
            items = calibration_items([t.name for t in graph.inputs], frames,
                                      further.get(name))
            quantize_to_ir(source, ctx.staging / file, items, what=graph.what)
            ctx.manifest.graphs[self.graph_name(name)] = graph_entry(graph, file)

    def backend_options(self, ctx: ExportContext, graph: str) -> dict:
        # The runtime refuses unchecked reduced precisions; this is the check.
        return {"graph": graph, "precision": self.precision, "require_parity": False}

    @contextmanager
    def open_backends(self, ctx: ExportContext) -> Iterator[dict[str, Backend]]:
        """The task's harness runs on these; before, a reduced precision is checked against
        the fp32 graph (its manifest entries, nested ones included, are listed by now)."""
        if self.precision != "fp32":
            self.check_against_fp32(ctx)
        with super().open_backends(ctx) as backends:
            yield backends

    def check_against_fp32(self, ctx: ExportContext) -> dict:
        """Writes ``parity.openvino_<p>.vs_fp32.json``: the runtime pipeline's keypoints at
        this precision vs the fp32 ONNX graph's (onnxruntime) on the parity frames; raises
        ParityError past :data:`AGREEMENT_GATE` unless ``allow_parity_failure``."""
        from dlc_runtime.benchmark.agreement import keypoint_agreement, pipeline_keypoints

        bundle, frames = ctx.bundle(), ctx.source.frames
        reference = pipeline_keypoints(bundle, frames, "onnxruntime")
        candidate = pipeline_keypoints(bundle, frames, "openvino", self.precision,
                                       require_parity=False)
        agreement = keypoint_agreement(reference, candidate, ctx.source.pcutoff)
        passed = all(getattr(agreement, key) <= bound for key, bound in AGREEMENT_GATE.items())
        report = {"frames": agreement.frames, "frame_size": list(frames.shape[1:3]),
                  "source": ctx.source.frames_source, "backend": self.backend_label(ctx),
                  "reference": "fp32 ONNX graph (onnxruntime-cpu), same pipeline",
                  **agreement.to_dict(), "gate": dict(AGREEMENT_GATE), "passed": passed}
        atomic_write_text(ctx.staging / report_files(self.precision)[1],
                          json.dumps(report, indent=2) + "\n")
        if not passed:
            message = (f"{self.what} vs fp32: {agreement.summary()} (gate: median "
                       f"{AGREEMENT_GATE['median_px']} px, p95 {AGREEMENT_GATE['p95_px']} px)")
            if not ctx.options.allow_parity_failure:
                raise ParityError(f"{message}; {self.not_written}")
            log.warning("%s; kept (allow_parity_failure)", message)
        return report
