"""Detector training data: whole images and one box per labeled individual, as DeepLabCut 3's
``PoseDataset`` gives them for ``Task.DETECT``.

The boxes are made from the keypoints (``bbox_from_keypoints``, ``data.bbox_margin``) before
augmentation and move with the image (albumentations' box handling: flips, affine, crops);
a box that leaves the image becomes a zero row, which the detector's ``get_target`` drops.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from dlc_train.data.dataset import SeededDataset, read_image
from dlc_train.data.top_down import bbox_from_keypoints
from dlc_train.data.transforms import Augmentation

ANIMAL = 1  # DeepLabCut's detectors have two classes: background (0) and animal (1)


class DetectionDataset(SeededDataset):
    """Args:
        samples: [(image path, keypoints (N, K, 3))]; every image has the same N.
        transform: the ``detector.data.train`` / ``.inference`` pipeline (None: raw pixels).
        bbox_margin: pixels added around each individual's keypoints.
        seed: item ``i`` of epoch ``e`` draws with ``(seed, e, i)`` (see PoseDataset).

    Items: ``image`` (3, H, W); ``annotations``: ``boxes`` (N, 4) x, y, w, h (zero rows: no
    box), ``labels`` (N,), ``area`` (N,), ``is_crowd`` (N,), ``keypoints`` (N, K, 3); ``path``.
    """

    def __init__(self, samples: Sequence[tuple[str, np.ndarray]], transform: Augmentation | None,
                 bbox_margin: float = 20, seed: int = 0):
        super().__init__(samples, seed)
        self.transform = transform
        self.bbox_margin = float(bbox_margin)
        shapes = {k.shape[0] for _, k in self.samples}
        if len(shapes) > 1:
            raise ValueError(f"images have different numbers of individuals: {sorted(shapes)}")

    def __getitem__(self, index: int) -> dict[str, Any]:
        path, kps = self.samples[index]
        image = read_image(path)
        boxes = bbox_from_keypoints(kps, image.shape[0], image.shape[1], self.bbox_margin)
        kps = kps.copy()
        if self.transform is not None:
            out = self.transform.apply(image, [kps], self.rng(index), bboxes=boxes)
            image, kps, boxes = out.image, out.keypoints[0], out.bboxes
        valid = (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
        boxes = np.where(valid[:, None], boxes, 0.0).astype(np.float32)
        image = np.ascontiguousarray(np.asarray(image, np.float32).transpose(2, 0, 1))
        annotations = {
            "boxes": torch.from_numpy(boxes),
            "labels": torch.from_numpy(np.where(valid, ANIMAL, -1).astype(np.int64)),
            "area": torch.from_numpy((boxes[:, 2] * boxes[:, 3]).astype(np.float32)),
            "is_crowd": torch.zeros(len(boxes), dtype=torch.int64),
            "keypoints": torch.from_numpy(np.ascontiguousarray(kps)),
        }
        return {"image": torch.from_numpy(image), "annotations": annotations, "path": path}
