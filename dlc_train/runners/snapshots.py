"""Snapshots in DeepLabCut 3's layout: ``snapshot-{epoch:03d}.pt`` / ``snapshot-best-{epoch:03d}.pt``.

Each file holds ``{"metadata": {"epoch", "metrics", "losses"}, "model": state_dict,
"scheduler": state_dict[, "optimizer": state_dict]}``, so DeepLabCut loads ours and we load its;
metrics are named ``metrics/test.<metric>`` as DeepLabCut's runner names them.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dlc_io import atomic_path

# One SnapshotError and one reader for the whole project (training, export, CLI).
from dlc_train.models.loading import SnapshotError, load_snapshot  # noqa: F401


@dataclass(frozen=True)
class Snapshot:
    path: Path
    epoch: int
    best: bool


def list_snapshots(folder: str | Path, prefix: str = "snapshot") -> list[Snapshot]:
    """The ``<prefix>-[best-]<epoch>.pt`` files in ``folder``, by epoch (numerically: 200 before
    1000), a best snapshot after the regular one of its epoch. The one snapshot lister: the
    trainer, the exporters and the detector lookup all use it."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    pattern = re.compile(rf"^{re.escape(prefix)}-(best-)?(\d+)\.pt$")
    found = []
    for path in folder.iterdir():
        match = pattern.match(path.name)
        if match:
            found.append(Snapshot(path, int(match.group(2)), bool(match.group(1))))
    return sorted(found, key=lambda s: (s.epoch, s.best))


def key_metric_value(metrics: dict[str, Any], key_metric: str) -> Any:
    """The value of ``runner.key_metric`` (``test.mAP``) in a snapshot's metadata metrics:
    DeepLabCut's ``metrics/test.mAP``, or the bare name our snapshots carried before."""
    return metrics.get(f"metrics/{key_metric}", metrics.get(key_metric))


def atomic_torch_save(obj: Any, path: Path) -> None:
    """Writes to a temporary file in the same folder, then renames: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


class SnapshotManager:
    """Decides which epochs are saved and prunes old snapshots.

    Args:
        folder: the train folder.
        key_metric: metric that picks the best snapshot (e.g. "test.rmse"); None: no best.
        key_metric_asc: True when larger is better (DeepLabCut's meaning of the flag).
        max_snapshots: most regular (non-best) snapshots kept; the oldest go first.
        save_epochs: save every this many epochs (the last epoch is always saved).
        prefix: file name prefix ("snapshot"; DeepLabCut detectors use "snapshot-detector").
    """

    def __init__(self, folder: str | Path, key_metric: str | None = None,
                 key_metric_asc: bool = True, max_snapshots: int | None = 5,
                 save_epochs: int = 25, prefix: str = "snapshot"):
        self.folder = Path(folder)
        self.key_metric = key_metric
        self.key_metric_asc = bool(key_metric_asc)
        self.max_snapshots = max_snapshots
        self.save_epochs = max(1, int(save_epochs or 1))
        self.prefix = prefix or "snapshot"
        self.best_metric: float | None = None

    def snapshots(self) -> list[Snapshot]:
        """Snapshots in the folder, oldest epoch first (see :func:`list_snapshots`)."""
        return list_snapshots(self.folder, self.prefix)

    def latest(self) -> Snapshot | None:
        """The snapshot of the highest epoch (a regular one over a best one of the same epoch)."""
        snaps = self.snapshots()
        if not snaps:
            return None
        top = max(s.epoch for s in snaps)
        return sorted((s for s in snaps if s.epoch == top), key=lambda s: s.best)[0]

    def best(self) -> Snapshot | None:
        bests = [s for s in self.snapshots() if s.best]
        return bests[-1] if bests else None

    def restore_best_metric(self) -> None:
        """Reads the best snapshot's key metric, so a resumed run only replaces a better one."""
        best = self.best()
        if best is None or not self.key_metric:
            return
        try:
            value = key_metric_value(load_snapshot(best.path)["metadata"]["metrics"],
                                     self.key_metric)
        except (SnapshotError, KeyError, TypeError, AttributeError):
            return
        if value is not None and math.isfinite(float(value)):
            self.best_metric = float(value)

    def path(self, epoch: int, best: bool = False) -> Path:
        return self.folder / f"{self.prefix}-{'best-' if best else ''}{epoch:03d}.pt"

    def _improved(self, value: float) -> bool:
        if self.best_metric is None:
            return True
        return value > self.best_metric if self.key_metric_asc else value < self.best_metric

    def update(self, epoch: int, state: dict[str, Any], last: bool = False) -> list[Path]:
        """Saves what this epoch calls for; returns the paths written.

        Args:
            epoch: the epoch just finished (1-based).
            state: the snapshot dict (``metadata`` must hold ``metrics``).
            last: the final epoch of the run: always saved.
        """
        written = []
        metrics = state.get("metadata", {}).get("metrics", {}) or {}
        value = key_metric_value(metrics, self.key_metric) if self.key_metric else None
        if value is not None and math.isfinite(float(value)) and self._improved(float(value)):
            self.best_metric = float(value)
            previous = self.best()
            atomic_torch_save(state, self.path(epoch, best=True))
            written.append(self.path(epoch, best=True))
            if previous is not None and previous.path != self.path(epoch, best=True):
                previous.path.unlink(missing_ok=True)

        if last or epoch % self.save_epochs == 0:
            atomic_torch_save(state, self.path(epoch))
            written.append(self.path(epoch))
            self._prune()
        return written

    def _prune(self) -> None:
        if self.max_snapshots is None or self.max_snapshots <= 0:
            return
        regular = [s for s in self.snapshots() if not s.best]
        for snap in regular[:max(0, len(regular) - int(self.max_snapshots))]:
            snap.path.unlink(missing_ok=True)
