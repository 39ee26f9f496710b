"""PoseDataset: (image path, keypoints) samples -> augmented, normalized tensors; their loaders.

Loaders (DLCLoader, COCOLoader) make these with ``create_dataset(transform, mode, task)``;
``make_dataloaders`` batches them as the trainer reads ``train_settings``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from dlc_train.data.transforms import Augmentation


class SeededDataset(Dataset):
    """Our datasets' shared part: (image path, keypoints (N, K, 3)) samples, and random draws
    of item ``i`` in epoch ``e`` seeded with ``(seed, e, i)``, so runs are reproducible
    whatever the number of dataloader workers."""

    def __init__(self, samples: Sequence[tuple[str, np.ndarray]], seed: int = 0):
        self.samples = [(str(p), np.asarray(k, dtype=np.float32)) for p, k in samples]
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Changes the augmentation draws from one epoch to the next."""
        self.epoch = int(epoch)

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

    def __len__(self) -> int:
        return len(self.samples)


class PoseDataset(SeededDataset):
    """Args:
        samples: [(image path, keypoints (N, K, 3))]; visibility <= 0 marks unlabeled.
        transform: a pipeline from ``build_transforms`` (None: no augmentation, raw pixels).
            Keypoints that it moves out of the image come back with visibility 0.
        bodyparts: bodypart names (K), for reference and checks.
        unique_keypoints: optional per-sample (U, 3) arrays (multi-animal unique bodyparts).
        seed: base seed; item ``i`` of epoch ``e`` is augmented with ``(seed, e, i)`` so runs
            are reproducible whatever the number of dataloader workers.
    """

    def __init__(self, samples: Sequence[tuple[str, np.ndarray]], transform: Augmentation | None,
                 bodyparts: Sequence[str], unique_keypoints: Sequence[np.ndarray] | None = None,
                 seed: int = 0):
        super().__init__(samples, seed)
        self.transform = transform
        self.bodyparts = list(bodyparts)
        self.unique_keypoints = list(unique_keypoints) if unique_keypoints is not None else None
        for path, kps in self.samples:
            if kps.ndim != 3 or kps.shape[1:] != (len(self.bodyparts), 3):
                raise ValueError(f"keypoints of {path} have shape {kps.shape}, expected "
                                 f"(N, {len(self.bodyparts)}, 3)")

    def __getitem__(self, index: int) -> dict[str, Any]:
        path, kps = self.samples[index]
        image = read_image(path)
        arrays = [kps.copy()]
        if self.unique_keypoints is not None:
            arrays.append(np.asarray(self.unique_keypoints[index], dtype=np.float32).copy())
        if self.transform is not None:
            image, arrays = self.transform(image, arrays, self.rng(index))
        image = np.ascontiguousarray(np.asarray(image, dtype=np.float32).transpose(2, 0, 1))
        keypoints = np.ascontiguousarray(arrays[0])
        # Row n is individual n of the project (labels are stored in individuals order), which
        # is what identity heads learn to recognise.
        annotations = {"keypoints": torch.from_numpy(keypoints),
                       "individual_ids": torch.arange(keypoints.shape[0])}
        if self.unique_keypoints is not None:
            annotations["keypoints_unique"] = torch.from_numpy(np.ascontiguousarray(arrays[1]))
        return {"image": torch.from_numpy(image), "annotations": annotations, "path": path}


def read_image(path: str | Path) -> np.ndarray:
    """Reads an image as RGB uint8 (H, W, 3); a clear error when it cannot be read."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stacks items into a batch.

    crop_sampling / resize give every image the same size. When sizes differ (e.g. evaluation on
    full frames of mixed sizes) images are zero-padded at the bottom/right to the largest H and
    W: keypoints stay valid because padding there moves no pixel. Zero is the normalized value
    of the ImageNet mean, i.e. a neutral grey, not black.
    """
    heights = [item["image"].shape[1] for item in batch]
    widths = [item["image"].shape[2] for item in batch]
    h, w = max(heights), max(widths)
    images = torch.zeros((len(batch), 3, h, w), dtype=torch.float32)
    for i, item in enumerate(batch):
        _, ih, iw = item["image"].shape
        images[i, :, :ih, :iw] = item["image"]
    annotations = {key: torch.stack([item["annotations"][key] for item in batch])
                   for key in batch[0]["annotations"]}
    return {"image": images, "annotations": annotations,
            "path": [item["path"] for item in batch],
            "image_size": torch.tensor([[ih, iw] for ih, iw in zip(heights, widths)])}


def make_dataloaders(train_set: Dataset, test_set: Dataset | None, settings: dict,
                     seed: int, start_epoch: int = 1, collate_fn: Any = None
                     ) -> tuple[DataLoader, DataLoader | None]:
    """The trainer's batches, from ``train_settings`` (batch_size, dataloader_workers,
    dataloader_pin_memory); ``collate_fn`` batches the training items (``data.train.collate``;
    None: ``collate``).

    Training batches are shuffled by a generator seeded with ``seed + start_epoch - 1``, so a
    resumed run does not replay the first epochs' order; test images come one at a time (full
    frames of one project usually share a size; collate pads when they do not). No test loader
    when there are no test images.
    """
    if len(train_set) == 0:
        raise ValueError("no training images")
    workers = int(settings.get("dataloader_workers") or 0)
    pin = bool(settings.get("dataloader_pin_memory"))
    generator = torch.Generator().manual_seed(int(seed) + int(start_epoch) - 1)
    train_loader = DataLoader(train_set, batch_size=int(settings.get("batch_size") or 1),
                              shuffle=True, num_workers=workers,
                              collate_fn=collate_fn or collate, pin_memory=pin,
                              generator=generator, drop_last=False)
    test_loader = None
    if test_set is not None and len(test_set) > 0:
        test_loader = DataLoader(test_set, batch_size=1, shuffle=False, num_workers=workers,
                                 collate_fn=collate, pin_memory=pin)
    return train_loader, test_loader
