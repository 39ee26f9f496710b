"""Evaluation metrics: RMSE (pixels) and OKS-based mAP, computed as DeepLabCut 3 does.

- Predicted individuals are matched to ground-truth individuals per image (greedy, by OKS)
  before distances are taken; single-animal images have one of each.
- ``rmse``: mean Euclidean distance over labelled keypoints (DeepLabCut calls this RMSE);
  ``rmse_pcutoff``: the same over keypoints predicted with likelihood >= pcutoff.
- ``mAP`` / ``mAR``: COCO-style over OKS thresholds 0.50:0.05:0.95 with sigma 0.1 for every
  keypoint and the ground-truth keypoints' bounding box (plus margin) as the object area;
  reported in percent like DeepLabCut.
"""
from __future__ import annotations

import numpy as np

OKS_THRESHOLDS = np.linspace(0.5, 0.95, 10)


def oks(pred: np.ndarray, gt: np.ndarray, sigma: float = 0.1, margin: float = 0.0) -> float:
    """Object keypoint similarity of one predicted pose (K, 2+) to one GT pose (K, 3)."""
    vis = gt[:, 2] > 0
    if vis.sum() < 2:
        return float("nan")  # no area from fewer than two points
    true = gt[vis, :2]
    area = float(np.prod(np.ptp(true, axis=0) + np.spacing(1) + 2 * margin))
    if np.isclose(area, 0):
        return float("nan")
    p = pred[vis, :2].astype(np.float64)
    p[~np.isfinite(p)] = np.inf
    d2 = ((p - true) ** 2).sum(1)
    return float(np.mean(np.exp(-d2 / (2 * area * (2 * sigma) ** 2))))


def match(pred: np.ndarray, gt: np.ndarray, sigma: float = 0.1,
          margin: float = 0.0) -> list[tuple[int, int, float]]:
    """Greedy matching of predictions (P, K, 3) to GT (N, K, 3) by OKS, best-scored first.

    Returns [(pred index, gt index, oks)].
    """
    gt_ok = [g for g in range(len(gt)) if (gt[g, :, 2] > 0).any()]
    order = np.argsort(-np.nanmean(np.where(pred[:, :, 2] >= 0, pred[:, :, 2], np.nan), axis=1)
                       if len(pred) else [])
    taken, out = set(), []
    for p in order:
        best, best_g = -1.0, None
        for g in gt_ok:
            if g in taken:
                continue
            s = oks(pred[p], gt[g], sigma, margin)
            s = -0.5 if np.isnan(s) else s  # unscoreable GT still gets matched for RMSE
            if s > best:
                best, best_g = s, g
        if best_g is not None:
            taken.add(best_g)
            out.append((int(p), best_g, best))
    return out


def compute_metrics(gts: list[np.ndarray], preds: list[np.ndarray], pcutoff: float = 0.6,
                    sigma: float = 0.1, margin: float = 0.0) -> dict[str, float]:
    """Args:
        gts: per image (N, K, 3) ground truth (visibility <= 0: unlabeled).
        preds: per image (P, K, 3) predictions (x, y, likelihood).

    Returns: {"rmse", "rmse_pcutoff", "mAP", "mAR"} (NaN where undefined).
    """
    dists, dists_cut = [], []
    scored = [[] for _ in OKS_THRESHOLDS]  # per threshold: (score, is true positive)
    n_gt = 0
    for gt, pred in zip(gts, preds):
        gt, pred = np.asarray(gt, np.float64), np.asarray(pred, np.float64)
        pairs = match(pred, gt, sigma, margin)
        for p, g, _ in pairs:
            vis = gt[g, :, 2] > 0
            d = np.linalg.norm(pred[p, :, :2] - gt[g, :, :2], axis=1)
            dists.extend(d[vis])
            dists_cut.extend(d[vis & (pred[p, :, 2] >= pcutoff)])
        # COCO-style detection: every prediction is scored by its mean likelihood.
        scoreable = [g for g in range(len(gt)) if (gt[g, :, 2] > 0).sum() >= 2]
        n_gt += len(scoreable)
        oks_of = {p: s for p, g, s in pairs if g in scoreable}
        for p in range(len(pred)):
            if not np.isfinite(pred[p, :, :2]).all() or (pred[p, :, 2] < 0).all():
                continue
            score = float(np.mean(pred[p, :, 2]))
            s = oks_of.get(p, 0.0)
            for t, thr in enumerate(OKS_THRESHOLDS):
                scored[t].append((score, s >= thr))
    result = {"rmse": float(np.mean(dists)) if dists else float("nan"),
              "rmse_pcutoff": float(np.mean(dists_cut)) if dists_cut else float("nan")}
    if n_gt == 0:
        result.update(mAP=float("nan"), mAR=float("nan"))
        return result
    aps, ars = [], []
    for entries in scored:
        entries.sort(key=lambda e: -e[0])
        tp = np.cumsum([e[1] for e in entries]) if entries else np.zeros(0)
        fp = np.cumsum([not e[1] for e in entries]) if entries else np.zeros(0)
        recall = tp / n_gt if len(tp) else np.zeros(1)
        precision = tp / np.maximum(tp + fp, 1) if len(tp) else np.zeros(1)
        # 101-point interpolated AP, with precision made monotone as COCO does.
        precision = np.maximum.accumulate(precision[::-1])[::-1]
        ap = np.mean([precision[recall >= r].max() if (recall >= r).any() else 0.0
                      for r in np.linspace(0, 1, 101)])
        aps.append(ap)
        ars.append(recall[-1] if len(recall) else 0.0)
    result.update(mAP=100.0 * float(np.mean(aps)), mAR=100.0 * float(np.mean(ars)))
    return result
