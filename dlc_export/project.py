"""Export from a DeepLabCut project: config.yaml + shuffle + snapshot index -> bundle."""
from __future__ import annotations

from pathlib import Path

from dlc_export.export import ExportResult, export_bundle
from dlc_export.onnx_export import ExportError
from dlc_train.data.dlcloader import DLCLoader
from dlc_train.runners.snapshots import list_snapshots as _snapshots


def list_snapshots(train_folder: Path) -> list[Path]:
    """Pose snapshots by epoch, the newest best one (if any) last, as DeepLabCut 3 orders them
    for ``snapshotindex``."""
    found = _snapshots(train_folder)
    return [s.path for s in found if not s.best] + [s.path for s in found if s.best][-1:]


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
