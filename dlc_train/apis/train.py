"""train_network: train one shuffle of a DeepLabCut project, as ``deeplabcut.train_network``."""
from __future__ import annotations

import copy
import difflib
import logging
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from dlc_train.apis.train_loader import prepare_training, write_pose_config
from dlc_train.data.dlcloader import DLCLoader
from dlc_train.runners import distributed
from dlc_train.task import Task

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


def train_network(config_path: str | Path, shuffle: int = 1, trainset_index: int = 0,
                  epochs: int | None = None, batch_size: int | None = None,
                  device: str | None = None, resume: bool = False,
                  max_train_images: int | None = None,
                  pytorch_config_overrides: dict[str, Any] | None = None,
                  net_type: str | None = None, progress: bool = True,
                  overwrite: bool = False, detector_epochs: int | None = None) -> Path:
    """Trains a shuffle; returns its train folder (pytorch_config.yaml, snapshots, stats).

    As DeepLabCut's ``train_network``: the loader and the config are made here, the training
    takes ``train(loader, ...)``'s steps (``prepare_training``, then build and fit). A top-down shuffle (``method: td``) trains its detector first
    (the config's ``detector`` section; ``snapshot-detector-XXX.pt``,
    ``learning_stats_detector.csv``), then its pose model on crops of each individual.

    Bad arguments raise ConfigError (a ValueError) before anything under the shuffle's train
    folder is written: epochs < 1, an unknown net_type, an override key the config does not have
    (see dlc_train.config.overrides), resuming a shuffle that already reached ``epochs``, or a
    top-down config without a ``detector`` section (unless ``detector_epochs=0``).

    Args:
        config_path: the project's config.yaml.
        shuffle, trainset_index: which shuffle / TrainingFraction entry.
        epochs: total epochs (overrides ``train_settings.epochs``; counts resumed epochs).
        batch_size: overrides ``train_settings.batch_size``.
        device: "auto", "cpu", "cuda", ... (overrides ``runner.device``).
        resume: continue from the latest snapshot in the train folder (or from
            ``resume_training_from`` when the config sets it); a top-down shuffle's detector
            continues from its latest detector snapshot, and is skipped when it already
            reached its epochs.
        max_train_images: use only the first N training images (quick runs, tests).
        pytorch_config_overrides: values merged into the pytorch_config (dotted keys such as
            ``"runner.eval_interval"`` or nested dicts); when given, the merged config is
            written back so that the snapshots and their config agree.
        net_type: architecture used when the pytorch_config.yaml has to be made.
        progress: a progress bar per epoch and one printed line per epoch (and where a resumed
            run continues from), as DeepLabCut prints; False: logging only.
        overwrite: train again from epoch 1 in a shuffle that already has snapshots, removing
            them (and their stats) once every check has passed. Without it (and without
            ``resume``) such a shuffle is refused: a new run would silently replace them.
        detector_epochs: top-down shuffles: the detector's total epochs (overrides
            ``detector.train_settings.epochs``); 0 skips the detector's training.
    """
    from dlc_train.config import ConfigError, available_net_types, update_config
    from dlc_train.config.overrides import check_override_keys

    if epochs is not None and int(epochs) < 1:
        raise ConfigError(f"epochs must be at least 1, got {epochs}")
    if detector_epochs is not None and int(detector_epochs) < 0:
        raise ConfigError(f"detector epochs must be 0 (no detector training) or more, got "
                          f"{detector_epochs}")
    known = available_net_types()
    if net_type is not None and net_type not in known:
        close = difflib.get_close_matches(net_type, known, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise ConfigError(f"unknown net type {net_type!r}; {hint}available: {', '.join(known)}")

    # Under torchrun rank 0 writes the shuffle's split first; the other ranks then read it.
    with distributed.main_process_first(device):
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
    common = {"device": device, "progress": progress, "resume": resume,
              "overwrite": overwrite, "max_train_images": max_train_images}
    detector_cfg = _detector_run_config(loader, cfg, detector_epochs)
    if detector_cfg is None:
        pose = prepare_training(loader, cfg, **common)
        detector = None
    else:
        # Resuming a top-down shuffle continues each model from what it has: a detector
        # interrupted before the pose model started, a pose model after a finished detector.
        detector = prepare_training(loader, detector_cfg, Task.DETECT, dataset_config=cfg,
                                    lenient_resume=True, **common)
        pose = prepare_training(loader, cfg, lenient_resume=True, **common)
        found = any(run is None or run.snapshot is not None for run in (detector, pose))
        if resume and (not found or (detector is None and pose is None)):
            prepare_training(loader, cfg, **common)  # raises: nothing to resume, or to train
    if detector is not None:
        _announce(progress, f"training the detector ({detector.cfg['model'].get('type')}, "
                            f"{detector.epochs} epochs, snapshot-detector-XXX.pt)")
        detector.build()
        write_pose_config(loader, to_write)
        detector.fit()
        to_write = None
        _announce(progress, f"training the pose model ({pose.epochs} epochs, on crops)")
    if pose is None:  # resumed: only the detector had epochs left
        write_pose_config(loader, to_write)
        return loader.train_folder
    pose.build()
    write_pose_config(loader, to_write)
    return pose.fit()


def _detector_run_config(loader: DLCLoader, cfg: dict, epochs: int | None) -> dict | None:
    """The detector's run config of a top-down shuffle (None: no detector to train)."""
    from dlc_train.config import ConfigError

    method = str(cfg.get("method") or "bu").lower()
    if method not in Task.TOP_DOWN.aliases or epochs == 0:
        return None
    section = cfg.get("detector")
    if not isinstance(section, dict) or not isinstance(section.get("model"), dict):
        raise ConfigError(f"{loader.pose_config_path} is a top-down config (method: td) without "
                          "a 'detector' section with a 'model': make the config again (delete "
                          "it), or train only the pose model with 0 detector epochs "
                          "(--detector-epochs 0)")
    run = copy.deepcopy(section)
    settings = run.setdefault("train_settings", {}) or {}
    if epochs is not None:
        settings["epochs"] = int(epochs)
    # As DeepLabCut: the detector runs on the pose model's device and weight_init.
    run.setdefault("device", cfg.get("device"))
    settings.setdefault("weight_init", (cfg.get("train_settings") or {}).get("weight_init"))
    return run


def _announce(progress: bool, line: str) -> None:
    logger.info("%s", line)
    if progress and distributed.is_main_process():  # torchrun: rank 0 speaks
        tqdm.write(line)
