"""train_network: train one shuffle of a DeepLabCut project, as ``deeplabcut.train_network``."""
from __future__ import annotations

import copy
import difflib
import logging
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from dlc_train.data.dataset import PoseDataset, collate
from dlc_train.data.dlcloader import DLCLoader
from dlc_train.data.transforms import build_transforms
from dlc_train.runners.snapshots import SnapshotError
from dlc_train.runners.train import PoseTrainingRunner, seed_everything

logger = logging.getLogger(__name__)


def read_or_make_pose_config(loader: DLCLoader, net_type: str | None = None) -> tuple[dict, bool]:
    """The shuffle's pytorch_config.yaml, and whether it is on disk.

    When missing, it is made from the project but not written: train_network writes it once the
    overrides are checked and the run is known to start, so a refused run leaves no config.
    """
    from dlc_train.config import (ConfigError, make_pytorch_pose_config, read_config_as_dict)

    path = loader.pose_config_path
    if path.is_file():
        cfg = read_config_as_dict(path)
        if net_type and cfg.get("net_type") != net_type:
            raise ConfigError(f"{path} is a {cfg.get('net_type')} config; net_type {net_type} "
                              "conflicts with it: train another shuffle or delete that folder")
        return cfg, True
    try:
        cfg = make_pytorch_pose_config(loader.project.cfg, path, net_type=net_type)
    except ValueError as err:  # the project and the architecture do not fit together
        raise ConfigError(f"cannot make {path.name} for {loader.project.config_path}: "
                          f"{err}") from None
    return cfg, False


def _loaders(cfg: dict, loader: DLCLoader, max_train_images: int | None, seed: int,
             start_epoch: int = 1) -> tuple[DataLoader, DataLoader | None]:
    data = cfg.get("data") or {}
    settings = cfg.get("train_settings") or {}
    bodyparts = loader.project.bodyparts
    train_samples = loader.train_samples()
    if max_train_images is not None:
        train_samples = train_samples[:int(max_train_images)]
    if not train_samples:
        raise ValueError(f"shuffle {loader.shuffle} has no training images")
    train_set = PoseDataset(train_samples, build_transforms(data.get("train"), bodyparts),
                            bodyparts, seed=seed)
    workers = int(settings.get("dataloader_workers") or 0)
    pin = bool(settings.get("dataloader_pin_memory"))
    # Offset by the start epoch so a resumed run does not replay the first epochs' order.
    generator = torch.Generator().manual_seed(seed + start_epoch - 1)
    train_loader = DataLoader(train_set, batch_size=int(settings.get("batch_size", 1)),
                              shuffle=True, num_workers=workers, collate_fn=collate,
                              pin_memory=pin, generator=generator, drop_last=False)
    test_samples = loader.test_samples()
    test_loader = None
    if test_samples:
        test_set = PoseDataset(test_samples, build_transforms(data.get("inference"), bodyparts),
                               bodyparts, seed=seed)
        # Full frames of one project usually share a size; collate pads when they do not.
        test_loader = DataLoader(test_set, batch_size=1, shuffle=False, num_workers=workers,
                                 collate_fn=collate, pin_memory=pin)
    return train_loader, test_loader


def train_network(config_path: str | Path, shuffle: int = 1, trainset_index: int = 0,
                  epochs: int | None = None, batch_size: int | None = None,
                  device: str | None = None, resume: bool = False,
                  max_train_images: int | None = None,
                  pytorch_config_overrides: dict[str, Any] | None = None,
                  net_type: str | None = None, progress: bool = True,
                  overwrite: bool = False) -> Path:
    """Trains a shuffle; returns its train folder (pytorch_config.yaml, snapshots, stats).

    Bad arguments raise ConfigError (a ValueError) before anything under the shuffle's train
    folder is written: epochs < 1, an unknown net_type, an override key the config does not have
    (see dlc_train.config.overrides), or resuming a shuffle that already reached ``epochs``.

    Args:
        config_path: the project's config.yaml.
        shuffle, trainset_index: which shuffle / TrainingFraction entry.
        epochs: total epochs (overrides ``train_settings.epochs``; counts resumed epochs).
        batch_size: overrides ``train_settings.batch_size``.
        device: "auto", "cpu", "cuda", ... (overrides ``runner.device``).
        resume: continue from the latest snapshot in the train folder (or from
            ``resume_training_from`` when the config sets it).
        max_train_images: use only the first N training images (quick runs, tests).
        pytorch_config_overrides: values merged into the pytorch_config (dotted keys such as
            ``"runner.eval_interval"`` or nested dicts); when given, the merged config is
            written back so that the snapshots and their config agree.
        net_type: architecture used when the pytorch_config.yaml has to be made.
        progress: a progress bar per epoch and one printed line per epoch (and where a resumed
            run continues from), as DeepLabCut prints; False: logging only.
        overwrite: train again from epoch 1 in a shuffle that already has snapshots, removing
            them (and ``train_stats.csv``) once every check has passed. Without it (and without
            ``resume``) such a shuffle is refused: a new run would silently replace them.
    """
    from dlc_train.config import ConfigError, available_net_types, update_config, write_config
    from dlc_train.config.overrides import check_override_keys

    if epochs is not None and int(epochs) < 1:
        raise ConfigError(f"epochs must be at least 1, got {epochs}")
    known = available_net_types()
    if net_type is not None and net_type not in known:
        close = difflib.get_close_matches(net_type, known, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise ConfigError(f"unknown net type {net_type!r}; {hint}available: {', '.join(known)}")

    import dlc_train.models  # noqa: F401  (registers every component)
    from dlc_train.models.pretrained import build_pose_model_for_training

    loader = DLCLoader(config_path, shuffle=shuffle, trainset_index=trainset_index)
    cfg, on_disk = read_or_make_pose_config(loader, net_type=net_type)
    check_override_keys(cfg, pytorch_config_overrides)
    if pytorch_config_overrides:
        cfg = update_config(cfg, pytorch_config_overrides)
    # Written just before training; epochs / batch_size below are arguments of this run only.
    to_write = copy.deepcopy(cfg) if pytorch_config_overrides or not on_disk else None
    settings = cfg.setdefault("train_settings", {})
    if epochs is not None:
        settings["epochs"] = int(epochs)
    if batch_size is not None:
        settings["batch_size"] = int(batch_size)
    total_epochs = _total_epochs(settings)
    seed = int(settings.get("seed") or 42)
    seed_everything(seed)

    # ImageNet / COCO / SuperAnimal weights load here, when training starts (pretrained: true,
    # train_settings.weight_init), never when a model is only built to be loaded or exported.
    model = build_pose_model_for_training(
        cfg["model"], weight_init=settings.get("weight_init"),
        resume=bool(resume or cfg.get("resume_training_from")))
    train_folder = loader.train_folder
    runner = PoseTrainingRunner.from_config(cfg, model, train_folder, device=device,
                                            progress=progress)

    resume_from = cfg.get("resume_training_from")
    earlier = [] if resume_from or resume else runner.snapshots.snapshots()
    if earlier and not overwrite:
        latest = runner.snapshots.latest()
        raise SnapshotError(f"{train_folder} already holds {len(earlier)} snapshot(s), the "
                            f"latest {latest.path.name} (epoch {latest.epoch}): pass resume=True "
                            "to continue them, or overwrite=True to train again from epoch 1 "
                            "and replace them")
    if resume_from or resume:
        if resume_from:
            snapshot, which = Path(resume_from), "resume_training_from"
        else:
            latest = runner.snapshots.latest()
            if latest is None:
                raise SnapshotError(f"resume=True but no snapshot in {train_folder}")
            snapshot, which = latest.path, "the latest snapshot"
        done = runner.resume(snapshot)
        if done >= total_epochs:
            # Refused rather than a silent success: the user asked for training and got none.
            raise ConfigError(f"nothing to train: {which} {snapshot} is at epoch {done} and "
                              f"epochs is {total_epochs}; --epochs counts the resumed epochs "
                              f"too, so it must be larger than {done}")
        if progress:
            tqdm.write(f"resuming from {snapshot} (epoch {done}); training epochs {done + 1} "
                       f"to {total_epochs}")
    # Reseed after resuming so the continued run does not replay the first epochs' draws.
    seed_everything(seed + runner.start_epoch - 1)

    train_loader, test_loader = _loaders(cfg, loader, max_train_images, seed,
                                         runner.start_epoch)
    if to_write is not None:
        write_config(loader.pose_config_path, to_write)
        logger.info("wrote %s", loader.pose_config_path)
    for snapshot in earlier:  # only with overwrite: asked for, and every check has passed
        snapshot.path.unlink(missing_ok=True)
    if earlier:
        runner.log_path.unlink(missing_ok=True)
    runner.fit(train_loader, test_loader, total_epochs)
    return train_folder


def _total_epochs(settings: dict) -> int:
    from dlc_train.config import ConfigError

    value = settings.get("epochs", 200)
    try:
        epochs = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"train_settings.epochs must be a whole number, got {value!r}") from None
    if epochs < 1:
        raise ConfigError(f"train_settings.epochs must be at least 1, got {epochs}")
    return epochs
