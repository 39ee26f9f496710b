"""How far one run's keypoints are from a reference run's (reduced precision vs fp32).

Measured as users get keypoints, after the pipeline's host steps, and only on the keypoints the
reference detects (likelihood >= ``min_likelihood``, the project's pcutoff): a keypoint the
reference does not detect sits on a nearly flat heatmap, where any precision may pick another
cell. The export's OpenVINO gate (median and p95) and ``dlc benchmark``'s "vs fp32" columns are
both this measure.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlc_runtime.backends import make_backend
from dlc_runtime.bundle import Bundle
from dlc_runtime.pipelines import make_pipeline
from dlc_runtime.pipelines.base import pipeline_class
from dlc_runtime.video import VideoIterator

#: DeepLabCut's default pcutoff (a project's config.yaml may set another).
DEFAULT_PCUTOFF = 0.6


@dataclass
class Agreement:
    """Keypoint distances (px) on ``keypoints`` compared keypoints of ``frames`` frames.

    ``min_likelihood`` is None when the reference detected nothing and every keypoint was
    compared. A keypoint missing in one run only counts as an infinite distance.
    """

    frames: int
    keypoints: int
    min_likelihood: float | None
    median_px: float
    p95_px: float
    max_px: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        which = "all keypoints" if self.min_likelihood is None else \
            f"keypoints with likelihood >= {self.min_likelihood:g}"
        return (f"{which} ({self.keypoints} in {self.frames} frames): median "
                f"{self.median_px:.4f} px, p95 {self.p95_px:.4f} px, max {self.max_px:.4f} px")


def keypoint_agreement(reference: np.ndarray, candidate: np.ndarray,
                       min_likelihood: float | None = DEFAULT_PCUTOFF) -> Agreement:
    """Distances between two (N, ..., 3) keypoint arrays (x, y, likelihood) of N frames."""
    if reference.shape != candidate.shape:
        raise ValueError(f"keypoint shapes differ: {reference.shape} vs {candidate.shape}")
    ref, cand = reference.reshape(-1, 3), candidate.reshape(-1, 3)
    ref_missing = np.isnan(ref[:, :2]).any(-1)
    cand_missing = np.isnan(cand[:, :2]).any(-1)
    with np.errstate(invalid="ignore"):
        px = np.linalg.norm(ref[:, :2] - cand[:, :2], axis=-1)
    px = np.where(ref_missing & cand_missing, 0.0, px)
    px = np.where(ref_missing ^ cand_missing, np.inf, px)
    chosen = np.ones(len(px), bool)
    if min_likelihood is not None:
        chosen = np.nan_to_num(ref[:, 2], nan=-1.0) >= min_likelihood
        if not chosen.any():  # nothing detected: compare everything rather than nothing
            chosen, min_likelihood = np.ones(len(px), bool), None
    px = px[chosen]
    if not len(px):
        raise ValueError("no keypoints to compare")
    with np.errstate(invalid="ignore"):  # interpolating next to an infinite distance
        median, p95 = (float(np.nan_to_num(v, nan=np.inf))
                       for v in (np.median(px), np.percentile(px, 95)))
    return Agreement(frames=int(len(reference)), keypoints=int(len(px)),
                     min_likelihood=min_likelihood, median_px=median, p95_px=p95,
                     max_px=float(px.max()))


def pipeline_keypoints(bundle: Bundle, frames: np.ndarray, backend: str = "onnxruntime",
                       precision: str | None = None, batch_size: int = 8, device: str = "cpu",
                       **options: Any) -> np.ndarray:
    """(N, M, K + U, 3) keypoints (unique bodyparts appended) of ``frames`` through the
    bundle's pipeline on ``backend`` at ``precision`` (None: the backend's default)."""
    if precision is not None:
        options["precision"] = precision
    graph = pipeline_class(bundle).backend_graph
    if graph != "pose":
        options["graph"] = graph
    engine = make_backend(bundle, backend, device, **options)
    pipeline = make_pipeline(bundle, engine)
    out = []
    try:
        for start in range(0, len(frames), batch_size):
            result = pipeline(frames[start:start + batch_size])
            n = len(result.keypoints)
            parts = [result.keypoints.reshape(n, -1, 3)]
            if result.unique_keypoints is not None:
                parts.append(result.unique_keypoints.reshape(n, -1, 3))
            out.append(np.concatenate(parts, axis=1))
    finally:
        pipeline.close()
        engine.close()
    return np.concatenate(out)


class VersusFp32:
    """Keypoints of any backend and precision vs the fp32 graph on onnxruntime (CPU), on the
    first ``n_frames`` frames of ``video`` (``dlc benchmark``'s "vs fp32" columns).

    Args:
        backend_options: further options of the compared backends (not of the reference).
    """

    def __init__(self, bundle: Bundle, video: str | Path, n_frames: int,
                 backend_options: dict[str, Any] | None = None, device: str = "cpu",
                 min_likelihood: float | None = DEFAULT_PCUTOFF) -> None:
        with VideoIterator(Path(video), batch_size=n_frames) as batches:
            self.frames = next(iter(batches))[1]
        self.bundle, self.device, self.min_likelihood = bundle, device, min_likelihood
        self.options = dict(backend_options or {})
        self.reference = pipeline_keypoints(bundle, self.frames, "onnxruntime")

    def measure(self, backend: str, precision: str | None) -> dict[str, Any]:
        """:meth:`Agreement.to_dict` of ``backend`` at ``precision``."""
        got = pipeline_keypoints(self.bundle, self.frames, backend, precision,
                                 device=self.device, **self.options)
        return keypoint_agreement(self.reference, got, self.min_likelihood).to_dict()


__all__ = ["Agreement", "DEFAULT_PCUTOFF", "VersusFp32", "keypoint_agreement",
           "pipeline_keypoints"]
