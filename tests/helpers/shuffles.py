"""A trained-shuffle stand-in: ``pytorch_config.yaml`` and a seeded random-weight snapshot of
the model it describes, as DeepLabCut 3 lays them out (``<folder>/pytorch_config.yaml``,
``<folder>/snapshot-001.pt``)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from dlc_train.config import make_pytorch_pose_config, update_config, write_config
from dlc_train.models import PoseModel


@dataclass
class Shuffle:
    config_path: Path
    snapshot: Path
    model: PoseModel
    cfg: dict


def write_shuffle(folder: Path, project: dict | None = None, net_type: str = "resnet_tiny", *,
                  seed: int = 0, overrides: dict | None = None,
                  prepare: Callable[[PoseModel], None] | None = None,
                  edit_config: Callable[[dict], None] | None = None,
                  snapshot_name: str = "snapshot-001.pt") -> Shuffle:
    """Writes the shuffle into ``folder`` (created).

    Args:
        project: the project's config.yaml fields (default: single-animal a, b, c).
        overrides: dotted ``update_config`` changes to the pytorch_config.
        prepare: changes the model (eval mode) before its weights are saved.
        edit_config: changes the config after the model is built, before it is written (a
            config that no longer matches its snapshot, for error tests).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config_path = folder / "pytorch_config.yaml"
    project = project or {"bodyparts": ["a", "b", "c"], "multianimalproject": False}
    cfg = make_pytorch_pose_config(project, config_path, net_type)
    if overrides:
        cfg = update_config(cfg, overrides)
    torch.manual_seed(seed)
    model = PoseModel.build(cfg["model"]).eval()
    if prepare is not None:
        prepare(model)
    snapshot = folder / snapshot_name
    torch.save({"metadata": {}, "model": model.state_dict()}, snapshot)
    if edit_config is not None:
        edit_config(cfg)
    write_config(config_path, cfg)
    return Shuffle(config_path, snapshot, model, cfg)
