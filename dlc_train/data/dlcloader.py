"""Train/test split and folders of one DeepLabCut shuffle.

Folder names follow DeepLabCut 3 exactly, so a shuffle made here sits where DeepLabCut looks:
- split: ``training-datasets/iteration-<i>/UnaugmentedDataSet_<Task><date>/
  Documentation_data-<Task>_<pct>shuffle<n>.yaml``
- model: ``dlc-models-pytorch/iteration-<i>/<Task><date>-trainset<pct>shuffle<n>/train/``
with ``pct = int(100 * TrainingFraction[trainset_index])`` as DeepLabCut computes it.

DeepLabCut stores the split in a pickle; we store a YAML with the image paths (readable, no
pickle loading). The permutation is seeded by the shuffle number, so it is reproducible but not
DeepLabCut's own (which comes from numpy's global RNG). A shuffle DeepLabCut made (its pickle,
and no YAML of ours) keeps DeepLabCut's split, read safely (dlc_split.py).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from dlc_io import atomic_write_text
from dlc_train.data.base import Loader, Sample, check_mode
from dlc_train.data.dlc_split import read_deeplabcut_split
from dlc_train.data.project import LabeledData, Project, ProjectError, load_labels, load_project


class DLCLoader(Loader):
    """One shuffle of a DeepLabCut project (``create_dataset``: see Loader).

    Args (in DeepLabCut's order, so ``DLCLoader(config, trainset_index, shuffle)`` means the
    same here):
        config_path: the project's config.yaml (or its folder).
        trainset_index: index into the config's ``TrainingFraction``.
        shuffle: the shuffle number (seeds the split).
    """

    def __init__(self, config_path: str | Path, trainset_index: int = 0, shuffle: int = 1):
        self.project: Project = load_project(config_path)
        self.shuffle = int(shuffle)
        self.trainset_index = int(trainset_index)
        fractions = self.project.training_fractions
        if not 0 <= self.trainset_index < len(fractions):
            raise ProjectError(f"trainset_index {trainset_index} out of range: TrainingFraction "
                               f"has {len(fractions)} entries")
        self.train_fraction = float(fractions[self.trainset_index])
        if not 0 < self.train_fraction <= 1:
            raise ProjectError(f"TrainingFraction {self.train_fraction} must be in (0, 1]")
        self.labels: LabeledData = load_labels(self.project)
        self._row: dict[str, int] | None = None  # image path -> label row, made when needed
        self.train_images, self.test_images = self._load_or_make_split()

    # -- names -------------------------------------------------------------------------------
    @property
    def train_pct(self) -> int:
        # int() rather than round(): DeepLabCut's folder names use int(100 * fraction).
        return int(self.train_fraction * 100)

    @property
    def training_dataset_dir(self) -> Path:
        p = self.project
        return (p.project_path / "training-datasets" / f"iteration-{p.iteration}"
                / f"UnaugmentedDataSet_{p.task}{p.date}")

    @property
    def split_path(self) -> Path:
        name = f"Documentation_data-{self.project.task}_{self.train_pct}shuffle{self.shuffle}.yaml"
        return self.training_dataset_dir / name

    @property
    def model_folder(self) -> Path:
        p = self.project
        return (p.project_path / "dlc-models-pytorch" / f"iteration-{p.iteration}"
                / f"{p.task}{p.date}-trainset{self.train_pct}shuffle{self.shuffle}")

    @property
    def train_folder(self) -> Path:
        """Where pytorch_config.yaml and the snapshots live."""
        return self.model_folder / "train"

    @property
    def pose_config_path(self) -> Path:
        return self.train_folder / "pytorch_config.yaml"

    @property
    def model_cfg(self) -> dict:
        """The shuffle's pytorch_config.yaml as a dict (DeepLabCut's ``loader.model_cfg``);
        ConfigError when it has not been made yet."""
        from dlc_train.config import read_config_as_dict

        return read_config_as_dict(self.pose_config_path)

    # -- split -------------------------------------------------------------------------------
    def _make_split(self) -> tuple[list[str], list[str]]:
        paths = self.labels.image_paths
        n_train = int(len(paths) * round(self.train_fraction, 2))
        order = np.random.default_rng(self.shuffle).permutation(len(paths))
        train = sorted(paths[i] for i in order[:n_train])
        test = sorted(paths[i] for i in order[n_train:])
        return train, test

    def _load_or_make_split(self) -> tuple[list[str], list[str]]:
        path = self.split_path
        if path.is_file():
            try:
                with open(path, encoding="utf-8") as f:
                    doc = yaml.safe_load(f)
                train, test = list(doc["train_images"]), list(doc["test_images"] or [])
            except (yaml.YAMLError, KeyError, TypeError):
                raise ProjectError(f"malformed split file {path}: delete it to make a new "
                                   "split") from None
            return self._check_known(path, train, test)
        made_by_deeplabcut = path.with_suffix(".pickle")
        if made_by_deeplabcut.is_file():
            train, test = read_deeplabcut_split(
                made_by_deeplabcut,
                self.training_dataset_dir / f"CollectedData_{self.project.scorer}.h5")
            return self._check_known(made_by_deeplabcut, train, test)
        train, test = self._make_split()
        doc = {"shuffle": self.shuffle, "train_fraction": self.train_fraction,
               "trainset_index": self.trainset_index, "train_images": train,
               "test_images": test}
        atomic_write_text(path, yaml.safe_dump(doc, sort_keys=False))
        return train, test

    def _check_known(self, path: Path, train: list[str], test: list[str]
                     ) -> tuple[list[str], list[str]]:
        known = set(self.labels.image_paths)
        missing = [p for p in train + test if p not in known]
        if missing:
            raise ProjectError(f"split file {path} names {len(missing)} images without "
                               f"labels (e.g. {missing[0]}); delete it to make a new split")
        return train, test

    # -- what the project labels --------------------------------------------------------------
    @property
    def bodyparts(self) -> list[str]:
        return list(self.project.bodyparts)

    @property
    def unique_bodyparts(self) -> list[str]:
        return list(self.project.unique_bodyparts)

    @property
    def individuals(self) -> list[str]:
        return list(self.project.individuals)

    # -- samples -----------------------------------------------------------------------------
    def samples(self, mode: str = "train") -> list[Sample]:
        check_mode(mode)
        return self._samples(self.train_images if mode == "train" else self.test_images)

    def _samples(self, images: list[str]) -> list[Sample]:
        index = {p: i for i, p in enumerate(self.labels.image_paths)}
        root = self.project.project_path
        return [(str(root / p), self.labels.keypoints[index[p]].copy()) for p in images]

    def unique_keypoints(self, image_path: str) -> np.ndarray | None:
        """(U, 3) unique-bodypart keypoints of one image (None when the project has none)."""
        if self.labels.unique_keypoints is None:
            return None
        rel = Path(image_path).relative_to(self.project.project_path).as_posix()
        if self._row is None:
            self._row = {p: i for i, p in enumerate(self.labels.image_paths)}
        return self.labels.unique_keypoints[self._row[rel]].copy()

