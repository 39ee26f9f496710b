"""``train(loader, ...)``: train a pose model on any Loader, as DeepLabCut 3's ``train``; and
``train_coco`` for a COCO keypoint dataset (``dlc train --coco DIR``).

``train_network`` (a DeepLabCut project's shuffle) reads the project; these take the data from a
loader (``DLCLoader``, ``COCOLoader``) and the model from a pytorch_config dict, and write
snapshots beside the loader's ``pytorch_config.yaml``.
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from dlc_train.data.base import Loader
from dlc_train.data.dataset import make_dataloaders
from dlc_train.data.transforms import Augmentation, build_transforms
from dlc_train.runners.snapshots import SnapshotError
from dlc_train.runners.train import PoseTrainingRunner, seed_everything
from dlc_train.task import Task

logger = logging.getLogger(__name__)


def train(loader: Loader, run_config: dict | None = None, task: Task | str | None = None,
          device: str | None = None, snapshot_path: str | Path | None = None,
          transform: Augmentation | None = None,
          inference_transform: Augmentation | None = None,
          max_snapshots_to_keep: int | None = None, progress: bool = False,
          resume: bool = False, overwrite: bool = False,
          config_to_write: dict | None = None) -> Path:
    """Builds the model of ``run_config`` and fits it to the loader's data; returns the folder
    holding the snapshots (the folder of ``loader.pose_config_path``).

    Args:
        loader: the data (``create_dataset`` for "train" and "test").
        run_config: the pytorch_config dict (default: ``loader.model_cfg``); not modified.
        task: the model's task (default: the config's ``method``); bottom-up only, for now.
        device: "cpu", "cuda", "auto", ... (default: the config's).
        snapshot_path: continue from this snapshot (its weights, epoch, scheduler, optimizer
            when saved) up to ``train_settings.epochs``.
        transform, inference_transform: pipelines replacing those of ``data.train`` /
            ``data.inference``.
        max_snapshots_to_keep: overrides ``runner.snapshots.max_snapshots``.
        progress: a progress bar and one printed line per epoch.
        resume: continue from the latest snapshot in the folder (when no snapshot_path).
        overwrite: train from epoch 1 in a folder that holds snapshots, removing them once every
            check has passed; without it such a folder is refused.
        config_to_write: written to ``loader.pose_config_path`` once every check has passed,
            just before training (a new config, or one with overrides).

    Raises:
        ConfigError: a bad config value, or nothing left to train; SnapshotError: earlier
            snapshots without ``overwrite``, or a snapshot that cannot be resumed.
    """
    from dlc_train.config import ConfigError
    import dlc_train.models  # noqa: F401  (registers every component)
    from dlc_train.models.pretrained import build_pose_model_for_training

    cfg = copy.deepcopy(run_config if run_config is not None else loader.model_cfg)
    task = Task.from_str(str(cfg.get("method") or "bu")) if task is None else \
        task if isinstance(task, Task) else Task.from_str(str(task))
    if task != Task.BOTTOM_UP:
        raise ConfigError(f"train(loader): {task.snake_name} models are trained with "
                          "train_network on a DeepLabCut project; loaders train bottom-up "
                          "models only, for now")
    if max_snapshots_to_keep is not None:
        cfg.setdefault("runner", {}).setdefault("snapshots", {})["max_snapshots"] = \
            int(max_snapshots_to_keep)
    settings = cfg.setdefault("train_settings", {})
    epochs = _epochs(settings)
    seed = int(settings.get("seed") or 42)
    seed_everything(seed)

    model = build_pose_model_for_training(cfg["model"], weight_init=settings.get("weight_init"),
                                          resume=snapshot_path is not None)
    folder = Path(loader.pose_config_path).parent
    runner = PoseTrainingRunner.from_config(cfg, model, folder, device=device, progress=progress)
    if snapshot_path is None and resume:
        latest = runner.snapshots.latest()
        if latest is None:
            raise SnapshotError(f"resume=True but no snapshot in {folder}")
        snapshot_path = latest.path
    earlier = [] if snapshot_path is not None else runner.snapshots.snapshots()
    if earlier and not overwrite:
        latest = runner.snapshots.latest()
        raise SnapshotError(f"{folder} already holds {len(earlier)} snapshot(s), the latest "
                            f"{latest.path.name} (epoch {latest.epoch}): pass resume=True to "
                            "continue them, or overwrite=True to train again from epoch 1 and "
                            "replace them")
    if snapshot_path is not None:
        done = runner.resume(snapshot_path)
        if done >= epochs:
            raise ConfigError(f"nothing to train: {snapshot_path} is at epoch {done} and epochs "
                              f"is {epochs}; epochs counts the resumed epochs too, so it must "
                              f"be larger than {done}")
        if progress:
            tqdm.write(f"resuming from {snapshot_path} (epoch {done}); training epochs "
                       f"{done + 1} to {epochs}")
    seed_everything(seed + runner.start_epoch - 1)

    data = cfg.get("data") or {}
    if transform is None:
        transform = build_transforms(data.get("train"), loader.bodyparts)
    if inference_transform is None:
        inference_transform = build_transforms(data.get("inference"), loader.bodyparts)
    train_set = loader.create_dataset(transform, mode="train", task=task, seed=seed)
    test_set = loader.create_dataset(inference_transform, mode="test", task=task, seed=seed)
    train_batches, test_batches = make_dataloaders(train_set, test_set, settings, seed,
                                                   runner.start_epoch)
    logger.info("training on %d images, testing on %d; transforms: %r", len(train_set),
                len(test_set), transform)
    if config_to_write is not None:
        from dlc_train.config import write_config

        write_config(loader.pose_config_path, config_to_write)
        logger.info("wrote %s", loader.pose_config_path)
    for snapshot in earlier:  # only with overwrite, once every check has passed
        snapshot.path.unlink(missing_ok=True)
    if earlier:
        runner.log_path.unlink(missing_ok=True)
    runner.fit(train_batches, test_batches, epochs)
    return folder


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
