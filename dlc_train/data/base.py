"""``Loader``: what training reads from a data source (a DeepLabCut shuffle, a COCO dataset).

As DeepLabCut 3's ``Loader``: a loader knows its bodyparts and individuals, its train and test
samples, and where the model lives (the folder of its ``pytorch_config.yaml``, where snapshots
are written); ``create_dataset(transform, mode, task)`` makes the dataset the trainer batches.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dlc_train.task import Task

if TYPE_CHECKING:  # torch and albumentations load only when a dataset is made
    from dlc_train.data.dataset import PoseDataset
    from dlc_train.data.transforms import Augmentation

Sample = tuple[str, np.ndarray]  # (absolute image path, keypoints (N, K, 3))
MODES = ("train", "test")


class Loader(ABC):
    """A source of labeled images for one model (see the module docstring)."""

    @property
    @abstractmethod
    def bodyparts(self) -> list[str]:
        """The K bodyparts of each individual, in label order."""

    @property
    def unique_bodyparts(self) -> list[str]:
        """Bodyparts present once per image (multi-animal DeepLabCut projects); none here."""
        return []

    @property
    @abstractmethod
    def individuals(self) -> list[str]:
        """The N individuals: rows of the keypoint arrays."""

    @property
    @abstractmethod
    def pose_config_path(self) -> Path:
        """The model's pytorch_config.yaml; its folder holds the snapshots."""

    @abstractmethod
    def samples(self, mode: str = "train") -> list[Sample]:
        """[(image path, keypoints (N, K, 3), visibility 0 where unlabeled)] of a split."""

    def unique_keypoints(self, image_path: str) -> np.ndarray | None:
        """(U, 3) unique-bodypart keypoints of one image; None without unique bodyparts."""
        return None

    def train_samples(self) -> list[Sample]:
        return self.samples("train")

    def test_samples(self) -> list[Sample]:
        return self.samples("test")

    def create_dataset(self, transform: Augmentation | None = None, mode: str = "train",
                       task: Task | str = Task.BOTTOM_UP, seed: int = 0) -> PoseDataset:
        """The dataset of a split, as DeepLabCut 3's ``Loader.create_dataset``.

        Args:
            transform: a ``build_transforms`` pipeline (None: raw pixels, no augmentation).
            mode: "train" or "test".
            task: the model's task; bottom-up datasets (whole images) only, for now.
            seed: base seed of the per-item augmentation draws (see PoseDataset).
        """
        from dlc_train.data.dataset import PoseDataset

        check_mode(mode)
        task = task if isinstance(task, Task) else Task.from_str(str(task))
        if task != Task.BOTTOM_UP:
            raise ValueError(f"create_dataset: {task.snake_name} datasets (crops around each "
                             "animal) are not made by this loader yet; use Task.BOTTOM_UP")
        samples = self.samples(mode)
        unique = None
        if self.unique_bodyparts:
            unique = [self.unique_keypoints(path) for path, _ in samples]
        return PoseDataset(samples, transform, self.bodyparts, unique_keypoints=unique,
                           seed=seed)


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: expected 'train' or 'test'")
