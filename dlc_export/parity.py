"""Parity report: how far an exported graph's keypoints are from the eager PyTorch model's."""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from dlc_export.errors import ParityError
from dlc_io import atomic_write_text

log = logging.getLogger(__name__)

DEFAULT_TOLERANCE_PX = 0.5

#: DeepLabCut's default ``pcutoff`` (project config.yaml): the likelihood above which a keypoint
#: counts as detected (plots, filtering).
DEFAULT_PCUTOFF = 0.6

#: Largest keypoint error (px) a reduced-precision artifact (torch and ONNX fp16, torch bf16,
#: TensorRT fp16/int8) may show against the fp32 PyTorch model, on the keypoints that model
#: detects (likelihood >= the project's pcutoff), before the export fails. Half-precision heatmaps
#: and locref move detected keypoints by fractions of a pixel; below pcutoff a heatmap is nearly
#: flat and its two best cells can differ by less than fp16 resolution, so fp16 may pick another
#: cell, far away: reported, not gated (figures: benchmarks/results/export_cpu*.json). int8 moves
#: activations further. fp16 and int8 bounds stated from the heatmap stride (8 px), not yet
#: measured on a GPU.
#: bf16 keeps fp32's range but has 8 significant bits (fp16: 11): values near a heatmap peak are
#: 2^-8 apart, so neighbouring cells tie and swap on *detected* keypoints too, moving them by up
#: to one cell (the stride) less what locref gives back, and locref offsets move ~8x more than in
#: fp16. Measured on the CPU (torch 2.13, network-only bf16 as ``dlc_export.half`` builds it): the
#: demo's trained resnet_tiny (stride 8) over its 300-frame video, 1424 detected keypoints: max
#: 4.17 px, 8 keypoints above 2 px, none above 8 px (fp16 on the same: max 3.21 px); the tiny
#: peak-trained models of tests/test_export_bf16.py (bottom-up and top-down, 4 seeds each): at
#: most 0.006 px. Gate: one cell, 8 px, 1.9x the largest measured: a neighbour swap passes, a
#: jump of two cells or a broken decoding fails. Not measured on a GPU. PAF assembly magnifies
#: bf16: on a 40-epoch 2-animal PAF resnet_tiny's 120 labeled frames (at two sizes) it picked
#: other peaks for 11 of 1866 detected keypoints (up to 44.5 px; fp16: none, max 1.17 px), so
#: that model's bf16 export fails the gate, as it should: its users would see those keypoints
#: move.
REDUCED_PRECISION_TOLERANCE_PX = {"fp16": 4.0, "bf16": 8.0, "int8": 8.0}


@dataclass(frozen=True)
class ParityGate:
    """What an artifact must meet: ``tolerance_px`` on every keypoint, or only on those whose
    reference likelihood is at least ``min_likelihood`` (reduced precision)."""

    tolerance_px: float = DEFAULT_TOLERANCE_PX
    min_likelihood: float | None = None

    @classmethod
    def for_precision(cls, precision: str, tolerance_px: float = DEFAULT_TOLERANCE_PX,
                      pcutoff: float = DEFAULT_PCUTOFF) -> ParityGate:
        """fp32: the export's tolerance on every keypoint. fp16/bf16/int8: the export's
        tolerance widened to :data:`REDUCED_PRECISION_TOLERANCE_PX`, on the detected
        keypoints."""
        if precision not in REDUCED_PRECISION_TOLERANCE_PX:
            return cls(float(tolerance_px))
        return cls(max(float(tolerance_px), REDUCED_PRECISION_TOLERANCE_PX[precision]),
                   float(pcutoff))


def project_pcutoff(project: dict | None) -> float:
    """The project config.yaml's ``pcutoff`` (DeepLabCut's default 0.6 when absent or not a
    likelihood)."""
    try:
        value = float((project or {}).get("pcutoff", DEFAULT_PCUTOFF))
    except (TypeError, ValueError):
        return DEFAULT_PCUTOFF
    return value if 0.0 <= value <= 1.0 else DEFAULT_PCUTOFF


def enforce(report: ParityReport, allow_failure: bool, consequence: str,
            what: str = "") -> ParityReport:
    """Raises :class:`ParityError` ("[<what>: ]<summary>; <consequence>") for a failed report,
    unless ``allow_failure`` (``--allow-parity-failure``): then the artifact is kept, its
    report says ``passed: false``, and a warning is logged."""
    if not report.passed:
        message = f"{what + ': ' if what else ''}{report.summary()}"
        if not allow_failure:
            raise ParityError(f"{message}; {consequence}")
        log.warning("%s; kept (allow_parity_failure)", message)
    return report


@dataclass
class ParityReport:
    frames: int
    frame_size: tuple[int, int]  # (height, width)
    source: str
    backend: str
    median_px: float
    max_px: float
    p99_px: float
    max_likelihood_abs: float
    tolerance_px: float
    passed: bool
    #: None: every keypoint is gated. Else only keypoints whose reference likelihood reaches it,
    #: and ``gated_max_px`` is their largest error (``max_px`` stays the largest of all).
    min_likelihood: float | None = None
    gated_max_px: float | None = None
    #: what else a task checked or wants recorded (the detector's matched IoU, the reference
    #: used); written at the top level of the JSON.
    details: dict = field(default_factory=dict)
    #: a clause the summary adds (e.g. "detector matched IoU 0.9987").
    note: str = ""

    def to_json(self, path: str | Path) -> Path:
        data = asdict(self)
        data.update(data.pop("details"))
        path = Path(path)
        atomic_write_text(path, json.dumps(data, indent=2) + "\n")
        return path

    def summary(self) -> str:
        verdict = "ok" if self.passed else "FAILED"
        gated = "" if self.min_likelihood is None else (
            f"; keypoints with likelihood >= {self.min_likelihood:g}: max "
            f"{self.gated_max_px:.4f} px")
        return (f"parity vs PyTorch ({self.backend}, {self.frames} frames): median "
                f"{self.median_px:.4f} px, max {self.max_px:.4f} px{gated} (tolerance "
                f"{self.tolerance_px} px), likelihood max diff {self.max_likelihood_abs:.2e}"
                f"{'; ' + self.note if self.note else ''}: {verdict}")


def keypoint_errors(reference: np.ndarray, candidate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-keypoint Euclidean pixel error and absolute likelihood error of (..., 3) arrays.

    A keypoint missing (NaN) in both counts as equal; missing in one only is an infinite error.
    """
    if reference.shape != candidate.shape:
        raise ParityError(f"output shapes differ: PyTorch {reference.shape} vs export "
                          f"{candidate.shape}")
    ref_missing = np.isnan(reference[..., :2]).any(-1)
    cand_missing = np.isnan(candidate[..., :2]).any(-1)
    with np.errstate(invalid="ignore"):
        px = np.linalg.norm(reference[..., :2] - candidate[..., :2], axis=-1)
    px = np.where(ref_missing & cand_missing, 0.0, px)
    px = np.where(ref_missing ^ cand_missing, np.inf, px)
    lik = np.abs(np.nan_to_num(reference[..., 2]) - np.nan_to_num(candidate[..., 2]))
    return px, lik


def parity_report(reference: np.ndarray, candidate: np.ndarray, *, frames: int,
                  frame_size: tuple[int, int], source: str, backend: str,
                  gate: ParityGate | float = DEFAULT_TOLERANCE_PX) -> ParityReport:
    """The report of (..., 3) reference vs candidate keypoints under ``gate`` (a ParityGate,
    or a tolerance in px applied to every keypoint). A gate on detected keypoints gates every
    keypoint when the reference detects none on these frames."""
    gate = gate if isinstance(gate, ParityGate) else ParityGate(float(gate))
    px, lik = keypoint_errors(reference, candidate)
    gated_max = None
    worst = float(px.max())
    min_likelihood = gate.min_likelihood
    detected = None if min_likelihood is None else \
        np.nan_to_num(reference[..., 2], nan=-1.0) >= min_likelihood
    if detected is not None and detected.any():
        gated_max = worst = float(px[detected].max())
    else:
        # Nothing detected on these frames: no evidence to be lenient on, every keypoint gated.
        min_likelihood = None
    return ParityReport(
        frames=int(frames), frame_size=(int(frame_size[0]), int(frame_size[1])),
        source=source, backend=backend, median_px=float(np.median(px)),
        max_px=float(px.max()), p99_px=float(np.percentile(px, 99)),
        max_likelihood_abs=float(lik.max()), tolerance_px=float(gate.tolerance_px),
        passed=bool(worst <= gate.tolerance_px), min_likelihood=min_likelihood,
        gated_max_px=gated_max)


Outputs = dict[str, np.ndarray]


def _as_outputs(value, names: tuple[str, ...]) -> Outputs:
    """A module's or backend's result (tensor, tuple of them, array, dict) -> {name: array}."""
    if isinstance(value, dict):
        return {k: np.asarray(v.numpy() if isinstance(v, torch.Tensor) else v)
                for k, v in value.items()}
    if not isinstance(value, (tuple, list)):
        value = (value,)
    return {name: np.asarray(v.numpy() if isinstance(v, torch.Tensor) else v)
            for name, v in zip(names, value)}


@torch.no_grad()
def run_parity(reference: torch.nn.Module, candidate: Callable[[np.ndarray], np.ndarray | Outputs],
               frames: np.ndarray | list[np.ndarray], *, source: str, backend: str,
               tolerance_px: float | ParityGate = DEFAULT_TOLERANCE_PX, batch_size: int = 4,
               output_names: tuple[str, ...] = ("keypoints",),
               decode: Callable[[Outputs], np.ndarray] | None = None) -> ParityReport:
    """Runs both on the same uint8 NHWC frames and reports the keypoint differences.

    Args:
        reference: the eager wrapper (frames -> keypoints, or a tuple of ``output_names``).
        candidate: the exported graph as a callable (e.g. an onnxruntime backend's run),
            returning keypoints or a dict of named outputs.
        frames: (n, H, W, 3) uint8 RGB, or a list of such sets (e.g. another batch and frame
            size than the traced one), reported together; ``frame_size`` is the first set's.
        tolerance_px: the gate: px on every keypoint, or a :class:`ParityGate`.
        output_names: names of the reference's outputs, in order.
        decode: named outputs -> keypoints (B, M, 3), the host steps (e.g. PAF assembly) run
            on both sides; default: the first output as it is. Comparing decoded keypoints
            checks what users get, not intermediate tensors.
    """
    decode = decode or (lambda outputs: outputs[output_names[0]])
    sets = frames if isinstance(frames, list) else [frames]
    ref_out, cand_out = [], []
    for frame_set in sets:
        for start in range(0, len(frame_set), batch_size):
            batch = frame_set[start:start + batch_size]
            ref = reference(torch.from_numpy(np.ascontiguousarray(batch)))
            # (B, ..., 3) -> (B*..., 3): sets of other shapes concatenate.
            ref_out.append(decode(_as_outputs(ref, output_names)).reshape(-1, 3))
            cand_out.append(decode(_as_outputs(candidate(batch), output_names)).reshape(-1, 3))
    return parity_report(np.concatenate(ref_out), np.concatenate(cand_out),
                         frames=sum(len(f) for f in sets), frame_size=sets[0].shape[1:3],
                         source=source, backend=backend, gate=tolerance_px)
