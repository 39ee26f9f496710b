"""Metrics of the training runner's evaluation: DeepLabCut 3's, from :mod:`dlc_train.evaluation`.

One implementation serves training and ``evaluate_network`` (see that package for the
definitions). Images with one ground-truth animal and one prediction each are scored as a
single-animal project (no matching); otherwise predictions are matched to animals by OKS.
"""
from __future__ import annotations

import numpy as np

from dlc_train.evaluation.matching import oks
from dlc_train.evaluation.metrics import OKS_THRESHOLDS, canonical_poses
from dlc_train.evaluation.metrics import compute_metrics as _compute_metrics

__all__ = ["OKS_THRESHOLDS", "compute_metrics", "oks"]


def compute_metrics(gts: list[np.ndarray], preds: list[np.ndarray], pcutoff: float = 0.6,
                    sigma: float = 0.1, margin: float = 0.0) -> dict[str, float]:
    """Args:
        gts: per image (N, K, 3) ground truth (visibility <= 0: unlabeled).
        preds: per image (P, K, 3) predictions (x, y, likelihood; NaN: missing).

    Returns: {"rmse", "rmse_pcutoff", "mAP", "mAR"} (NaN where undefined).
    """
    ground_truth = {str(i): np.asarray(g) for i, g in enumerate(gts)}
    predictions = {str(i): canonical_poses(p) for i, p in enumerate(preds)}
    single = all(len(g) == 1 for g in ground_truth.values()) and \
        all(len(p) == 1 for p in predictions.values())
    result = _compute_metrics(ground_truth, predictions, single_animal=single, pcutoff=pcutoff,
                              oks_sigma=sigma, oks_bbox_margin=margin)
    return {key: float(result[key]) for key in ("rmse", "rmse_pcutoff", "mAP", "mAR")}
