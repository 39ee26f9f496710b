"""DetectorTrainingRunner: trains a top-down detector, as DeepLabCut 3's runner of that name.

The epoch loop, snapshots, resuming, the stats log and torchrun are PoseTrainingRunner's; what
differs: the detector computes its own losses in train mode (torchvision's: SSD's box
regression + classification, Faster R-CNN's RPN and box-head losses), summed into
``total_loss``; evaluation is box mAP (``test.mAP@50:95``, ``test.mAP@50``, ``test.mAP@75``,
COCO's 101-point interpolation over IoU 0.50:0.95); snapshots are ``snapshot-detector-XXX.pt``
and the stats go to ``learning_stats_detector.csv``, the names DeepLabCut uses.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from dlc_train.runners import distributed
from dlc_train.runners.train import PoseTrainingRunner

SNAPSHOT_PREFIX = "snapshot-detector"
STATS_FILENAME = "learning_stats_detector.csv"
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)


class DetectorTrainingRunner(PoseTrainingRunner):
    """Trains a BaseDetector (``forward(images, targets) -> (losses, detections)``,
    ``get_target(annotations)``); arguments as PoseTrainingRunner's."""

    @classmethod
    def from_config(cls, cfg: dict, model: nn.Module, train_folder: str | Path,
                    device: str | None = None, progress: bool = False
                    ) -> "DetectorTrainingRunner":
        """Builds the runner from a ``detector`` section (its runner, train_settings)."""
        cfg = copy.deepcopy(cfg)
        if not isinstance(cfg.get("runner"), dict):
            cfg["runner"] = {}
        if not cfg["runner"].get("snapshot_prefix"):
            cfg["runner"]["snapshot_prefix"] = SNAPSHOT_PREFIX
        # channels_last is measured faster for pose models on the CPU, not for detectors.
        cfg["runner"].setdefault("channels_last", False)
        runner = super().from_config(cfg, model, train_folder, device=device, progress=progress)
        runner.log_path = runner.snapshots.folder / STATS_FILENAME
        return runner

    def _losses(self, model: nn.Module, images: torch.Tensor,
                annotations: dict[str, Any]) -> dict[str, torch.Tensor]:
        losses, _ = model(images, self._targets(annotations))
        losses = dict(losses)
        losses["total_loss"] = sum(losses.values())
        return losses

    def _targets(self, annotations: dict[str, Any]) -> list[dict[str, torch.Tensor]]:
        return [{k: v.to(self.device) for k, v in t.items()}
                for t in self.model.get_target(annotations)]

    @torch.no_grad()
    def _evaluate(self, loader: Iterable) -> tuple[dict[str, float], dict[str, float]]:
        """Box mAP on the test images (detectors have no eval-mode loss: DeepLabCut logs none)."""
        self.model.eval()
        gts, preds = [], []
        for batch in tqdm(loader, desc="evaluating", unit="image", leave=False,
                          disable=not self.progress, dynamic_ncols=True):
            _, detections = self.model(batch["image"].to(self.device, non_blocking=True))
            for target, det in zip(self.model.get_target(batch["annotations"]), detections):
                gts.append(target["boxes"].cpu().numpy())
                preds.append((det["boxes"].float().cpu().numpy(),
                              det["scores"].float().cpu().numpy()))
        self.model.train()
        gts = distributed.gather_lists(gts, self.dist)
        preds = distributed.gather_lists(preds, self.dist)
        if not gts:
            return {}, {}
        return {f"test.{k}": v for k, v in box_map(gts, preds).items()}, {}


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of (N, 4) and (M, 4) x1, y1, x2, y2 boxes."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=-1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=-1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def box_map(gts: list[np.ndarray], preds: list[tuple[np.ndarray, np.ndarray]]
            ) -> dict[str, float]:
    """COCO box AP of one class: per IoU threshold, detections of all images by decreasing
    score, each matched greedily to the best unmatched ground truth box; precision
    interpolated at 101 recall points.

    Args:
        gts: per image (G, 4) x1, y1, x2, y2 boxes.
        preds: per image ((D, 4) boxes, (D,) scores).

    Returns:
        {"mAP@50:95", "mAP@50", "mAP@75"} in [0, 100], as DeepLabCut reports them.
    """
    total = sum(len(g) for g in gts)
    scores = np.concatenate([s for _, s in preds]) if preds else np.zeros(0)
    order = np.argsort(-scores, kind="stable")
    aps = []
    for threshold in IOU_THRESHOLDS:
        hits = np.concatenate([_matches(g, b, s, threshold) for g, (b, s) in zip(gts, preds)]) \
            if preds else np.zeros(0, bool)
        aps.append(_average_precision(hits[order], total))
    return {"mAP@50:95": float(np.mean(aps)) * 100, "mAP@50": aps[0] * 100,
            "mAP@75": aps[5] * 100}


def _matches(gt: np.ndarray, boxes: np.ndarray, scores: np.ndarray, threshold: float
             ) -> np.ndarray:
    """Per detection (in input order): whether it matches a ground truth box."""
    hit = np.zeros(len(boxes), bool)
    if len(gt) == 0 or len(boxes) == 0:
        return hit
    iou = box_iou(boxes, gt)
    free = np.ones(len(gt), bool)
    for d in np.argsort(-scores, kind="stable"):
        candidates = np.where(free, iou[d], -1.0)
        g = int(np.argmax(candidates))
        if candidates[g] >= threshold:
            hit[d], free[g] = True, False
    return hit


def _average_precision(hits: np.ndarray, total: int) -> float:
    if total == 0 or len(hits) == 0:
        return 0.0
    tp = np.cumsum(hits)
    recall = tp / total
    precision = tp / np.arange(1, len(hits) + 1)
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # the envelope
    points = np.searchsorted(recall, np.linspace(0, 1, 101), side="left")
    return float(np.mean([precision[p] if p < len(precision) else 0.0 for p in points]))
