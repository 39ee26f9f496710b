"""From a DeepLabCut project's ``config.yaml`` and a shuffle to the bundle exported for it.

``dlc export <config.yaml> --shuffle N`` writes ``<project>/exported-models-pytorch/
<scorer>.bundle/`` (see ``dlc_export.source.default_bundle_dir``), the scorer being DeepLabCut
3's name for the snapshot (:mod:`dlc_runtime.scorer`). Bundles are recognised by the scorer in
their manifest, not by folder name (``-o`` may have named the folder otherwise):

1. when the shuffle's train folder is there, the snapshot DeepLabCut would analyze with
   (``snapshot_index``, else the project's ``snapshotindex``; top-down models also the detector's)
   gives the exact scorer, and the bundle with that scorer is the one;
2. otherwise (an analysis machine with only the bundles) the shuffle's only bundle is used; with
   several, the caller has to choose.

Every refusal is one :class:`BundleError` line saying what to export or pass.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dlc_runtime.bundle import Bundle
from dlc_runtime.errors import BundleError
from dlc_runtime.manifest import MANIFEST_NAME
from dlc_runtime.scorer import (dlc3_scorer, list_snapshots, scorer_prefix,
                                shuffle_folder_name)

logger = logging.getLogger(__name__)

EXPORT_FOLDER = "exported-models-pytorch"
MODELS_FOLDER = "dlc-models-pytorch"


@dataclass(frozen=True)
class ProjectConfig:
    """The parts of a DeepLabCut project's ``config.yaml`` analysis needs."""

    path: Path
    raw: dict[str, Any]

    @property
    def folder(self) -> Path:
        # The folder the config sits in, not ``project_path``: projects move between machines.
        return self.path.parent

    @property
    def task_date(self) -> str:
        return f"{self.raw.get('Task', '')}{self.raw.get('date', '')}"

    def train_fraction(self, trainingsetindex: int) -> float:
        fractions = self.raw.get("TrainingFraction") or [0.95]
        try:
            return float(fractions[trainingsetindex])
        except (IndexError, TypeError, ValueError):
            raise BundleError(f"{self.path}: trainingsetindex {trainingsetindex} is out of range "
                              f"(TrainingFraction: {fractions})") from None

    def train_folder(self, shuffle: int, trainingsetindex: int) -> Path:
        return (self.folder / MODELS_FOLDER / f"iteration-{self.raw.get('iteration', 0)}"
                / shuffle_folder_name(self.task_date, self.train_fraction(trainingsetindex),
                                      shuffle) / "train")


def is_project_config(path: str | os.PathLike[str]) -> bool:
    """A ``.yaml`` file (not a bundle's manifest): what ``analyze_videos`` treats as a project."""
    path = Path(path)
    return path.suffix in (".yaml", ".yml") and path.name != MANIFEST_NAME and not path.is_dir()


def read_project_config(path: str | os.PathLike[str]) -> ProjectConfig:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise BundleError(f"cannot read the project config {path}: {err.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise BundleError(f"{path}: not valid YAML ({first})") from None
    if not isinstance(raw, dict) or "Task" not in raw or "bodyparts" not in raw:
        raise BundleError(f"{path} is not a DeepLabCut project config.yaml (no Task or "
                          "bodyparts); pass the project's config.yaml or a bundle folder")
    return ProjectConfig(path, raw)


def _bundle_scorers(folder: Path) -> dict[Path, str]:
    """Every bundle under ``folder`` and the scorer its manifest names."""
    found: dict[Path, str] = {}
    if not folder.is_dir():
        return found
    for child in sorted(folder.iterdir()):
        manifest = child / MANIFEST_NAME
        if child.name.startswith(".") or not manifest.is_file():
            continue  # hidden: an export still being staged
        try:
            data = yaml.safe_load(manifest.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue  # Bundle.load says what is wrong if the user points at it
        if isinstance(data, dict) and isinstance(data.get("scorer"), str):
            found[child] = data["scorer"]
    return found


def _index(value: Any, default: int = -1) -> int:
    # DeepLabCut: "all" analyzes with the last snapshot (with a warning); None: the default.
    if value is None or value == "all":
        return default
    if value == "best":
        return -1
    return int(value)


def expected_scorer(project: ProjectConfig, shuffle: int, trainingsetindex: int = 0,
                    snapshot_index: int | str | None = None,
                    detector_snapshot_index: int | str | None = None) -> str | None:
    """The scorer DeepLabCut 3 would analyze this shuffle with, or None when the shuffle's
    train folder (its ``pytorch_config.yaml`` and snapshots) is not on this machine."""
    train = project.train_folder(shuffle, trainingsetindex)
    try:
        pose_cfg = yaml.safe_load((train / "pytorch_config.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    snapshots = list_snapshots(train)
    if not isinstance(pose_cfg, dict) or not snapshots:
        return None
    index = _index(snapshot_index if snapshot_index is not None
                   else project.raw.get("snapshotindex"))
    try:
        snapshot = snapshots[index]
    except IndexError:
        raise BundleError(f"snapshot_index {index} is out of range: {train} has "
                          f"{len(snapshots)} snapshots") from None
    detector = None
    if str(pose_cfg.get("method", "bu")).lower() in ("td", "top_down", "topdown"):
        detectors = list_snapshots(train, prefix="snapshot-detector")
        d_index = _index(detector_snapshot_index if detector_snapshot_index is not None
                         else project.raw.get("detector_snapshotindex"))
        if detectors:
            detector = detectors[d_index] if -len(detectors) <= d_index < len(detectors) \
                else None
    return dlc3_scorer(str(pose_cfg.get("net_type", "model")), project.task_date, shuffle,
                       snapshot, detector)


def find_project_bundle(config: str | os.PathLike[str], shuffle: int = 1,
                        trainingsetindex: int = 0, snapshot_index: int | str | None = None,
                        detector_snapshot_index: int | str | None = None) -> Path:
    """The bundle exported for ``shuffle`` of the project whose ``config.yaml`` is ``config``.

    Raises:
        BundleError: no bundle for the shuffle (or none for the snapshot asked for), or
            several with nothing to choose between them.
    """
    project = read_project_config(config)
    folder = project.folder / EXPORT_FOLDER
    pattern = scorer_prefix(project.task_date, shuffle)
    candidates = {path: scorer for path, scorer in _bundle_scorers(folder).items()
                  if pattern.match(scorer)}
    export_hint = f"export it first: dlc export {project.path} --shuffle {shuffle}"
    if not candidates:
        raise BundleError(f"no exported bundle for shuffle {shuffle} of {project.path} in "
                          f"{folder}; {export_hint} (or pass the bundle folder)")
    expected = expected_scorer(project, shuffle, trainingsetindex, snapshot_index,
                               detector_snapshot_index)
    exact = [path for path, scorer in candidates.items() if scorer == expected]
    if exact:
        return exact[0]
    listed = ", ".join(sorted(p.name for p in candidates))
    if expected is not None and snapshot_index is not None:
        raise BundleError(f"no bundle for {expected} in {folder} (shuffle {shuffle} has: "
                          f"{listed}); {export_hint} --snapshot-index {snapshot_index}")
    if len(candidates) == 1:
        (path, scorer), = candidates.items()
        if expected is not None:
            logger.info("using %s (%s): the only bundle of shuffle %d; the project's "
                        "snapshotindex names %s", path, scorer, shuffle, expected)
        return path
    raise BundleError(f"{len(candidates)} bundles for shuffle {shuffle} in {folder} ({listed}) "
                      "and none is for the project's snapshotindex: pass the bundle folder")


def load_bundle(config: str | os.PathLike[str] | Bundle, shuffle: int = 1,
                trainingsetindex: int = 0, snapshot_index: int | str | None = None,
                detector_snapshot_index: int | str | None = None) -> Bundle:
    """The bundle ``config`` names: a bundle folder (or its manifest), a loaded bundle, or a
    DeepLabCut project's ``config.yaml`` (then its exported bundle for ``shuffle``)."""
    if isinstance(config, Bundle):
        return config
    if is_project_config(config):
        return Bundle.load(find_project_bundle(config, shuffle, trainingsetindex,
                                               snapshot_index, detector_snapshot_index))
    return Bundle.load(config)  # a folder, or its manifest.yaml; says what is wrong otherwise


__all__ = ["EXPORT_FOLDER", "ProjectConfig", "is_project_config", "read_project_config",
           "expected_scorer", "find_project_bundle", "load_bundle"]
