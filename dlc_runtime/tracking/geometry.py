"""What the trackers compare: boxes, error ellipses and poses, vectorized over detections.

Same definitions as DeepLabCut's ``core/trackingutils.py``: boxes from keypoints with a slack
(``calc_bboxes_from_keypoints``), IoU, the ``sd``-sigma covariance ellipse of an animal's
keypoints and its similarity (centre distance relative to the largest axis, and orientation),
the directed Hausdorff distance between poses and the object keypoint similarity (OKS).
"""
from __future__ import annotations

import numpy as np


def boxes_from_keypoints(xy: np.ndarray, slack: float = 0.0) -> np.ndarray:
    """(N, K, 2) keypoints, NaN where missing -> (N, 4) x1, y1, x2, y2 enlarged by ``slack``.

    Boxes are at least one pixel wide and high, so that a single keypoint still has an area.
    """
    lo = np.nanmin(xy, axis=1) - slack
    hi = np.nanmax(xy, axis=1) + slack
    centre, half = (lo + hi) / 2, np.maximum((hi - lo) / 2, 0.5)
    return np.concatenate([centre - half, centre + half], axis=1)


def box_to_z(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) corners -> (N, 4) centre x, centre y, area, aspect ratio (SORT's measurement)."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return np.stack([boxes[:, 0] + w / 2, boxes[:, 1] + h / 2, w * h, w / h], axis=1)


def z_to_box(z: np.ndarray) -> np.ndarray:
    """Inverse of ``box_to_z``; NaN where the area or aspect ratio became non-positive."""
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.sqrt(z[:, 2] * z[:, 3])
        h = z[:, 2] / w
    return np.stack([z[:, 0] - w / 2, z[:, 1] - h / 2, z[:, 0] + w / 2, z[:, 1] + h / 2], axis=1)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 4) x (M, 4) boxes -> (N, M) intersection over union (0 where undefined)."""
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=-1)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = inter / (area_a[:, None] + area_b[None, :] - inter)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def fit_ellipses(xy: np.ndarray, sd: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Error ellipses of (N, K, 2) keypoints (NaN where missing).

    Returns:
        (N, 5) centre x, centre y, width (major axis), height, angle in [0, pi) of the major
        axis; and (N,) bool, false where fewer than three keypoints are visible (no ellipse).
    """
    finite = np.isfinite(xy).all(axis=-1)
    count = finite.sum(axis=1)
    ok = count >= 3
    w = finite.astype(float)
    n = np.maximum(count, 1)
    mean = np.einsum("nk,nkd->nd", w, np.nan_to_num(xy)) / n[:, None]
    d = np.where(finite[..., None], xy - mean[:, None], 0.0)
    # Sample covariance (ddof 1), as numpy.cov in DeepLabCut's fit.
    cov = np.einsum("nki,nkj->nij", d, d) / np.maximum(n - 1, 1)[:, None, None]
    evals, evecs = np.linalg.eigh(cov)  # ascending
    evals = np.clip(evals, 0, None)
    height, width = 2 * sd * np.sqrt(evals[:, 0]), 2 * sd * np.sqrt(evals[:, 1])
    angle = np.arctan2(evecs[:, 1, 1], evecs[:, 0, 1]) % np.pi
    return np.stack([mean[:, 0], mean[:, 1], width, height, angle], axis=1), ok


def ellipse_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 5) x (M, 5) ellipses -> (N, M) similarity in [0, 1] (DeepLabCut's
    ``Ellipse.calc_similarity_with``: 0.8 * closeness + 0.2 * closeness * |cos(angle diff)|,
    closeness = 1 - centre distance / largest axis of the pair, floored at 0)."""
    max_dist = np.maximum(np.abs(a[:, None, 2:4]).max(-1), np.abs(b[None, :, 2:4]).max(-1))
    max_dist = np.where(max_dist == 0, 1.0, max_dist)
    dist = np.hypot(a[:, None, 0] - b[None, :, 0], a[:, None, 1] - b[None, :, 1])
    close = 1 - np.minimum(dist / max_dist, 1)
    return 0.8 * close + 0.2 * close * np.abs(np.cos(a[:, None, 4] - b[None, :, 4]))


def directed_hausdorff(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(N, K, 2) x (M, K, 2) poses -> (N, M) directed Hausdorff distance from each x to each y,
    over the visible keypoints (0 for a pose with none, as DeepLabCut's)."""
    d2 = ((x[:, None, :, None, :] - y[None, :, None, :, :]) ** 2).sum(-1)  # (N, M, K, K)
    d2 = np.where(np.isnan(d2), np.inf, d2)
    nearest = d2.min(axis=-1)
    nearest = np.where(np.isinf(nearest), -np.inf, nearest)
    return np.sqrt(np.clip(nearest.max(axis=-1), 0, None))


def keypoint_similarity(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(N, K, 2) x (M, K, 2) poses -> (N, M) object keypoint similarity, DeepLabCut's
    ``object_keypoint_similarity``: mean of exp(-d^2 / (2 (0.05 s)^2)) over keypoints visible in
    both, s = square root of the area of y's bounding box."""
    dist = np.linalg.norm(x[:, None] - y[None], axis=-1)  # (N, M, K), NaN where missing
    span = np.nanmax(y, axis=1) - np.nanmin(y, axis=1)  # (M, 2)
    scale = np.sqrt(np.prod(span, axis=-1))[None, :, None]
    visible = ~np.isnan(dist)
    with np.errstate(invalid="ignore", divide="ignore"):
        oks = np.exp(-0.5 * (dist / (0.05 * scale)) ** 2)
        mean = np.where(visible, oks, 0.0).sum(-1) / visible.sum(-1)
    return np.nan_to_num(mean)
