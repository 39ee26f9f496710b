"""One split of any loader (a DeepLabCut shuffle, a COCO dataset) through a snapshot: its
predictions and DeepLabCut 3's metrics on them, as ``evaluate`` in DeepLabCut's
``pose_estimation_pytorch/apis/evaluation.py`` computes them. No file is written here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from dlc_train.config import ConfigError
from dlc_train.data.base import Loader
from dlc_train.evaluation.identity import identity_accuracy
from dlc_train.evaluation.metrics import compute_metrics
from dlc_train.evaluation.predict import ImagePredictor, Prediction
from dlc_train.evaluation.selection import bodypart_subset, resolve_pcutoff


@dataclass(frozen=True)
class Evaluated:
    """Which keypoints are compared, and with which pcutoff.

    Attributes:
        kept, kept_unique: indices of the compared bodyparts and unique bodyparts.
        bodyparts, unique_bodyparts: their names.
        pcutoff: one value, or one per compared bodypart then unique bodypart.
    """

    kept: list[int]
    kept_unique: list[int]
    bodyparts: list[str]
    unique_bodyparts: list[str]
    pcutoff: float | list[float]

    @classmethod
    def choose(cls, loader: Loader, comparison_bodyparts=None, pcutoff=None,
               default_pcutoff: float | None = None) -> "Evaluated":
        """``comparison_bodyparts`` and ``pcutoff`` as :func:`evaluate_network` takes them;
        ``default_pcutoff``: the project's, used when ``pcutoff`` is None."""
        kept, kept_unique = bodypart_subset(loader.bodyparts, loader.unique_bodyparts,
                                            comparison_bodyparts)
        if not kept and not kept_unique:
            raise ConfigError(f"no bodyparts left to evaluate with comparison_bodyparts "
                              f"{comparison_bodyparts!r}")
        names = [loader.bodyparts[k] for k in kept]
        unique = [loader.unique_bodyparts[k] for k in kept_unique]
        return cls(kept, kept_unique, names, unique,
                   resolve_pcutoff(pcutoff, default_pcutoff, names + unique))


def predict_split(predictor: ImagePredictor, loader: Loader, mode: str) -> dict[str, Prediction]:
    """Predictions on the images of a split, keyed by image path as the loader gives it."""
    samples = loader.train_samples() if mode == "train" else loader.test_samples()
    return predictor([path for path, _ in samples])


def split_metrics(loader: Loader, mode: str, predictions: dict[str, Prediction],
                  chosen: Evaluated, per_keypoint: bool = False,
                  pck_thresholds: Sequence[float] = (),
                  with_identity: bool = False) -> dict[str, float]:
    """DeepLabCut 3's metrics of one split (see :func:`dlc_train.evaluation.compute_metrics`):
    ``rmse``, ``rmse_pcutoff``, [``rmse_keypoint_<k>``...,] [``PCK@<t>px``...,] ``mAP``,
    ``mAR``[, ``id_head_<bodypart>_accuracy``...]; NaN for a split without images."""
    samples = loader.train_samples() if mode == "train" else loader.test_samples()
    if not samples:
        return {"rmse": float("nan"), "rmse_pcutoff": float("nan"), "mAP": float("nan"),
                "mAR": float("nan")}
    kept, kept_unique = chosen.kept, chosen.kept_unique
    gt = {path: np.asarray(kps)[:, kept] for path, kps in samples}
    pred = {path: predictions[path]["bodyparts"][:, kept] for path, _ in samples}
    single = len(loader.individuals) == 1
    gt_unique = pred_unique = None
    if kept_unique:
        gt_unique = {path: loader.unique_keypoints(path)[None, kept_unique] for path, _ in samples}
        pred_unique = {path: predictions[path]["unique_bodyparts"][:, kept_unique]
                       for path, _ in samples}
        if not kept:  # only unique bodyparts compared: they are the (single) animal
            gt, pred, gt_unique, pred_unique, single = gt_unique, pred_unique, None, None, True
    result = compute_metrics(gt, pred, single_animal=single, unique_bodypart_gt=gt_unique,
                             unique_bodypart_poses=pred_unique, pcutoff=chosen.pcutoff,
                             per_keypoint_rmse=per_keypoint, pck_thresholds=pck_thresholds)
    if with_identity and kept:
        ids = {path: predictions[path]["identity_scores"][:, kept] for path, _ in samples}
        accuracy = identity_accuracy(chosen.bodyparts, gt, pred, ids)
        result.update({f"id_head_{name}": value for name, value in accuracy.items()})
    return result


def rmse_per_bodypart(metrics: dict[str, float], chosen: Evaluated) -> dict[str, float]:
    """``{bodypart: rmse}`` from a split's per-keypoint metrics (names, not indices)."""
    names = chosen.bodyparts + chosen.unique_bodyparts
    n_main = len(chosen.bodyparts) or len(names)  # only unique ones: they were the main ones
    keys = [f"rmse_keypoint_{k}" for k in range(n_main)] + \
        [f"rmse_unique_keypoint_{u}" for u in range(len(names) - n_main)]
    return {name: metrics[key] for name, key in zip(names, keys) if key in metrics}
