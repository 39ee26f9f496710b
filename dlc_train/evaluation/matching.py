"""Object keypoint similarity and the ways DeepLabCut 3 pairs predictions with ground truth.

Poses are float arrays (K, 3): x, y and a third value (visibility for ground truth, score for
predictions). NaN marks a missing keypoint; :func:`dlc_train.evaluation.metrics.prepare` turns
unlabeled ground truth and padded predictions into NaN before anything here runs.

- :func:`oks`: DeepLabCut's ``calc_object_keypoint_similarity`` (COCO's OKS with the ground
  truth keypoints' bounding box, plus a margin, as the object's area).
- :func:`match_greedy_oks`: DeepLabCut's ``match_greedy_oks``. Predictions, sorted by score,
  each take their best-OKS ground truth; when that one is already taken the prediction stays
  unmatched (it does *not* fall back to its second best, unlike pycocotools).
- :func:`closest_neighbors`: DeepLabCut's ``find_closest_neighbors`` (greedy nearest-neighbour
  assignment over each query's three nearest references), used for identity accuracy.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree


def oks(pred: np.ndarray, gt: np.ndarray, sigma: float | np.ndarray = 0.1,
        margin: float = 0.0) -> float:
    """Object keypoint similarity of one predicted pose to one ground-truth pose.

    Args:
        pred: (K, 2+) predicted x, y (NaN: missing, scores as infinitely far).
        gt: (K, 2+) ground truth; a keypoint counts when its x and y are finite and, when a
            third column is given, its visibility is > 0.
        sigma: one value, or one per keypoint (K,).
        margin: pixels added on every side of the ground truth's bounding box.

    Returns:
        The OKS, or NaN when fewer than two ground-truth keypoints (no area) are visible.
    """
    gt = np.asarray(gt, dtype=np.float64)
    visible = np.isfinite(gt[:, :2]).all(axis=1)
    if gt.shape[1] > 2:
        visible &= gt[:, 2] > 0
    if visible.sum() < 2:
        return float("nan")
    true = gt[visible, :2]
    area = float(np.prod(np.ptp(true, axis=0) + np.spacing(1) + 2 * margin))
    if np.isclose(area, 0):
        return float("nan")
    denominator = 2 * area * (2 * np.asarray(sigma, dtype=np.float64)) ** 2
    if denominator.ndim:
        denominator = denominator[visible]
    p = np.asarray(pred, dtype=np.float64)[visible, :2].copy()
    p[np.isnan(p)] = np.inf
    d2 = ((p - true) ** 2).sum(axis=1)
    return float(np.mean(np.exp(-d2 / denominator)))


def oks_matrix(gt: np.ndarray, pred: np.ndarray, sigma: float | np.ndarray = 0.1,
               margin: float = 0.0) -> np.ndarray:
    """(P, G) OKS of every prediction (P, K, 2+) with every ground truth (G, K, 2+)."""
    out = np.zeros((len(pred), len(gt)))
    for p, pose in enumerate(pred):
        for g, truth in enumerate(gt):
            out[p, g] = oks(pose[:, :2], truth[:, :2], sigma, margin)
    return out


@dataclass
class Match:
    """A prediction and the ground truth it was paired with (None: unmatched).

    Attributes:
        pose: (K, 3) the prediction.
        score: its score, the mean of its keypoint scores (NaN ignored).
        gt: (K, 3) the matched ground truth, or None.
        oks: the OKS of the pair (0 when unmatched, NaN when not computed).
    """

    pose: np.ndarray
    score: float
    gt: np.ndarray | None = None
    oks: float = 0.0

    @classmethod
    def of(cls, pose: np.ndarray) -> "Match":
        scores = pose[:, 2]
        if np.isnan(scores).all():
            raise ValueError("a prediction without any scored keypoint cannot be matched")
        return cls(pose=pose, score=float(np.nanmean(scores)))

    def pixel_errors(self) -> np.ndarray:
        """(K,) distance of each keypoint to its ground truth (NaN where either is missing)."""
        if self.gt is None:
            return np.full(len(self.pose), np.nan)
        return np.linalg.norm(self.pose[:, :2] - self.gt[:, :2], axis=1)


def match_greedy_oks(gt: np.ndarray, pred: np.ndarray, oks_of: np.ndarray,
                     threshold: float = 0.0) -> list[Match]:
    """DeepLabCut's greedy matching of one image; one Match per prediction, in order.

    Args:
        gt: (G, K, 3) ground truth.
        pred: (P, K, 3) predictions, sorted by score, best first.
        oks_of: (P, G) their OKS (:func:`oks_matrix`).
        threshold: smallest OKS of a pair.
    """
    matches = [Match.of(pose) for pose in pred]
    taken: set[int] = set()
    for p, row in enumerate(oks_of):
        if np.isnan(row).all():
            continue
        best = int(np.nanargmax(row))
        if best in taken or row[best] < threshold:
            continue
        taken.add(best)
        matches[p].gt, matches[p].oks = gt[best], float(row[best])
    return matches


def closest_neighbors(query: np.ndarray, ref: np.ndarray, k: int = 3) -> np.ndarray:
    """For each query point (Q, 2), the index of a distinct reference point (R, 2), or -1.

    Queries are served closest first; each takes the nearest of its ``k`` nearest references
    that no earlier query took, and none (-1) when all ``k`` are taken.
    """
    neighbors = np.full(len(query), -1, dtype=int)
    if len(query) == 0 or len(ref) == 0:
        return neighbors
    tree = cKDTree(ref)
    dist, inds = tree.query(query, k=k)
    dist, inds = dist.reshape(len(query), -1), inds.reshape(len(query), -1)
    picked = {tree.n}  # scipy's index for "no k-th neighbour"
    for q in np.argsort(dist[:, 0]):  # same sort as DeepLabCut (ties: its order)
        for j in inds[q]:
            if j not in picked:
                picked.add(j)
                neighbors[q] = j
                break
        if len(picked) == len(ref) + 1:
            break
    return neighbors
