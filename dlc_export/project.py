"""Export from a DeepLabCut project: config.yaml + shuffle + snapshot index -> bundle."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from dlc_export.pipeline import ExportResult, export_bundle
from dlc_export.source import pick_snapshot
from dlc_train.data.dlcloader import DLCLoader


def export_from_project(config_path: str | Path, shuffle: int = 1, trainset_index: int = 0,
                        snapshot_index: int | None = None, output: str | Path | None = None,
                        **options: Any) -> ExportResult:
    """Exports snapshot ``snapshot_index`` (default: the project's ``snapshotindex``, -1 = the
    best snapshot, else the last) of a trained shuffle; ``options`` as ``export_bundle``."""
    loader = DLCLoader(config_path, shuffle=shuffle, trainset_index=trainset_index)
    if snapshot_index is None:
        configured = loader.project.cfg.get("snapshotindex", -1)
        snapshot_index = configured if isinstance(configured, int) else -1  # "all" -> last
    snapshot = pick_snapshot(loader.train_folder, snapshot_index, what=f"shuffle {shuffle}: ")
    return export_bundle(loader.pose_config_path, snapshot, output, **options)
