"""train_network: train one shuffle of a DeepLabCut project, as ``deeplabcut.train_network``."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from dlc_train.data.dataset import PoseDataset, collate
from dlc_train.data.dlcloader import DLCLoader
from dlc_train.data.transforms import build_transforms
from dlc_train.runners.snapshots import SnapshotError
from dlc_train.runners.train import PoseTrainingRunner, seed_everything

logger = logging.getLogger(__name__)


def load_or_make_pose_config(loader: DLCLoader, net_type: str | None = None) -> dict:
    """The shuffle's pytorch_config.yaml; made (and written) from the project when missing."""
    from dlc_train.config import make_pytorch_pose_config, read_config_as_dict, write_config

    path = loader.pose_config_path
    if path.is_file():
        cfg = read_config_as_dict(path)
        if net_type and cfg.get("net_type") != net_type:
            raise ValueError(f"{path} is a {cfg.get('net_type')} config; net_type {net_type} "
                             "conflicts with it: train another shuffle or delete that folder")
        return cfg
    cfg = make_pytorch_pose_config(loader.project.cfg, path, net_type=net_type)
    write_config(path, cfg)
    logger.info("wrote %s", path)
    return cfg


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
                  net_type: str | None = None) -> Path:
    """Trains a shuffle; returns its train folder (pytorch_config.yaml, snapshots, stats).

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
    """
    import dlc_train.models  # noqa: F401  (registers every component)
    from dlc_train.config import update_config, write_config
    from dlc_train.models.model import PoseModel

    loader = DLCLoader(config_path, shuffle=shuffle, trainset_index=trainset_index)
    cfg = load_or_make_pose_config(loader, net_type=net_type)
    if pytorch_config_overrides:
        cfg = update_config(cfg, pytorch_config_overrides)
        write_config(loader.pose_config_path, cfg)
    settings = cfg.setdefault("train_settings", {})
    if epochs is not None:
        settings["epochs"] = int(epochs)
    if batch_size is not None:
        settings["batch_size"] = int(batch_size)
    seed = int(settings.get("seed") or 42)
    seed_everything(seed)

    model = PoseModel.build(cfg["model"])
    train_folder = loader.train_folder
    runner = PoseTrainingRunner.from_config(cfg, model, train_folder, device=device)

    resume_from = cfg.get("resume_training_from")
    if resume_from:
        runner.resume(Path(resume_from))
    elif resume:
        if runner.snapshots.latest() is None:
            raise SnapshotError(f"resume=True but no snapshot in {train_folder}")
        runner.resume()
    # Reseed after resuming so the continued run does not replay the first epochs' draws.
    seed_everything(seed + runner.start_epoch - 1)

    train_loader, test_loader = _loaders(cfg, loader, max_train_images, seed,
                                         runner.start_epoch)
    runner.fit(train_loader, test_loader, int(settings.get("epochs", 200)))
    return train_folder
