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
    from torch.utils.data import Dataset

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
                       task: Task | str = Task.BOTTOM_UP, seed: int = 0,
                       config: dict | None = None, after_crop: Augmentation | None = None,
                       max_images: int | None = None) -> Dataset:
        """The dataset of a split, as DeepLabCut 3's ``Loader.create_dataset``.

        Args:
            transform: a ``build_transforms`` pipeline (None: raw pixels, no augmentation);
                for top-down tasks, the augmentation before the crop.
            mode: "train" or "test".
            task: BOTTOM_UP: whole images (``PoseDataset``); TOP_DOWN / COND_TOP_DOWN: one crop
                per labeled individual (``TopDownDataset``); DETECT: whole images with one box
                per individual (``DetectionDataset``).
            seed: base seed of the per-item augmentation draws (see PoseDataset).
            config: the pytorch_config dict giving ``data.bbox_margin``,
                ``data.train`` / ``data.inference``'s ``top_down_crop`` and (CTD)
                ``data.gen_sampling`` (default: the
                loader's ``model_cfg`` where it has one).
            after_crop: top-down: run on each crop (normalization; see ``split_normalization``).
            max_images: only the split's first N images (quick runs, tests).
        """
        from dlc_train.data.dataset import PoseDataset

        check_mode(mode)
        task = task if isinstance(task, Task) else Task.from_str(str(task))
        samples = self.samples(mode)
        if max_images is not None:
            samples = samples[:int(max_images)]
        if task != Task.BOTTOM_UP:
            return self._crop_or_box_dataset(samples, transform, mode, task, seed, config,
                                             after_crop)
        unique = None
        if self.unique_bodyparts:
            unique = [self.unique_keypoints(path) for path, _ in samples]
        return PoseDataset(samples, transform, self.bodyparts, unique_keypoints=unique,
                           seed=seed)

    def _crop_or_box_dataset(self, samples: list[Sample], transform: Augmentation | None,
                             mode: str, task: Task, seed: int, config: dict | None,
                             after_crop: Augmentation | None) -> Dataset:
        from dlc_train.data.detection import DetectionDataset
        from dlc_train.data.top_down import CropSettings, TopDownDataset

        cfg = config if config is not None else (getattr(self, "model_cfg", None) or {})
        data = cfg.get("data") or {}
        margin = 20.0 if data.get("bbox_margin") is None else float(data["bbox_margin"])
        if task == Task.DETECT:
            return DetectionDataset(samples, transform, bbox_margin=margin, seed=seed)
        sampler = None
        if task == Task.COND_TOP_DOWN:
            from dlc_train.data.generative_sampling import GenerativeSampler

            # Test items too, as DeepLabCut: a CTD model is scored on imperfect conditions.
            sampler = GenerativeSampler.from_config(data.get("gen_sampling"),
                                                    len(self.bodyparts))
        section = data.get("train" if mode == "train" else "inference") or {}
        crop = CropSettings.from_config(section.get("top_down_crop"),
                                        with_context_default=task == Task.TOP_DOWN)
        return TopDownDataset(samples, transform, self.bodyparts, crop, bbox_margin=margin,
                              after_crop=after_crop, seed=seed, sampler=sampler)


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: expected 'train' or 'test'")
