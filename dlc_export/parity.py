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
    """Per-keypoint Euclidean pixel error and absolute likelihood error of (..., 3) arrays."""
    if reference.shape != candidate.shape:
        raise ParityError(f"output shapes differ: PyTorch {reference.shape} vs export "
                          f"{candidate.shape}")
    px = np.linalg.norm(reference[..., :2] - candidate[..., :2], axis=-1)
    return px, np.abs(reference[..., 2] - candidate[..., 2])


@torch.no_grad()
def run_parity(reference: torch.nn.Module, candidate: Callable[[np.ndarray], np.ndarray],
               frames: np.ndarray, *, source: str, backend: str,
               tolerance_px: float = DEFAULT_TOLERANCE_PX, batch_size: int = 4) -> ParityReport:
    """Runs both on the same uint8 NHWC frames and reports the keypoint differences.

    Args:
        reference: the eager wrapper (frames -> keypoints).
        candidate: the exported graph as a callable (e.g. an onnxruntime backend's run).
        frames: (n, H, W, 3) uint8 RGB.
    """
    ref_out, cand_out = [], []
    for start in range(0, len(frames), batch_size):
        batch = frames[start:start + batch_size]
        ref_out.append(reference(torch.from_numpy(np.ascontiguousarray(batch))).numpy())
        cand_out.append(np.asarray(candidate(batch)))
    px, lik = keypoint_errors(np.concatenate(ref_out), np.concatenate(cand_out))
    max_px = float(px.max())
    return ParityReport(
        frames=int(len(frames)), frame_size=(int(frames.shape[1]), int(frames.shape[2])),
        source=source, backend=backend, median_px=float(np.median(px)), max_px=max_px,
        p99_px=float(np.percentile(px, 99)), max_likelihood_abs=float(lik.max()),
        tolerance_px=float(tolerance_px), passed=bool(max_px <= tolerance_px))
