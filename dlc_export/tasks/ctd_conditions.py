"""Finding a CTD model's conditions model: the bottom-up shuffle ``inference.conditions``
names, as DeepLabCut's forms allow."""
from __future__ import annotations

import re
from pathlib import Path

from dlc_export.config_view import PoseConfigView
from dlc_export.errors import ExportError
from dlc_export.source import pick_snapshot, project_config

_SHUFFLE = re.compile(r"^(?P<stem>.*-trainset\d+)shuffle(?P<n>\d+)$")


def find_conditions_model(config: PoseConfigView) -> tuple[Path, Path]:
    """(pytorch_config.yaml, snapshot) of the bottom-up model named by ``inference.conditions``.

    Accepts DeepLabCut's forms: ``{shuffle: N}`` with ``snapshot: name`` or ``snapshot_index: i``
    (default -1: the best snapshot, else the last), looked up beside the CTD shuffle in the same
    iteration folder (with ``trainset_index``: in the project, as DeepLabCut's loader does);
    or ``{config_path, snapshot_path}``. ``modelprefix`` is refused.
    """
    where, conditions = config.where, config.conditions
    if conditions is None:
        raise ExportError(f"{where}: inference.conditions is not set: a CTD bundle needs the "
                          "bottom-up model that gives its conditions; set inference.conditions "
                          "to {shuffle: N} of a bottom-up shuffle, or pass conditions_config= "
                          "and conditions_snapshot=")
    if isinstance(conditions, (str, Path)):
        raise ExportError(f"{where}: inference.conditions is a predictions file ({conditions}); "
                          "a bundle analyzes new videos, so it needs the bottom-up model "
                          "itself: set inference.conditions to {shuffle: N} of a bottom-up "
                          "shuffle, or pass conditions_config= and conditions_snapshot=")
    if not isinstance(conditions, dict):
        raise ExportError(f"{where}: inference.conditions must be {{shuffle: N}} (with snapshot "
                          f"or snapshot_index) or {{config_path, snapshot_path}}, got "
                          f"{conditions!r}")
    if conditions.get("config_path") and conditions.get("snapshot_path"):
        return Path(conditions["config_path"]), Path(conditions["snapshot_path"])
    if "shuffle" not in conditions:
        raise ExportError(f"{where}: inference.conditions {conditions!r} names no shuffle")
    if conditions.get("modelprefix"):
        raise ExportError(f"{where}: inference.conditions uses modelprefix "
                          f"{conditions['modelprefix']!r}, which this exporter does not look up; "
                          "pass conditions_config= and conditions_snapshot=")
    shuffle = int(conditions["shuffle"])
    if conditions.get("trainset_index") is not None:
        train = _project_train_folder(config, shuffle, int(conditions["trainset_index"]))
    else:  # DeepLabCut's default trainset_index 0 is the CTD shuffle's own, in practice
        train = _shuffle_train_folder(config.path, shuffle)
    if conditions.get("snapshot"):
        snapshot = train / str(conditions["snapshot"])
        if not snapshot.is_file():
            raise ExportError(f"{where}: conditions snapshot {snapshot} does not exist")
        return train / "pytorch_config.yaml", snapshot
    index = conditions.get("snapshot_index")
    return train / "pytorch_config.yaml", pick_snapshot(
        train, -1 if index is None else int(index), what=f"{where}: conditions shuffle: ")


def _project_train_folder(config: PoseConfigView, shuffle: int, trainset_index: int) -> Path:
    """The train folder of (shuffle, trainset_index) of the CTD model's project."""
    from dlc_train.data.dlcloader import DLCLoader
    from dlc_train.data.project import ProjectError

    pytorch_config_path = config.path
    project = project_config(config)
    if project is None:
        raise ExportError(f"{pytorch_config_path}: inference.conditions names trainset_index "
                          f"{trainset_index}, but the project's config.yaml was not found; pass "
                          "conditions_config= and conditions_snapshot=")
    try:
        loader = DLCLoader(Path(project["project_path"]) / "config.yaml", shuffle=shuffle,
                           trainset_index=trainset_index)
        train = loader.train_folder
    except (ProjectError, OSError, ValueError, KeyError) as err:
        raise ExportError(f"{pytorch_config_path}: inference.conditions (shuffle {shuffle}, "
                          f"trainset_index {trainset_index}): {err}") from None
    if not (train / "pytorch_config.yaml").is_file():
        raise ExportError(f"{pytorch_config_path}: the conditions shuffle {shuffle} was not found "
                          f"({train / 'pytorch_config.yaml'} is missing)")
    return train


def _shuffle_train_folder(pytorch_config_path: Path, shuffle: int) -> Path:
    """``.../iteration-i/<Task><date>-trainset<p>shuffle<shuffle>/train`` next to the CTD one."""
    own = pytorch_config_path.resolve().parent.parent  # <...>shuffleN (…/train is below it)
    iteration = own.parent
    match = _SHUFFLE.match(own.name)
    candidates = []
    if match:
        candidates.append(iteration / f"{match['stem']}shuffle{shuffle}")
    candidates.extend(sorted(iteration.glob(f"*-trainset*shuffle{shuffle}")))
    for folder in candidates:
        if (folder / "train" / "pytorch_config.yaml").is_file():
            return folder / "train"
    raise ExportError(f"{pytorch_config_path}: the conditions shuffle {shuffle} was not found in "
                      f"{iteration} (no *shuffle{shuffle}/train/pytorch_config.yaml); create and "
                      "train it, or pass conditions_config= and conditions_snapshot=")
