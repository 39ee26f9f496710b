"""Export from a DeepLabCut project: config.yaml + shuffle + snapshot index -> bundle."""
from __future__ import annotations

import re
from pathlib import Path

from dlc_export.export import ExportResult, export_bundle
from dlc_export.onnx_export import ExportError
from dlc_train.data.dlcloader import DLCLoader

_EPOCH = re.compile(r"snapshot-(?:best-)?(\d+)\.pt$")


def list_snapshots(train_folder: Path) -> list[Path]:
    """Snapshots by epoch, the best one (if any) last, as DeepLabCut 3 orders them."""
    regular = [p for p in train_folder.glob("snapshot-*.pt")
               if _EPOCH.search(p.name) and "-best-" not in p.name]
    best = [p for p in train_folder.glob("snapshot-best-*.pt") if _EPOCH.search(p.name)]
    by_epoch = lambda p: int(_EPOCH.search(p.name).group(1))  # noqa: E731
    return sorted(regular, key=by_epoch) + sorted(best, key=by_epoch)[-1:]


def export_from_project(config_path: str | Path, shuffle: int = 1, trainset_index: int = 0,
                        snapshot_index: int | None = None, output: str | Path | None = None,
                        **kwargs) -> ExportResult:
    """Exports snapshot ``snapshot_index`` (default: the project's ``snapshotindex``, -1 = the
    best snapshot, else the last) of a trained shuffle."""
    loader = DLCLoader(config_path, shuffle=shuffle, trainset_index=trainset_index)
    train_folder = loader.train_folder
    snapshots = list_snapshots(train_folder)
    if not snapshots:
        raise ExportError(f"no snapshot-*.pt in {train_folder}: train shuffle {shuffle} first")
    if snapshot_index is None:
        configured = loader.project.cfg.get("snapshotindex", -1)
        snapshot_index = configured if isinstance(configured, int) else -1  # "all" -> last
    try:
        snapshot = snapshots[snapshot_index]
    except IndexError:
        raise ExportError(f"snapshot index {snapshot_index} out of range: {train_folder} has "
                          f"{len(snapshots)} snapshots") from None
    return export_bundle(loader.pose_config_path, snapshot, output, **kwargs)
