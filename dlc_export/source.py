"""Where an export comes from: the config, the snapshot, the project around them, the scorer,
the default output folder and the parity frames. Every task resolves its source here."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlc_export.config_view import PoseConfigView, read_pose_config
from dlc_export.errors import ExportError
from dlc_export.frames import frames_from_images, frames_from_project, frames_from_video
from dlc_export.options import ExportOptions
from dlc_export.parity import project_pcutoff
from dlc_train.config import read_config_as_dict
from dlc_train.runners.snapshots import list_snapshots as _list_snapshots

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
    scorer = scorer_name(config.raw, snapshot, project)
    frames, frames_source = parity_frames(options.frames, project)
    return ExportSource(config=config, snapshot=snapshot, project=project, scorer=scorer,
                        output=Path(output) if output is not None
                        else default_bundle_dir(project, snapshot, scorer),
                        frames=frames, frames_source=frames_source)


def scorer_name(pytorch_config: dict, snapshot_path: Path, project_config: dict | None) -> str:
    """DeepLabCut 3's scorer: ``DLC_<Net>_<Task><date>shuffle<n>_<snapshot>``."""
    net = str(pytorch_config.get("net_type", "model")).replace("_", " ").title().replace(" ", "")
    snapshot = snapshot_path.stem.replace("-", "_")
    train_dir = snapshot_path.parent.parent.name  # <Task><date>-trainset95shuffle1
    shuffle = train_dir.rsplit("shuffle", 1)[-1] if "shuffle" in train_dir else "1"
    if project_config:
        task = f"{project_config.get('Task', '')}{project_config.get('date', '')}"
    else:
        task = train_dir.split("-trainset")[0] if "-trainset" in train_dir else "model"
    return f"DLC_{net}_{task}shuffle{shuffle}_{snapshot}"


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
