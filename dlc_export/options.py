"""``ExportOptions``: everything an export can be asked, in one object.

``export_bundle(config, snapshot, output, **fields)`` builds one from keyword arguments; every
task and format reads what it needs from it, so a new option is one field here.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlc_export.errors import ExportError
from dlc_export.onnx_export import DEFAULT_OPSET
from dlc_export.parity import DEFAULT_TOLERANCE_PX
from dlc_export.tensorrt_build import PRECISIONS as TENSORRT_PRECISIONS
from dlc_export.tensorrt_build import TensorRTBuildError, import_tensorrt
from dlc_runtime.backends.openvino_backend import PRECISIONS as OPENVINO_PRECISIONS
from dlc_runtime.backends.torch_backend import PRECISIONS as TORCH_PRECISIONS
from dlc_runtime.bundle import BatchRange

#: Extra ONNX variants (the fp32 graphs are always written).
ONNX_PRECISIONS = ("fp16",)
#: Precisions only torch artifacts are written in (ONNX and TensorRT reduce to fp16).
TORCH_ONLY_PRECISIONS = ("bf16",)
TORCH_METHODS = ("torchscript", "export")

#: Detector score below which a box is not handed to the pose graph (recorded in the manifest).
DEFAULT_BOX_SCORE_THRESHOLD = 0.1
#: Detections the detector graph returns per frame (the runtime keeps the top M).
DEFAULT_MAX_DETECTIONS = 32


@dataclass(frozen=True)
class ExportOptions:
    """What to export and how to check it.

    Attributes:
        frames: parity frames: a video, an image folder or an (n, H, W, 3) uint8 array; default
            the project's labeled frames.
        tolerance_px: largest keypoint difference (px) the fp32 parity checks accept.
        allow_parity_failure: keep an artifact that fails its gate (its report says so).
        opset, simplify: the ONNX opset; onnxslim on the written graphs.
        max_batch, batch: the manifest's batch range (:meth:`BatchRange.for_export`).
        onnx_precisions: extra ONNX variants ("fp16": the network in half, fp32 inputs and
            outputs), beside the fp32 graphs every bundle has.
        torch_precisions: torch artifacts ("fp32", "fp16", "bf16"); ``torch_method``
            "torchscript" or "export" (``torch.export``, one-input graphs only).
        device: where torch artifacts are traced and checked ("cuda" for fp16/bf16 on a GPU).
        tensorrt_precision: also build TensorRT engines ("fp32", "fp16", "int8") for this GPU;
            ``frame_size`` (height, width) fixes their profile (default: the parity frames');
            int8 calibrates on ``calibration_videos``.
        openvino_precisions: OpenVINO variants for CPUs ("fp32", "bf16", "int8";
            ``dlc_export/formats/openvino.py``); int8 calibrates on ``calibration_videos``,
            bf16 needs a CPU with bf16 units.
        input_size: (height, width) the network runs at (bottom-up: letterbox in the graph).
            Top-down networks already run at fixed sizes: there it is the engines' frame size.
        overwrite: replace an earlier bundle at the output folder.
        detector_snapshot, max_individuals, box_score_threshold, max_detections,
            random_detector, random_pose: top-down only (random weights: tests, dry runs).
        conditions_config, conditions_snapshot: conditional top-down only: the bottom-up
            model giving the conditions (default: the shuffle ``inference.conditions`` names).
    """

    frames: Path | np.ndarray | None = None
    tolerance_px: float = DEFAULT_TOLERANCE_PX
    allow_parity_failure: bool = False
    opset: int = DEFAULT_OPSET
    simplify: bool = True
    max_batch: int = 64
    batch: int | None = None
    onnx_precisions: tuple[str, ...] = ()
    torch_precisions: tuple[str, ...] = ()
    torch_method: str = "torchscript"
    device: str = "cpu"
    tensorrt_precision: str | None = None
    frame_size: tuple[int, int] | None = None
    calibration_videos: tuple[Path, ...] = ()
    openvino_precisions: tuple[str, ...] = ()
    input_size: tuple[int, int] | None = None
    overwrite: bool = False
    detector_snapshot: Path | None = None
    max_individuals: int | None = None
    box_score_threshold: float = DEFAULT_BOX_SCORE_THRESHOLD
    max_detections: int = DEFAULT_MAX_DETECTIONS
    random_detector: bool = False
    random_pose: bool = False
    conditions_config: Path | None = None
    conditions_snapshot: Path | None = None

    @classmethod
    def build(cls, options: ExportOptions | None = None, **changes: Any) -> ExportOptions:
        """``options`` (default: all defaults) with ``changes``; an unknown name is an
        ExportError naming the known ones."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ExportError(f"unknown export option {unknown[0]!r}; known: "
                              f"{', '.join(sorted(names))}")
        tuples = ("onnx_precisions", "torch_precisions", "calibration_videos",
                  "openvino_precisions")
        changes = {k: tuple(v) if k in tuples else v for k, v in changes.items()}
        return dataclasses.replace(options or cls(), **changes)

    @property
    def batch_range(self) -> BatchRange:
        return BatchRange.for_export(self.batch, self.max_batch)

    def for_nested(self, **changes: Any) -> ExportOptions:
        """These options for a bundle written inside another one (CTD's conditions bundle):
        the same formats and checks, a new output (the staging folder is new, never ours)."""
        return dataclasses.replace(self, overwrite=False, **changes)

    def check(self) -> None:
        """Refuses, before any model is built, values no export can use."""
        if self.batch is not None and self.batch < 1:
            raise ExportError(f"batch must be at least 1, got {self.batch}")
        if self.max_batch < 1:
            raise ExportError(f"max_batch must be at least 1, got {self.max_batch}")
        _torch_only("ONNX graphs", self.onnx_precisions)
        _torch_only("TensorRT engines", (self.tensorrt_precision,))
        _known("ONNX precision", self.onnx_precisions, ONNX_PRECISIONS)
        _known("torch precision", self.torch_precisions, TORCH_PRECISIONS)
        _known("torch method", (self.torch_method,), TORCH_METHODS)
        _known("OpenVINO precision", self.openvino_precisions, OPENVINO_PRECISIONS)
        if "int8" in self.openvino_precisions and not self.calibration_videos:
            raise ExportError("OpenVINO int8 calibrates on frames of your videos: pass "
                              "--calibration-video VIDEO (calibration_videos=...)")
        for name in ("input_size", "frame_size"):
            size = getattr(self, name)
            if size is not None and (len(size) != 2 or min(int(v) for v in size) < 1):
                raise ExportError(f"{name} must be positive (height, width), got {size}")
        if (self.conditions_config is None) != (self.conditions_snapshot is None):
            raise ExportError("pass conditions_config and conditions_snapshot together (the "
                              "bottom-up model's pytorch_config.yaml and snapshot)")
        if self.tensorrt_precision is not None and \
                self.tensorrt_precision not in TENSORRT_PRECISIONS:
            raise TensorRTBuildError(f"precision {self.tensorrt_precision!r}: use one of "
                                     f"{', '.join(TENSORRT_PRECISIONS)}")

    def check_tools(self) -> None:
        """Refuses, before any graph is written, a TensorRT build where TensorRT is missing
        and OpenVINO variants this machine cannot make or check."""
        if self.tensorrt_precision is not None:
            import_tensorrt()
        if self.openvino_precisions:
            from dlc_export.formats.openvino_int8 import check_tools

            check_tools(self.openvino_precisions)


def _torch_only(what: str, given: tuple[str | None, ...]) -> None:
    """Refuses a torch-only precision (bf16) asked of another format."""
    for precision in given:
        if precision in TORCH_ONLY_PRECISIONS:
            raise ExportError(f"{what} have no {precision} variant: {precision} is for torch "
                              f"artifacts only (--format torch --precision {precision}); ONNX "
                              f"and TensorRT reduce precision with fp16")


def _known(what: str, given: tuple[str, ...], known: tuple[str, ...]) -> None:
    bad = [value for value in given if value not in known]
    if bad:
        raise ExportError(f"unknown {what} {bad[0]!r}; use {', '.join(known)}")
