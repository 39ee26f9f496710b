"""DeepLabCut 3's scorer names, and the shuffle and snapshot facts they are made of.

A scorer names every result file (``<video><scorer>.h5``) and the default bundle folder; users'
scripts and DeepLabCut's own tools look files up by it. DeepLabCut 3 builds it in
``DLCLoader.scorer`` / ``apis.utils.get_scorer_name``::

    DLC_<Net>_<Task><date>shuffle<n>_snapshot_<uid>                       (bottom-up, CTD)
    DLC_<Net>_<Task><date>shuffle<n>_detector_<uid>_snapshot_<uid>        (top-down)

``<Net>`` is the net_type's ``_``-separated words capitalized and joined (``cspnext_s`` ->
``CspnextS``), ``<uid>`` the snapshot's epoch without padding, ``best-`` in front for a best
snapshot (``snapshot-best-050.pt`` -> ``best-50``). The exporter (``dlc_export.source``) and the
runtime (finding a project's bundle) both name scorers here, so they cannot disagree. Plain
regular expressions and paths: the runtime may not import ``dlc_train``'s snapshot lister.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePath

#: ``<Task><date>-trainset<pct>shuffle<n>``: a shuffle's folder under ``dlc-models-pytorch``.
SHUFFLE_FOLDER = re.compile(r"^(?P<task_date>.+)-trainset(?P<percent>\d+)shuffle(?P<shuffle>\d+)$")
_SNAPSHOT_EPOCH = re.compile(r"-(\d+)\.pt$")


def net_name(net_type: str) -> str:
    """``cspnext_s`` -> ``CspnextS``, ``top_down_resnet_50`` -> ``TopDownResnet50``."""
    return "".join(part.capitalize() for part in str(net_type).split("_"))


def snapshot_uid(snapshot: str | PurePath) -> str:
    """DeepLabCut's ``Snapshot.uid``: ``snapshot-050.pt`` -> ``50``,
    ``snapshot-best-050.pt`` -> ``best-50``; a name without an epoch keeps its stem."""
    path = PurePath(snapshot)
    match = _SNAPSHOT_EPOCH.search(path.name)
    if not match:
        return path.stem
    epochs = str(int(match.group(1)))
    return f"best-{epochs}" if "-best" in path.stem else epochs


def dlc3_scorer(net_type: str, task_date: str, shuffle: int | str | None,
                snapshot: str | PurePath, detector_snapshot: str | PurePath | None = None
                ) -> str:
    """The scorer DeepLabCut 3 gives results of ``snapshot``.

    Args:
        net_type: the pytorch_config's ``net_type``.
        task_date: the project's ``Task`` and ``date`` joined (``openfieldOct30``).
        shuffle: the shuffle index; None when unknown (the name then has no ``shuffle<n>``:
            better no number than a wrong one).
        snapshot: the pose snapshot (only its name is read).
        detector_snapshot: top-down models: the detector snapshot that runs with it.
    """
    uid = f"snapshot_{snapshot_uid(snapshot)}"
    if detector_snapshot is not None:
        uid = f"detector_{snapshot_uid(detector_snapshot)}_{uid}"
    shuffle_part = "" if shuffle is None else f"shuffle{int(shuffle)}"
    return f"DLC_{net_name(net_type)}_{task_date}{shuffle_part}_{uid}"


def scorer_prefix(task_date: str, shuffle: int) -> re.Pattern[str]:
    """Matches the scorers of any snapshot of one shuffle (any net, any naming version)."""
    return re.compile(rf"^DLC_[^_]+_{re.escape(task_date)}shuffle{int(shuffle)}_")


@dataclass(frozen=True)
class ShuffleFolder:
    """What a shuffle folder's name says: ``openfieldOct30-trainset95shuffle4``."""

    task_date: str
    percent: int
    shuffle: int


def find_shuffle_folder(*paths: str | PurePath | None) -> ShuffleFolder | None:
    """The first shuffle folder named in ``paths`` (each read from its end: the config's own
    location, then e.g. ``metadata.pose_config_path`` as DeepLabCut wrote it)."""
    for path in paths:
        if not path:
            continue
        for part in reversed(PurePath(path).parts):
            match = SHUFFLE_FOLDER.match(part)
            if match:
                return ShuffleFolder(match["task_date"], int(match["percent"]),
                                     int(match["shuffle"]))
    return None


def shuffle_folder_name(task_date: str, train_fraction: float, shuffle: int) -> str:
    """DeepLabCut's ``get_model_folder`` leaf: ``<Task><date>-trainset<pct>shuffle<n>``."""
    return f"{task_date}-trainset{int(train_fraction * 100)}shuffle{int(shuffle)}"


def list_snapshots(folder: str | Path, prefix: str = "snapshot") -> list[Path]:
    """``<prefix>-[best-]<epoch>.pt`` in ``folder`` as DeepLabCut 3 indexes them for
    ``snapshotindex``: regular ones by epoch, then the newest best one last."""
    pattern = re.compile(rf"^{re.escape(prefix)}-(best-)?(\d+)\.pt$")
    regular, best = [], []
    folder = Path(folder)
    if not folder.is_dir():
        return []
    for path in folder.iterdir():
        match = pattern.match(path.name)
        if match:
            (best if match.group(1) else regular).append((int(match.group(2)), path))
    return [p for _, p in sorted(regular)] + [p for _, p in sorted(best)][-1:]


__all__ = ["SHUFFLE_FOLDER", "ShuffleFolder", "net_name", "snapshot_uid", "dlc3_scorer",
           "scorer_prefix", "find_shuffle_folder", "shuffle_folder_name", "list_snapshots"]
