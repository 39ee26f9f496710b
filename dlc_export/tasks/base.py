"""What a task is: the graphs a kind of model exports, its manifest fields, and its parity
harness. Formats (``dlc_export/formats/``) turn any task's graphs into artifacts; the pipeline
(``dlc_export/pipeline.py``) runs them. Adding a task is one module here and one entry in
``dlc_export/tasks/__init__.py``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol

import numpy as np
from torch import nn

from dlc_export.half import reduced_precision
from dlc_export.options import ExportOptions
from dlc_export.parity import ParityGate, ParityReport, parity_report
from dlc_export.source import ExportSource
from dlc_runtime.bundle import Bundle, Manifest, TensorSpec, write_manifest

if TYPE_CHECKING:
    from dlc_runtime.backends import Backend

#: The frames input every graph takes first: uint8 NHWC RGB, any batch and frame size.
FRAMES = TensorSpec("images", "uint8", ["batch", "height", "width", 3])


@dataclass
class ExportContext:
    """The staging folder (renamed onto the output only when everything passed), the task,
    where it came from, the options, and the manifest the formats add their artifacts to."""

    staging: Path
    task: ExportTask
    source: ExportSource
    options: ExportOptions
    manifest: Manifest
    #: ``export_nested(config, snapshot, output, options) -> ExportResult``: the pipeline
    #: itself, for a bundle inside this one (CTD's conditions bundle).
    export_nested: Callable[..., Any] | None = None

    def save_manifest(self) -> None:
        """Writes the manifest (and fills its entries' sha256)."""
        write_manifest(self.staging, self.manifest)

    def bundle(self) -> Bundle:
        """The staged bundle as the runtime loads it, without re-hashing files this export
        has just written and hashed (each check would read every graph again; the pipeline
        verifies the finished bundle once)."""
        return Bundle.load(self.staging, verify_sha256=False)

    def gate(self, precision: str) -> ParityGate:
        return ParityGate.for_precision(precision, self.options.tolerance_px,
                                        self.source.pcutoff)


class ArtifactFormat(Protocol):
    """What a task sees of a format (``dlc_export/formats/base.py`` implements it; formats
    depend on tasks, never the other way round)."""

    precision: str

    @property
    def report_file(self) -> str: ...

    def backend_label(self, ctx: ExportContext) -> str: ...

    def link(self, ctx: ExportContext, nested: Manifest, folder: str, as_graph: str) -> None: ...


@dataclass
class ExportGraph:
    """One graph of a task.

    Attributes:
        name: its manifest name ("pose", "detector").
        module: the eager fp32 module, (frames, *further inputs) -> outputs in ``outputs``'
            order: the parity reference and what every format traces.
        inputs, outputs: the graph's tensors (frames first; ``batch`` is dynamic).
        example: inputs to trace on, in ``inputs``' order.
        what: words for error messages ("the top-down pose graph").
        has_half: its network can run in reduced precision (fp16 / bf16 artifacts);
            detectors stay fp32.
    """

    name: str
    module: nn.Module
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    example: tuple[np.ndarray, ...]
    what: str = "the pose graph"
    has_half: bool = True

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)

    @property
    def extra_input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs[1:])

    def half(self, precision: str = "fp16") -> nn.Module:
        """A copy whose network runs in ``precision`` ("fp16" or "bf16"; pre-processing and
        decoding stay fp32)."""
        return reduced_precision(self.module, precision)


@dataclass
class TaskManifest:
    """The manifest fields a task decides (the rest is common: ``dlc_export/manifest.py``)."""

    task: str
    decoder: dict[str, Any]
    individuals: list[str]
    unique_bodyparts: list[str] = field(default_factory=list)
    multi_animal: bool = False
    network_size: tuple[int, int] | None = None
    source: dict[str, Any] = field(default_factory=dict)


class ExportTask(ABC):
    """A kind of model, ready to export: built from an ``ExportSource`` and ``ExportOptions``
    by its module's ``make_task``."""

    graphs: dict[str, ExportGraph]
    manifest_fields: TaskManifest

    def prepare(self, ctx: ExportContext) -> None:
        """Runs in the staging folder before any format (CTD writes its nested bundle)."""

    def link(self, ctx: ExportContext, fmt: ArtifactFormat) -> None:
        """Runs after ``fmt`` wrote this task's artifacts (CTD lists the nested bundle's)."""

    @abstractmethod
    def check(self, ctx: ExportContext, fmt: ArtifactFormat, backends: dict[str, Backend],
              frame_sets: list[np.ndarray]) -> ParityReport:
        """The parity harness: the eager fp32 reference vs ``backends`` (task graph name ->
        the runtime backend running ``fmt``'s artifact of it) on every set of frames, compared
        as users get them (after the runtime's host steps)."""

    def calibration_inputs(self, ctx: ExportContext, frames: np.ndarray
                           ) -> dict[str, dict[str, np.ndarray]]:
        """INT8 calibration data for the graphs' further inputs: graph -> {input: array}."""
        return {}

    def engine_frame_size(self, ctx: ExportContext) -> tuple[int, int]:
        """The frame size TensorRT engines are built for."""
        size = ctx.options.frame_size or ctx.source.frames.shape[1:3]
        return int(size[0]), int(size[1])


def second_frames(frames: np.ndarray) -> np.ndarray:
    """Another batch and frame size cut from the parity frames: traced shapes must generalise."""
    b, h, w = frames.shape[:3]
    return np.ascontiguousarray(frames[:max(1, b - 1), :max(32, h * 3 // 4),
                                       :max(32, w * 3 // 4)])


def keypoint_report(ctx: ExportContext, fmt: ArtifactFormat, reference: list[np.ndarray],
                    candidate: list[np.ndarray], frame_sets: list[np.ndarray]) -> ParityReport:
    """The report of reference vs candidate keypoints ((..., 3) arrays, in the order the
    frames were run) under ``fmt``'s gate."""
    return parity_report(np.concatenate([r.reshape(-1, 3) for r in reference]),
                         np.concatenate([c.reshape(-1, 3) for c in candidate]),
                         frames=sum(len(f) for f in frame_sets),
                         frame_size=frame_sets[0].shape[1:3], source=ctx.source.frames_source,
                         backend=fmt.backend_label(ctx), gate=ctx.gate(fmt.precision))
