"""Parity report: how far an exported graph's keypoints are from the eager PyTorch model's."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

DEFAULT_TOLERANCE_PX = 0.5


class ParityError(RuntimeError):
    """The export's keypoints are further from PyTorch's than the tolerance allows."""


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

    def to_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
        return path

    def summary(self) -> str:
        verdict = "ok" if self.passed else "FAILED"
        return (f"parity vs PyTorch ({self.backend}, {self.frames} frames): median "
                f"{self.median_px:.4f} px, max {self.max_px:.4f} px (tolerance "
                f"{self.tolerance_px} px), likelihood max diff {self.max_likelihood_abs:.2e}: "
                f"{verdict}")


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
               frames: np.ndarray, *, source: str, backend: str,
               tolerance_px: float = DEFAULT_TOLERANCE_PX, batch_size: int = 4,
               output_names: tuple[str, ...] = ("keypoints",),
               decode: Callable[[Outputs], np.ndarray] | None = None) -> ParityReport:
    """Runs both on the same uint8 NHWC frames and reports the keypoint differences.

    Args:
        reference: the eager wrapper (frames -> keypoints, or a tuple of ``output_names``).
        candidate: the exported graph as a callable (e.g. an onnxruntime backend's run),
            returning keypoints or a dict of named outputs.
        frames: (n, H, W, 3) uint8 RGB.
        output_names: names of the reference's outputs, in order.
        decode: named outputs -> keypoints (B, M, 3), the host steps (e.g. PAF assembly) run
            on both sides; default: the first output as it is. Comparing decoded keypoints
            checks what users get, not intermediate tensors.
    """
    decode = decode or (lambda outputs: outputs[output_names[0]])
    ref_out, cand_out = [], []
    for start in range(0, len(frames), batch_size):
        batch = frames[start:start + batch_size]
        ref = reference(torch.from_numpy(np.ascontiguousarray(batch)))
        ref_out.append(decode(_as_outputs(ref, output_names)))
        cand_out.append(decode(_as_outputs(candidate(batch), output_names)))
    px, lik = keypoint_errors(np.concatenate(ref_out), np.concatenate(cand_out))
    max_px = float(px.max())
    return ParityReport(
        frames=int(len(frames)), frame_size=(int(frames.shape[1]), int(frames.shape[2])),
        source=source, backend=backend, median_px=float(np.median(px)), max_px=max_px,
        p99_px=float(np.percentile(px, 99)), max_likelihood_abs=float(lik.max()),
        tolerance_px=float(tolerance_px), passed=bool(max_px <= tolerance_px))
