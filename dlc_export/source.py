"""Where an export comes from: the config, the snapshot, the project around them, the scorer,
the default output folder and the parity frames. Every task resolves its source here."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlc_export.config_view import PoseConfigView, read_pose_config
from dlc_export.errors import ExportError
from dlc_export.frames import frames_from_images, frames_from_project, frames_from_video
from dlc_export.options import ExportOptions
from dlc_export.parity import project_pcutoff
from dlc_runtime.scorer import dlc3_scorer, find_shuffle_folder
from dlc_train.config import read_config_as_dict
from dlc_train.runners.snapshots import list_snapshots as _list_snapshots
from dlc_train.task import Task

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".mpg", ".mpeg", ".m4v"}


@dataclass
class ExportSource:
    """What one export reads, resolved once."""

    config: PoseConfigView
    snapshot: Path
    #: the project's config.yaml (with ``project_path``), None when it is not found.
    project: dict | None
    scorer: str
    output: Path
    frames: np.ndarray
    frames_source: str

    @property
    def pcutoff(self) -> float:
        return project_pcutoff(self.project)


def resolve_source(pytorch_config_path: str | Path, snapshot: str | Path,
                   output: str | Path | None, options: ExportOptions) -> ExportSource:
    config = read_pose_config(pytorch_config_path)
    snapshot = Path(snapshot)
    project = project_config(config)
    detector = None
    if config.task is Task.TOP_DOWN:  # DeepLabCut names the detector that runs with it
        detector = options.detector_snapshot or find_detector_snapshot(snapshot)
    scorer = scorer_name(config, snapshot, project, detector)
    frames, frames_source = parity_frames(options.frames, project)
    return ExportSource(config=config, snapshot=snapshot, project=project, scorer=scorer,
                        output=Path(output) if output is not None
                        else default_bundle_dir(project, snapshot, scorer),
                        frames=frames, frames_source=frames_source)


def scorer_name(config: PoseConfigView, snapshot_path: Path, project_config: dict | None,
                detector_snapshot: Path | None = None) -> str:
    """DeepLabCut 3's scorer for this snapshot (:func:`dlc_runtime.scorer.dlc3_scorer`), the
    same whether the export names the project or the snapshot's path.

    The shuffle comes from the shuffle folder (``<Task><date>-trainset95shuffle4``) the config
    sits in, else the one ``metadata.pose_config_path`` names (DeepLabCut writes it: a
    snapshot copied elsewhere with its config keeps its name); ``<Task><date>`` from the
    project's config.yaml, else from that folder's name.
    """
    folder = find_shuffle_folder(config.path.resolve(), snapshot_path.resolve(),
                                 _metadata(config.raw).get("pose_config_path"))
    if project_config and project_config.get("Task") is not None:
        task_date = f"{project_config['Task']}{project_config.get('date', '')}"
    else:
        task_date = folder.task_date if folder else "model"
    if folder is None:
        log.warning("%s: no shuffle folder (<Task><date>-trainset<pct>shuffle<n>) in its path "
                    "or metadata.pose_config_path: the scorer cannot be DeepLabCut's",
                    config.where)
    return dlc3_scorer(config.net_type or "model", task_date,
                       folder.shuffle if folder else None, snapshot_path, detector_snapshot)


def _metadata(raw: dict) -> dict:
    meta = raw.get("metadata") if isinstance(raw, dict) else None
    return meta if isinstance(meta, dict) else {}


def default_bundle_dir(project: dict | None, snapshot_path: Path, scorer: str) -> Path:
    """Where a DeepLabCut user looks: ``<project>/exported-models-pytorch/<scorer>.bundle``
    (beside the snapshot when the project is not found)."""
    base = Path(project["project_path"]) / "exported-models-pytorch" if project \
        else snapshot_path.parent
    return base / f"{scorer}.bundle"


def project_config(config: PoseConfigView) -> dict | None:
    """The project's config.yaml, found via metadata.project_path or the folders above."""
    candidates = []
    if config.project_path:
        candidates.append(Path(config.project_path) / "config.yaml")
    # <project>/dlc-models-pytorch/iteration-0/<name>/train/pytorch_config.yaml
    candidates.extend(parent / "config.yaml" for parent in config.path.parents[:6])
    for candidate in candidates:
        if candidate.is_file():
            try:
                cfg = read_config_as_dict(candidate)
            except ValueError:
                continue
            if "bodyparts" in cfg:
                cfg["project_path"] = str(candidate.parent)
                return cfg
    return None


def parity_frames(frames: Path | np.ndarray | None, project: dict | None,
                  count: int = 8) -> tuple[np.ndarray, str]:
    """(frames, where they come from): the caller's, a video's or image folder's, the
    project's labeled frames, or (said in the report) random noise."""
    if isinstance(frames, np.ndarray):
        return frames, "frames given by the caller"
    if frames is not None:
        frames = Path(frames)
        if frames.suffix.lower() in VIDEO_SUFFIXES:
            return frames_from_video(frames, count), str(frames)
        if frames.is_dir():
            images = sorted(p for p in frames.rglob("*") if p.suffix.lower() in (".png", ".jpg"))
            return frames_from_images(images, count), str(frames)
        raise ExportError(f"--frames {frames}: not a video or a folder of images")
    if project and Path(project["project_path"], "labeled-data").is_dir():
        return (frames_from_project(project["project_path"], count),
                f"{project['project_path']}/labeled-data")
    # Without real frames the check still compares the graphs, on noise: say so in the report.
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(4, 256, 256, 3), dtype=np.uint8), "random noise frames"


def list_snapshots(train_folder: Path) -> list[Path]:
    """Pose snapshots by epoch, the newest best one (if any) last, as DeepLabCut 3 orders them
    for ``snapshotindex``."""
    found = _list_snapshots(train_folder)
    return [s.path for s in found if not s.best] + [s.path for s in found if s.best][-1:]


def pick_snapshot(train_folder: Path, index: int, what: str = "") -> Path:
    """Snapshot ``index`` of :func:`list_snapshots` (-1: the best, else the last)."""
    snapshots = list_snapshots(train_folder)
    if not snapshots:
        raise ExportError(f"{what}no snapshot-*.pt in {train_folder}: train that shuffle first")
    try:
        return snapshots[index]
    except IndexError:
        raise ExportError(f"{what}snapshot index {index} is out of range: {train_folder} has "
                          f"{len(snapshots)} snapshots") from None


def find_detector_snapshot(snapshot_path: Path) -> Path | None:
    """The newest ``snapshot-detector-*.pt`` beside the pose snapshot (best first, as DLC),
    newest by epoch: ``-1000`` after ``-200``."""
    found = _list_snapshots(snapshot_path.parent, prefix="snapshot-detector")
    best = [s for s in found if s.best]
    return (best or found)[-1].path if found else None
