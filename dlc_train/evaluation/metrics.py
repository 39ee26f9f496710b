"""Pose metrics computed as DeepLabCut 3 computes them (``deeplabcut.core.metrics``).

Inputs are dicts image -> array: ground truth (individuals, K, 3) with x, y, visibility (> 0:
labeled) and predictions (animals, K, 3+) with x, y, score. The image keys of both must agree.

- ``rmse``: DeepLabCut calls it RMSE but it is the *mean* Euclidean distance, over every
  labeled keypoint that has a matched prediction; ``rmse_pcutoff``: the same over keypoints
  predicted with score >= pcutoff. Single-animal: the one prediction against the one ground
  truth. Multi-animal: predictions are first paired with ground-truth animals by greedy OKS
  matching (sigma 0.1, pairs with OKS >= 1e-6); unpaired predictions and animals count nowhere.
  Unique bodyparts (one set per image) are added to both sums.
- ``rmse_keypoint_<k>`` (``per_keypoint_rmse``): the same mean per keypoint (NaN where none).
- ``mAP`` / ``mAR``: COCO-style over OKS thresholds 0.50:0.05:0.95 (101 recall points), in
  percent, with DeepLabCut's greedy matching (see :mod:`dlc_train.evaluation.matching`) and
  each prediction scored by the mean of its keypoint scores; only animals (ground truth and
  predicted) with at least two keypoints take part.
- ``PCK@<t>px`` (ours, not DeepLabCut's; ``pck_thresholds``): the fraction of labeled
  keypoints whose matched prediction is within ``t`` pixels; a labeled keypoint without a
  matched prediction counts as a miss.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from dlc_train.evaluation.matching import Match, match_greedy_oks, oks_matrix

OKS_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)

Data = list[tuple[np.ndarray, np.ndarray]]  # per image: (ground truth, sorted predictions)


def canonical_poses(poses: np.ndarray) -> np.ndarray:
    """Predictions (..., N, K, 3) with every missing keypoint NaN, NaN, NaN.

    Missing: a non-finite x or y (our assembly's empty slots: NaN, NaN, 0), a negative score
    (DeepLabCut's -1 padding), or an animal padded with (-1, -1, score <= 0) keypoints (our DEKR
    padding). DeepLabCut's scores ignore them the same way: NaN scores leave the mean score.
    """
    poses = np.array(poses)
    if not np.issubdtype(poses.dtype, np.floating):
        poses = poses.astype(np.float64)
    missing = ~np.isfinite(poses[..., :2]).all(axis=-1) | (poses[..., 2] < 0)
    padding = ((poses[..., 0] == -1) & (poses[..., 1] == -1) & (poses[..., 2] <= 0)).all(-1)
    missing |= padding[..., None]
    poses[missing] = np.nan
    return poses


def prepare(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One image's arrays as DeepLabCut compares them.

    Unlabeled ground-truth keypoints (visibility <= 0) and predicted keypoints with a negative
    score become NaN rows; animals without any remaining keypoint are dropped; predictions are
    sorted by mean score, best first (stable).
    """
    gt = np.array(gt, dtype=np.float64)
    gt[gt[..., 2] <= 0] = np.nan
    gt = gt[np.any(np.all(~np.isnan(gt), axis=-1), axis=-1)]
    pred = np.array(pred)[..., :3]
    if not np.issubdtype(pred.dtype, np.floating):
        pred = pred.astype(np.float64)
    pred[pred[..., 2] < 0] = np.nan
    pred = pred[np.any(np.all(~np.isnan(pred), axis=-1), axis=-1)]
    if len(pred):
        # Every kept animal has a scored keypoint: no all-NaN row reaches nanmean.
        scores = np.nanmean(pred[:, :, 2], axis=-1)
        pred = pred[np.argsort(-scores, kind="mergesort")]
    return gt, pred


def prepare_all(ground_truth: dict[str, np.ndarray], predictions: dict[str, np.ndarray]) -> Data:
    """:func:`prepare` for every image of ``ground_truth`` (in its order)."""
    missing = [image for image in ground_truth if image not in predictions]
    if missing:
        raise ValueError(f"no prediction for {len(missing)} image(s), e.g. {missing[0]}")
    return [prepare(gt, predictions[image]) for image, gt in ground_truth.items()]


def rmse_matches(data: Data, single_animal: bool) -> list[Match]:
    """The (prediction, ground truth) pairs the RMSE is taken over (see the module doc)."""
    matches: list[Match] = []
    for gt, pred in data:
        if single_animal:
            if len(gt) > 1 or len(pred) > 1:
                raise ValueError("single-animal RMSE takes at most one animal and one "
                                 f"prediction per image, got {len(gt)} and {len(pred)}")
            if len(gt) == 1 and len(pred) == 1:
                match = Match.of(pred[0])
                match.gt, match.oks = gt[0], float("nan")
                matches.append(match)
        else:
            matches.extend(match_greedy_oks(gt, pred, oks_matrix(gt, pred, 0.1, 0.0),
                                            threshold=1e-6))
    return matches


def _errors(matches: list[Match]) -> tuple[np.ndarray, np.ndarray] | None:
    if not matches:
        return None
    return (np.stack([m.pixel_errors() for m in matches]),
            np.stack([m.pose[:, 2] for m in matches]))


def _sums(errors: np.ndarray, scores: np.ndarray, pcutoff) -> tuple[float, int, float, int]:
    """(sum, count, sum above pcutoff, count above pcutoff) of the non-NaN errors."""
    support = int(np.sum(~np.isnan(errors)))
    if support == 0:
        return 0.0, 0, 0.0, 0
    with np.errstate(invalid="ignore"):
        above = errors[scores >= np.asarray(pcutoff)]
    cut_support = int(np.sum(~np.isnan(above)))
    cut = float(np.nansum(above)) if cut_support else 0.0
    return float(np.nansum(errors)), support, cut, cut_support


def compute_rmse(data: Data, single_animal: bool, pcutoff: float | Sequence[float],
                 data_unique: Data | None = None, per_keypoint: bool = False,
                 pck_thresholds: Sequence[float] = ()) -> dict[str, float]:
    """``rmse``, ``rmse_pcutoff`` (and ``rmse_keypoint_<k>``, ``rmse_unique_keypoint_<k>``,
    ``PCK@<t>px`` when asked). A list ``pcutoff`` has one value per bodypart, then one per
    unique bodypart."""
    per_bodypart = not isinstance(pcutoff, (int, float))
    sets = [("rmse_keypoint", _errors(rmse_matches(data, single_animal)), data)]
    if data_unique is not None:
        sets.append(("rmse_unique_keypoint", _errors(rmse_matches(data_unique, True)),
                     data_unique))
    total = [0.0, 0, 0.0, 0]
    hits = np.zeros(len(pck_thresholds))
    labeled = 0
    results: dict[str, float] = {}
    for i, (prefix, errors, images) in enumerate(sets):
        labeled += sum(int(np.sum(~np.isnan(gt[..., 0]))) for gt, _ in images)
        if errors is None:
            continue
        err, scores = errors
        cutoffs = pcutoff
        if per_bodypart:
            cutoffs = list(pcutoff)[:err.shape[1]] if i == 0 else list(pcutoff)[-err.shape[1]:]
        total = [a + b for a, b in zip(total, _sums(err, scores, cutoffs))]
        with np.errstate(invalid="ignore"):
            hits += [np.sum(err <= t) for t in pck_thresholds]
        if per_keypoint:
            for k, column in enumerate(err.T):
                value = float(np.nanmean(column)) if np.any(~np.isnan(column)) else float("nan")
                results[f"{prefix}_{k}"] = value
    out = {"rmse": total[0] / total[1] if total[1] else float("nan"),
           "rmse_pcutoff": total[2] / total[3] if total[3] else float("nan")}
    out.update(results)
    for t, hit in zip(pck_thresholds, hits):
        out[pck_name(t)] = float(hit / labeled) if labeled else float("nan")
    return out


def pck_name(threshold: float) -> str:
    """``PCK@5px`` for 5 pixels."""
    return f"PCK@{threshold:g}px"


def compute_map(data: Data, sigma: float | np.ndarray = 0.1, margin: float = 0.0,
                thresholds: np.ndarray = OKS_THRESHOLDS,
                recall_thresholds: np.ndarray = RECALL_THRESHOLDS) -> dict[str, float]:
    """``mAP`` and ``mAR`` in percent (see the module doc); 0 and 0 without any prediction."""
    total_gt = 0
    images = []
    for gt, pred in data:
        gt = gt[np.sum(np.all(~np.isnan(gt), axis=-1), axis=-1) > 1]
        pred = pred[np.sum(np.all(~np.isnan(pred), axis=-1), axis=-1) > 1]
        total_gt += len(gt)
        images.append((gt, pred, oks_matrix(gt, pred, sigma, margin)))
    precisions, recalls = [], []
    for threshold in thresholds:
        matches = [m for gt, pred, table in images
                   for m in match_greedy_oks(gt, pred, table, threshold)]
        if not matches:
            return {"mAP": 0, "mAR": 0}  # DeepLabCut's values (ints) for "no prediction"
        order = np.argsort(-np.asarray([m.score for m in matches]), kind="mergesort")
        values = np.asarray([m.oks for m in matches])[order]
        tp = np.cumsum(values >= threshold)
        fp = np.cumsum(values < threshold)
        with np.errstate(invalid="ignore", divide="ignore"):
            recall = tp / total_gt
        precision = tp / (fp + tp + np.spacing(1))
        # Precision made non-increasing from the right, as COCO does.
        precision = np.maximum.accumulate(precision[::-1])[::-1]
        index = np.searchsorted(recall, recall_thresholds, side="left")
        sampled = np.zeros(index.shape)
        valid = index < len(precision)
        sampled[valid] = precision[index[valid]]
        precisions.append(sampled)
        recalls.append(recall[-1])
    return {"mAP": 100 * np.asarray(precisions).mean().item(),
            "mAR": 100 * np.asarray(recalls).mean().item()}


def compute_metrics(ground_truth: dict[str, np.ndarray], predictions: dict[str, np.ndarray],
                    single_animal: bool = False,
                    unique_bodypart_gt: dict[str, np.ndarray] | None = None,
                    unique_bodypart_poses: dict[str, np.ndarray] | None = None,
                    pcutoff: float | Sequence[float] = -1, oks_bbox_margin: float = 0.0,
                    oks_sigma: float | np.ndarray = 0.1, per_keypoint_rmse: bool = False,
                    pck_thresholds: Sequence[float] = ()) -> dict[str, float]:
    """DeepLabCut 3's ``compute_metrics`` (same arguments and keys), plus PCK.

    Args:
        ground_truth: image -> (individuals, K, 3) x, y, visibility.
        predictions: image -> (animals, K, 3+) x, y, score.
        single_animal: one animal per image (no matching for the RMSE).
        unique_bodypart_gt, unique_bodypart_poses: image -> (1, U, 3), when there are some.
        pcutoff: score threshold of ``rmse_pcutoff`` (one value, or one per bodypart then
            per unique bodypart).
        oks_bbox_margin, oks_sigma: of the OKS behind mAP / mAR.
        per_keypoint_rmse: add ``rmse_keypoint_<k>`` (and ``rmse_unique_keypoint_<k>``).
        pck_thresholds: add ``PCK@<t>px`` for each threshold, in pixels.

    Returns:
        ``rmse``, ``rmse_pcutoff``, [per keypoint,] [PCK,] ``mAP``, ``mAR``.
    """
    data = prepare_all(ground_truth, predictions)
    data_unique = None
    if unique_bodypart_gt is not None:
        if unique_bodypart_poses is None:
            raise ValueError("unique bodypart ground truth given without their predictions")
        data_unique = prepare_all(unique_bodypart_gt, unique_bodypart_poses)
    results = compute_rmse(data, single_animal, pcutoff, data_unique, per_keypoint_rmse,
                           pck_thresholds)
    results.update(compute_map(data, oks_sigma, oks_bbox_margin))
    return results

