"""Top-down predictions on labeled images, as DeepLabCut 3's evaluation makes them.

Per image (``predict`` in DeepLabCut's ``pose_estimation_pytorch/apis/evaluation.py``):

1. boxes: the detector snapshot's eval-mode detections (the image through the detector's
   ``detector.data.inference`` transforms, boxes mapped back to the image's pixels, at most
   one per individual, best first), or ground-truth boxes (``bbox_from_keypoints`` with
   ``data.bbox_margin``, one per labeled individual), as DeepLabCut without a detector;
2. each box is cropped with the pose model's ``data.inference.top_down_crop``
   (:func:`dlc_train.data.top_down.top_down_crop`, the crop training uses), the crop is
   normalized (``data.inference``'s ``normalize_images`` / ``scale_to_unit_range``) and goes
   through the pose model and its predictor;
3. the keypoints go back to the image's pixels (``x * scale + offset``) and the animals are
   padded with NaN to one per individual.

Predictions carry DeepLabCut's keys: ``bodyparts`` (individuals, K, 3), ``bboxes``
(individuals, 4) x, y, w, h and ``bbox_scores`` (NaN rows / scores where fewer animals were
found); ``unique_bodyparts`` (1, U, 3) all NaN when the project has unique bodyparts (top-down
models do not predict them).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from dlc_train.data.dataset import read_image
from dlc_train.data.top_down import (CropSettings, bbox_from_keypoints, split_normalization,
                                     top_down_crop)
from dlc_train.data.transforms import build_transforms
from dlc_train.evaluation.metrics import canonical_poses
from dlc_train.evaluation.predict import Prediction, input_to_image, probe_dataset
from dlc_train.models.loading import build_detector_from_snapshot, build_model_from_snapshot

# A box source: (image path, the image when already read) -> (boxes (D, 4) x, y, w, h in image
# pixels, scores (D,)).
Boxes = Callable[[str, np.ndarray | None], tuple[np.ndarray, np.ndarray]]


class DetectorBoxes:
    """The boxes a detector snapshot finds on image files.

    Args:
        pose_cfg: the top-down pytorch_config (its ``detector`` section).
        snapshot: a ``snapshot-detector-XXX.pt``.
        max_individuals: at most this many boxes per image, best first (DeepLabCut's detector
            post-processing); the detector's own ``box_score_thresh`` applies before.
        device: a resolved torch device.
    """

    def __init__(self, pose_cfg: dict, snapshot: str | Path, max_individuals: int,
                 device: torch.device | str = "cpu"):
        self.device = device
        self.model = build_detector_from_snapshot(pose_cfg, snapshot).to(device)
        data = (pose_cfg.get("detector") or {}).get("data") or {}
        self.transform = build_transforms(data.get("inference"))
        self.max_individuals = int(max_individuals)

    @torch.no_grad()
    def __call__(self, path: str, image: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
        item = probe_dataset([path], self.transform)[0]  # the file, through the transforms
        _, detections = self.model(item["image"][None].to(self.device))
        det = detections[0]
        order = det["scores"].argsort(descending=True)[:self.max_individuals]
        xyxy = det["boxes"][order].float().cpu().numpy().astype(np.float64)
        back = input_to_image(item)
        corners = xyxy.reshape(-1, 2, 2) @ back[:, :2].T + back[:, 2]
        boxes = np.concatenate((corners[:, 0], corners[:, 1] - corners[:, 0]), axis=-1)
        return boxes.reshape(-1, 4), det["scores"][order].float().cpu().numpy()


class GroundTruthBoxes:
    """Boxes from the labeled keypoints (``bbox_from_keypoints``, score 1), one per labeled
    individual, as DeepLabCut evaluates a top-down model without a detector.

    Args:
        keypoints: {image path: (N, K, 3) labeled keypoints}.
        margin: the pose config's ``data.bbox_margin``.
    """

    def __init__(self, keypoints: dict[str, np.ndarray], margin: float):
        self.keypoints, self.margin = keypoints, float(margin)

    def __call__(self, path: str, image: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
        kps = np.asarray(self.keypoints[path], dtype=np.float64)
        labeled = (kps[..., 2] > 0).any(axis=-1)
        h, w = (read_image(path) if image is None else image).shape[:2]
        boxes = bbox_from_keypoints(kps[labeled], h, w, self.margin)
        return boxes, np.ones(len(boxes))


class TopDownPredictor:
    """Predicts keypoints on image files with a top-down pose snapshot and a box source (see
    the module docstring); called like :class:`dlc_train.evaluation.predict.ImagePredictor`.

    Args:
        pose_cfg: the shuffle's pytorch_config.yaml as a dict (``method: td``).
        snapshot: the pose ``snapshot-XXX.pt``.
        boxes: :class:`DetectorBoxes` or :class:`GroundTruthBoxes` (None in subclasses that
            override :meth:`individuals`).
        max_individuals: animals per image in the predictions (the project's individuals).
        num_bodyparts: K, the project's bodyparts (the model's).
        num_unique: the project's unique bodyparts (returned as NaN).
        device: a resolved torch device.
        batch_size: crops per forward pass (the numbers do not depend on it).
    """

    #: ``crop_with_context`` when the config does not say (DeepLabCut's top-down default).
    WITH_CONTEXT_DEFAULT = True

    def __init__(self, pose_cfg: dict, snapshot: str | Path, boxes: Boxes | None,
                 max_individuals: int, num_bodyparts: int, num_unique: int = 0,
                 device: torch.device | str = "cpu", batch_size: int = 1):
        self.device = device
        self.model = build_model_from_snapshot(pose_cfg, snapshot).to(device).eval()
        self.heads = set(self.model.heads)
        inference = (pose_cfg.get("data") or {}).get("inference") or {}
        self.crop = CropSettings.from_config(inference.get("top_down_crop"),
                                             self.WITH_CONTEXT_DEFAULT)
        self.normalize = build_transforms(split_normalization(inference)[1])
        self.boxes, self.max_individuals = boxes, int(max_individuals)
        self.num_bodyparts = int(num_bodyparts)
        self.num_unique, self.batch_size = int(num_unique), max(1, int(batch_size))

    @torch.no_grad()
    def __call__(self, image_paths: Sequence[str]) -> dict[str, Prediction]:
        """Predictions of each image (in its own pixels), keyed by the path given."""
        return {str(path): self._predict(str(path)) for path in image_paths}

    def individuals(self, path: str, image: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The individuals to crop in one image: boxes (D, 4) x, y, w, h, their scores (D,),
        and conditions (D, K, 3) in image pixels for conditional models (None here)."""
        boxes, scores = self.boxes(path, image)
        keep = (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
        return boxes[keep][:self.max_individuals], scores[keep][:self.max_individuals], None

    def _predict(self, path: str) -> Prediction:
        image = read_image(path)
        boxes, scores, conditions = self.individuals(path, image)
        c, rng = self.crop, np.random.default_rng(0)
        crops, offsets, scales = [], [], []
        for box in boxes:
            crop, offset, scale = top_down_crop(image, box, (c.width, c.height), c.margin,
                                                c.with_context)
            crop, _ = self.normalize(crop, [], rng)
            crops.append(np.asarray(crop, np.float32).transpose(2, 0, 1))
            offsets.append(offset)
            scales.append(scale)
        local = None
        if conditions is not None and len(crops):  # into each crop's pixels, as the crops
            local = np.asarray(conditions, np.float64).copy()
            local[..., :2] = (local[..., :2] - np.asarray(offsets)[:, None]) / \
                np.asarray(scales)[:, None]
        poses = self._poses(crops, local)
        out = np.full((self.max_individuals, self.num_bodyparts, 3), np.nan, np.float32)
        if len(poses):
            xy = poses[..., :2] * np.asarray(scales)[:, None] + np.asarray(offsets)[:, None]
            out[:len(poses), :, :2], out[:len(poses), :, 2] = xy, poses[..., 2]
        pred = {"bodyparts": out,
                "bboxes": _pad(boxes, self.max_individuals),
                "bbox_scores": _pad(scores[:, None], self.max_individuals)[:, 0]}
        if self.num_unique:
            pred["unique_bodyparts"] = np.full((1, self.num_unique, 3), np.nan, np.float32)
        return pred

    def _poses(self, crops: list[np.ndarray], conditions: np.ndarray | None = None
               ) -> np.ndarray:
        """(crops, K, 3) keypoints in crop pixels (NaN where missing); ``conditions``: (crops,
        K, 3) in crop pixels, given to conditional models as ``cond_kpts``."""
        found = []
        for start in range(0, len(crops), self.batch_size):
            batch = torch.from_numpy(np.stack(crops[start:start + self.batch_size]))
            extra = {}
            if conditions is not None:
                extra["cond_kpts"] = torch.from_numpy(
                    conditions[start:start + self.batch_size].astype(np.float32)
                ).to(self.device)
            outputs = self.model(batch.to(self.device), **extra)
            poses = self.model.heads["bodypart"].predictor(
                self.model.get_stride("bodypart"), outputs["bodypart"])["poses"]
            found.append(canonical_poses(poses.detach().float().cpu().numpy())[:, 0])
        return np.concatenate(found) if found else np.zeros((0, self.num_bodyparts, 3))


def _pad(rows: np.ndarray, n: int) -> np.ndarray:
    out = np.full((n,) + rows.shape[1:], np.nan, np.float64)
    out[:len(rows)] = rows
    return out
