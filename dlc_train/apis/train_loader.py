"""``train(loader, ...)``: train a pose model or a detector on any Loader, as DeepLabCut 3's
``train``; and ``train_coco`` for a COCO keypoint dataset (``dlc train --coco DIR``).

``train_network`` (a DeepLabCut project's shuffle) reads the project and calls ``train`` (twice
for a top-down model: its detector, then its pose model); these take the data from a loader
(``DLCLoader``, ``COCOLoader``) and the model from a pytorch_config dict, and write snapshots
beside the loader's ``pytorch_config.yaml``.

A run is checked before anything is written or trained (``prepare_training``: the config's
values, earlier snapshots, what resuming would continue, the datasets), then built (model,
runner, resumed state: ``TrainingRun.build``), then trained (``TrainingRun.fit``).
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from dlc_train.data.base import Loader
from dlc_train.data.collate import build_collate
from dlc_train.data.dataset import make_dataloaders
from dlc_train.data.transforms import Augmentation, build_transforms
from dlc_train.runners.snapshots import Snapshot, SnapshotError, SnapshotManager, load_snapshot
from dlc_train.runners.train import PoseTrainingRunner, seed_everything
from dlc_train.task import Task

logger = logging.getLogger(__name__)

CROP_TASKS = (Task.TOP_DOWN, Task.COND_TOP_DOWN)


@dataclass
class TrainingRun:
    """One model's run, checked by ``prepare_training``; ``build`` makes the model and its
    runner (resuming the snapshot), ``fit`` trains (removing the earlier snapshots first, when
    ``overwrite`` asked for it)."""

    cfg: dict
    task: Task
    folder: Path
    epochs: int
    seed: int
    snapshot: Path | None
    earlier: list[Snapshot]
    train_set: Any
    test_set: Any
    device: str | None = None
    progress: bool = False
    collate_fn: Any = None
    runner: PoseTrainingRunner | None = field(default=None, repr=False)

    def build(self) -> PoseTrainingRunner:
        import dlc_train.models  # noqa: F401  (registers every component)
        from dlc_train.models.pretrained import (build_detector_for_training,
                                                 build_pose_model_for_training)
        from dlc_train.runners.detector import DetectorTrainingRunner

        seed_everything(self.seed)
        init = self.cfg["train_settings"].get("weight_init")
        resume = self.snapshot is not None
        # ImageNet / COCO / SuperAnimal weights load here, when training starts, never when a
        # model is only built to be loaded or exported. Detectors start from COCO weights
        # unless their config says pretrained: false, as DeepLabCut's trainer does.
        if self.task == Task.DETECT:
            model = build_detector_for_training(self.cfg["model"], weight_init=init,
                                                resume=resume, pretrained_default=True)
            make = DetectorTrainingRunner.from_config
        else:
            model = build_pose_model_for_training(self.cfg["model"], weight_init=init,
                                                  resume=resume)
            make = PoseTrainingRunner.from_config
        self.runner = make(self.cfg, model, self.folder, device=self.device,
                           progress=self.progress)
        if self.snapshot is not None:
            done = self.runner.resume(self.snapshot)
            if self.runner.progress:  # False on torchrun's other ranks: they stay silent
                tqdm.write(f"resuming from {self.snapshot} (epoch {done}); training epochs "
                           f"{done + 1} to {self.epochs}")
        return self.runner

    def fit(self) -> Path:
        runner = self.runner or self.build()
        # Reseed after resuming so the continued run does not replay the first epochs' draws.
        seed_everything(self.seed + runner.start_epoch - 1)
        train_batches, test_batches = make_dataloaders(
            self.train_set, self.test_set, self.cfg["train_settings"], self.seed,
            runner.start_epoch, self.collate_fn)
        logger.info("training a %s model on %d items, testing on %d", self.task.snake_name,
                    len(self.train_set), len(self.test_set))
        if runner.is_main:  # only with overwrite, once every check has passed
            for snapshot in self.earlier:
                snapshot.path.unlink(missing_ok=True)
            if self.earlier:
                runner.log_path.unlink(missing_ok=True)
        runner.fit(train_batches, test_batches, self.epochs)
        return self.folder


def train(loader: Loader, run_config: dict | None = None, task: Task | str | None = None,
          device: str | None = None, snapshot_path: str | Path | None = None,
          transform: Augmentation | None = None,
          inference_transform: Augmentation | None = None,
          max_snapshots_to_keep: int | None = None, progress: bool = False,
          resume: bool = False, overwrite: bool = False,
          config_to_write: dict | None = None, max_train_images: int | None = None) -> Path:
    """Builds the model of ``run_config`` and fits it to the loader's data; returns the folder
    holding the snapshots (the folder of ``loader.pose_config_path``).

    Args:
        loader: the data (``create_dataset`` for "train" and "test").
        run_config: the pytorch_config dict (default: ``loader.model_cfg``), or for
            ``Task.DETECT`` its ``detector`` section; not modified.
        task: the config's ``method`` by default: bottom-up (whole images), top-down or
            conditional top-down (crops of each individual; conditions generated from the
            ground truth), or ``Task.DETECT`` (the detector of a top-down model; snapshots
            ``snapshot-detector-XXX.pt``).
        device: "cpu", "cuda", "auto", ... (default: the config's).
        snapshot_path: continue from this snapshot (its weights, epoch, scheduler, optimizer
            when saved) up to ``train_settings.epochs`` (default: the config's
            ``resume_training_from``).
        transform, inference_transform: pipelines replacing those of ``data.train`` /
            ``data.inference`` (top-down: applied before the crop; the crop is normalized as
            the config's section says).
        max_snapshots_to_keep: overrides ``runner.snapshots.max_snapshots``.
        progress: a progress bar and one printed line per epoch.
        resume: continue from the latest snapshot in the folder (when no snapshot_path).
        overwrite: train from epoch 1 in a folder that holds snapshots, removing them once every
            check has passed; without it such a folder is refused.
        config_to_write: written to ``loader.pose_config_path`` once every check has passed,
            just before training (a new config, or one with overrides).
        max_train_images: train on the first N training images only.

    Raises:
        ConfigError: a bad config value, or nothing left to train; SnapshotError: earlier
            snapshots without ``overwrite``, or a snapshot that cannot be resumed.
    """
    run = prepare_training(loader, run_config, task, device=device, snapshot_path=snapshot_path,
                           transform=transform, inference_transform=inference_transform,
                           max_snapshots_to_keep=max_snapshots_to_keep, progress=progress,
                           resume=resume, overwrite=overwrite,
                           max_train_images=max_train_images)
    run.build()
    write_pose_config(loader, config_to_write)
    return run.fit()


def write_pose_config(loader: Loader, config: dict | None) -> None:
    """Writes the run's config beside its snapshots (under torchrun: rank 0 only)."""
    from dlc_train.runners import distributed

    if config is not None and distributed.is_main_process():
        from dlc_train.config import write_config

        write_config(loader.pose_config_path, config)
        logger.info("wrote %s", loader.pose_config_path)


def prepare_training(loader: Loader, run_config: dict | None = None,
                     task: Task | str | None = None, *, device: str | None = None,
                     snapshot_path: str | Path | None = None,
                     transform: Augmentation | None = None,
                     inference_transform: Augmentation | None = None,
                     max_snapshots_to_keep: int | None = None, progress: bool = False,
                     resume: bool = False, overwrite: bool = False,
                     max_train_images: int | None = None, dataset_config: dict | None = None,
                     lenient_resume: bool = False) -> TrainingRun | None:
    """Checks a run and makes its datasets, writing and building nothing (arguments: see
    ``train``).

    Args:
        dataset_config: the pytorch_config whose ``data`` section makes the boxes
            (``bbox_margin``; a detector's run_config is the ``detector`` section, without it).
        lenient_resume: ``resume`` continues what exists: without a snapshot the run starts
            from epoch 1, and a snapshot already at its epochs returns None (nothing to do) instead of
            raising (the two models of a top-down shuffle, resumed together).
    """
    from dlc_train.config import ConfigError

    cfg = copy.deepcopy(run_config if run_config is not None else loader.model_cfg)
    if task is None:
        task = cfg.get("method") or "bu"
    try:
        task = task if isinstance(task, Task) else Task.from_str(str(task))
    except ValueError as err:
        raise ConfigError(f"method: {err}") from None
    if max_snapshots_to_keep is not None:
        cfg.setdefault("runner", {}).setdefault("snapshots", {})["max_snapshots"] = \
            int(max_snapshots_to_keep)
    settings = cfg.setdefault("train_settings", {})
    epochs = _epochs(settings)
    folder = Path(loader.pose_config_path).parent
    default_prefix = "snapshot-detector" if task == Task.DETECT else "snapshot"
    snapshots = SnapshotManager(folder, prefix=(cfg.get("runner") or {}).get("snapshot_prefix")
                                or default_prefix)
    which = ""
    if snapshot_path is None and cfg.get("resume_training_from"):
        snapshot_path, which = cfg["resume_training_from"], "resume_training_from "
    if snapshot_path is None and resume:
        latest = snapshots.latest()
        if latest is None and not lenient_resume:
            raise SnapshotError(f"resume=True but no snapshot in {folder}")
        if latest is not None:
            snapshot_path, which = latest.path, "the latest snapshot "
    earlier = [] if snapshot_path is not None else snapshots.snapshots()
    if earlier and not overwrite:
        latest = snapshots.latest()
        raise SnapshotError(f"{folder} already holds {len(earlier)} snapshot(s), the latest "
                            f"{latest.path.name} (epoch {latest.epoch}): pass resume=True to "
                            "continue them, or overwrite=True to train again from epoch 1 and "
                            "replace them")
    if snapshot_path is not None:
        snapshot_path = Path(snapshot_path)
        done = int((load_snapshot(snapshot_path).get("metadata") or {}).get("epoch", 0))
        if done >= epochs and lenient_resume:
            return None
        if done >= epochs:
            # Refused rather than a silent success: the user asked for training and got none.
            raise ConfigError(f"nothing to train: {which}{snapshot_path} is at epoch {done} and "
                              f"epochs is {epochs}; --epochs counts the resumed epochs too, so "
                              f"it must be larger than {done}")
    seed = int(settings.get("seed") or 42)
    train_set, test_set = _datasets(loader, cfg, task, seed, transform, inference_transform,
                                    max_train_images, dataset_config)
    collate_fn = build_collate(((cfg.get("data") or {}).get("train") or {}).get("collate"), seed)
    return TrainingRun(cfg, task, folder, epochs, seed, snapshot_path, earlier, train_set,
                       test_set, device=device, progress=progress, collate_fn=collate_fn)


def _datasets(loader: Loader, cfg: dict, task: Task, seed: int,
              transform: Augmentation | None, inference_transform: Augmentation | None,
              max_train_images: int | None, dataset_config: dict | None) -> tuple[Any, Any]:
    """The train and test datasets of a run (top-down: crops, normalized after the crop)."""
    from dlc_train.data.top_down import split_normalization

    data = cfg.get("data") or {}
    if task == Task.DETECT and dataset_config is None:
        # The boxes' margin is the pose config's (data.bbox_margin), when the loader has one.
        try:
            dataset_config = loader.model_cfg
        except (AttributeError, ValueError):  # no such config (ConfigError is a ValueError)
            dataset_config = None
    sets = []
    for mode, given, section in (("train", transform, data.get("train")),
                                 ("test", inference_transform, data.get("inference"))):
        after_crop = None
        if task in CROP_TASKS:
            section, normalization = split_normalization(section)
            after_crop = build_transforms(normalization)
        if given is None:
            given = _build_transforms(section, loader.bodyparts, task)
        sets.append(loader.create_dataset(
            given, mode=mode, task=task, seed=seed, config=dataset_config or cfg,
            after_crop=after_crop, max_images=max_train_images if mode == "train" else None))
    if len(sets[0]) == 0:
        what = "labeled individual" if task in CROP_TASKS else "image"
        name = f"shuffle {loader.shuffle}" if hasattr(loader, "shuffle") else "the loader"
        raise ValueError(f"{name} has no training {what}s")
    return sets[0], sets[1]


def _build_transforms(section: dict | None, bodyparts: list[str], task: Task) -> Augmentation:
    if task != Task.DETECT:
        return build_transforms(section, bodyparts)
    # A detector learns boxes: hflip's warning about unswapped bodyparts does not concern it.
    transforms_logger = logging.getLogger("dlc_train.data.transforms")
    level = transforms_logger.level
    transforms_logger.setLevel(logging.ERROR)
    try:
        return build_transforms(section, bodyparts)
    finally:
        transforms_logger.setLevel(level)


def _epochs(settings: dict) -> int:
    from dlc_train.config import ConfigError

    value = settings.get("epochs", 200)
    try:
        epochs = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"train_settings.epochs must be a whole number, got {value!r}") from None
    if epochs < 1:
        raise ConfigError(f"train_settings.epochs must be at least 1, got {epochs}")
    return epochs


def train_coco(project_root: str | Path, pose_config_path: str | Path | None = None,
               net_type: str | None = None, epochs: int | None = None,
               batch_size: int | None = None, device: str | None = None,
               resume: bool = False, overwrite: bool = False,
               pytorch_config_overrides: dict[str, Any] | None = None,
               train_json_filename: str = "train.json",
               test_json_filename: str | None = "test.json", progress: bool = True) -> Path:
    """Trains a pose model on a COCO keypoint dataset; returns the snapshot folder.

    The model config is ``pose_config_path`` (default
    ``<project_root>/experiments/<net_type>/train/pytorch_config.yaml``); when it does not exist
    it is made for the dataset's bodyparts (``net_type``, default resnet_50) and written once
    every check has passed, as are overrides. The COCO files are checked first: a bad file is
    one line naming it and the fix, and nothing is written.

    Args:
        project_root: the COCO dataset folder (``annotations/``, ``images/``).
        pose_config_path, net_type: the model config, and the architecture of a new one.
        epochs, batch_size, device: this run's values (not written to the config).
        resume: continue from the latest snapshot beside the config.
        overwrite: train again from epoch 1, replacing the snapshots there.
        pytorch_config_overrides: as train_network's (checked keys, written to the config).
        train_json_filename, test_json_filename: files under ``annotations/``.
        progress: a progress bar and a line per epoch.
    """
    from dlc_train.config import (ConfigError, make_pytorch_pose_config, read_config_as_dict,
                                  update_config)
    from dlc_train.config.overrides import check_override_keys
    from dlc_train.data.coco import COCOLoader, coco_project_config

    if epochs is not None and int(epochs) < 1:
        raise ConfigError(f"epochs must be at least 1, got {epochs}")
    root = Path(project_root)
    if not root.is_dir():
        raise ConfigError(f"COCO dataset folder {root} not found")
    path = Path(pose_config_path) if pose_config_path is not None else \
        root / "experiments" / (net_type or "resnet_50") / "train" / "pytorch_config.yaml"
    on_disk = path.is_file()
    if on_disk:
        cfg = read_config_as_dict(path)
        if net_type and cfg.get("net_type") != net_type:
            raise ConfigError(f"{path} is a {cfg.get('net_type')} config; net_type {net_type} "
                              "conflicts with it: pass another config path or delete it")
    else:
        # Reads and checks the COCO files before anything is made.
        probe = COCOLoader(root, path, train_json_filename, test_json_filename, model_config={})
        project = coco_project_config(probe.train_data, probe.num_individuals, root)
        try:
            cfg = make_pytorch_pose_config(project, path, net_type=net_type)
        except ValueError as err:
            raise ConfigError(f"cannot make {path} for {root}: {err}") from None
    check_override_keys(cfg, pytorch_config_overrides)
    if pytorch_config_overrides:
        cfg = update_config(cfg, pytorch_config_overrides)
    loader = COCOLoader(root, path, train_json_filename, test_json_filename, model_config=cfg)
    run_cfg = copy.deepcopy(cfg)
    settings = run_cfg.setdefault("train_settings", {})
    if epochs is not None:
        settings["epochs"] = int(epochs)
    if batch_size is not None:
        settings["batch_size"] = int(batch_size)
    to_write = cfg if pytorch_config_overrides or not on_disk else None
    return train(loader, run_cfg, device=device, progress=progress, resume=resume,
                 overwrite=overwrite, config_to_write=to_write)
