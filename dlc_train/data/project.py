"""Reading a DeepLabCut project: its ``config.yaml`` and the labels under ``labeled-data/``.

Labels come from ``labeled-data/<video>/CollectedData_<scorer>.h5`` (the .csv when there is no
.h5). Both the old string index (``labeled-data/m4s1/img0000.png``) and DeepLabCut's newer
MultiIndex (``labeled-data``, video, image) are accepted; NaN marks an unlabeled keypoint.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

# DeepLabCut's demo configs ship with this placeholder instead of a real project path.
_PLACEHOLDER = "WILL BE AUTOMATICALLY UPDATED BY DEMO CODE"


class ProjectError(Exception):
    """A DeepLabCut project that cannot be read (missing / malformed config or labels)."""


@dataclass
class Project:
    """A DeepLabCut project's config with the fields training needs.

    Attributes:
        config_path: the config.yaml.
        project_path: the project folder (the config's folder when the stored one is stale).
        cfg: the raw config dict (``project_path`` updated).
        bodyparts: keypoints per individual (``multianimalbodyparts`` for multi-animal projects).
        unique_bodyparts: keypoints that exist once per image (multi-animal projects only).
        individuals: individual names (one, ``"animal"``, for single-animal projects).
    """

    config_path: Path
    project_path: Path
    cfg: dict[str, Any]
    task: str
    scorer: str
    date: str
    iteration: int
    bodyparts: list[str]
    unique_bodyparts: list[str] = field(default_factory=list)
    individuals: list[str] = field(default_factory=lambda: ["animal"])
    multianimal: bool = False
    training_fractions: list[float] = field(default_factory=lambda: [0.95])

    @property
    def labeled_data_dir(self) -> Path:
        return self.project_path / "labeled-data"


@dataclass
class LabeledData:
    """All labels of a project.

    Attributes:
        image_paths: image paths relative to the project folder, posix style
            (``labeled-data/<video>/<image>``), sorted.
        keypoints: (M, N, K, 3) float32: x, y, visibility (2 labeled, 0 unlabeled; x, y are 0
            where unlabeled so the arrays never hold NaN).
        unique_keypoints: (M, U, 3) float32 or None when the project has no unique bodyparts.
    """

    image_paths: list[str]
    keypoints: np.ndarray
    unique_keypoints: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.image_paths)


def load_project(config_path: str | Path) -> Project:
    """Reads a DeepLabCut ``config.yaml``.

    Args:
        config_path: the config.yaml, or the project folder that holds it.
    """
    config_path = Path(config_path).expanduser()
    if config_path.is_dir():
        config_path = config_path / "config.yaml"
    if not config_path.is_file():
        raise ProjectError(f"project config not found: {config_path}")
    try:
        with open(config_path, encoding="utf-8") as f:
            cfg = yaml.safe_load(f)
    except yaml.YAMLError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ProjectError(f"malformed project config {config_path}: {first}") from None
    if not isinstance(cfg, dict):
        raise ProjectError(f"malformed project config {config_path}: expected a mapping")

    multianimal = bool(cfg.get("multianimalproject"))
    if multianimal:
        bodyparts = cfg.get("multianimalbodyparts")
        unique = list(cfg.get("uniquebodyparts") or [])
        individuals = list(cfg.get("individuals") or [])
        if not individuals:
            raise ProjectError(f"{config_path}: multi-animal project without 'individuals'")
    else:
        bodyparts = cfg.get("bodyparts")
        unique, individuals = [], ["animal"]
    if not isinstance(bodyparts, list) or not bodyparts:
        key = "multianimalbodyparts" if multianimal else "bodyparts"
        raise ProjectError(f"{config_path}: missing or empty '{key}' list")

    for key in ("Task", "scorer", "date"):
        if not cfg.get(key):
            raise ProjectError(f"{config_path}: missing '{key}'")

    fractions = cfg.get("TrainingFraction") or [0.95]
    if not isinstance(fractions, list):
        fractions = [fractions]

    project_path = _resolve_project_path(cfg.get("project_path"), config_path)
    cfg = dict(cfg, project_path=str(project_path))
    return Project(
        config_path=config_path.resolve(), project_path=project_path, cfg=cfg,
        task=str(cfg["Task"]), scorer=str(cfg["scorer"]), date=str(cfg["date"]),
        iteration=int(cfg.get("iteration") or 0), bodyparts=[str(b) for b in bodyparts],
        unique_bodyparts=[str(b) for b in unique], individuals=[str(i) for i in individuals],
        multianimal=multianimal, training_fractions=[float(f) for f in fractions])


def _resolve_project_path(stored: Any, config_path: Path) -> Path:
    """The stored project path when it is real and holds this config; else the config's folder.

    Projects get moved between machines and demo projects carry a placeholder, so the folder
    the config.yaml sits in is the reliable answer whenever the stored one disagrees.
    """
    here = config_path.resolve().parent
    if isinstance(stored, str) and stored and _PLACEHOLDER not in stored:
        path = Path(stored).expanduser()
        if path.is_dir() and (path / config_path.name).is_file():
            try:
                if (path / config_path.name).resolve() == config_path.resolve():
                    return path.resolve()
            except OSError:
                pass
    return here


def label_files(project: Project) -> list[Path]:
    """One label file per labeled video folder: the .h5, else the .csv."""
    folder = project.labeled_data_dir
    if not folder.is_dir():
        raise ProjectError(f"no labeled data: {folder} does not exist")
    files = []
    for video_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        # DeepLabCut writes "<video>_labeled" folders for plots; they hold no new labels.
        if video_dir.name.endswith("_labeled"):
            continue
        stem = video_dir / f"CollectedData_{project.scorer}"
        for ext in (".h5", ".csv"):
            if stem.with_suffix(ext).is_file():
                files.append(stem.with_suffix(ext))
                break
    if not files:
        raise ProjectError(f"no labeled data: no CollectedData_{project.scorer}.h5/.csv "
                           f"under {folder}")
    return files


def read_label_file(path: str | Path) -> pd.DataFrame:
    """Reads one CollectedData file; the index becomes ``labeled-data/<video>/<image>`` strings."""
    path = Path(path)
    try:
        if path.suffix == ".h5":
            df = pd.read_hdf(path)
        else:
            df = _read_label_csv(path)
    except ProjectError:
        raise
    except Exception as err:  # pandas / PyTables raise many types for a broken file
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ProjectError(f"cannot read label file {path}: {msg}") from None
    if not isinstance(df, pd.DataFrame) or not isinstance(df.columns, pd.MultiIndex):
        raise ProjectError(f"label file {path} is not in DeepLabCut layout (MultiIndex columns)")
    names = list(df.columns.names)
    if "bodyparts" not in names or "coords" not in names:
        raise ProjectError(f"label file {path} lacks 'bodyparts'/'coords' column levels "
                           f"(levels: {names})")
    df.index = _flatten_index(df.index, path)
    try:
        df = df.astype(float)
    except (TypeError, ValueError):
        raise ProjectError(f"label file {path} holds non-numeric coordinates") from None
    return df


def _read_label_csv(path: Path) -> pd.DataFrame:
    # Column header rows: scorer, [individuals,] bodyparts, coords.
    with open(path, encoding="utf-8") as f:
        head = [f.readline() for _ in range(4)]
    n_header = 4 if head[1].startswith("individuals") else 3
    # The newer MultiIndex rows start with three index cells (labeled-data, video, image).
    first_data = head[n_header] if len(head) > n_header else ""
    index_col: int | list[int] = 0
    if n_header == 3 and first_data.startswith("labeled-data,"):
        index_col = [0, 1, 2]
    elif n_header == 4:
        with open(path, encoding="utf-8") as f:
            lines = [f.readline() for _ in range(5)]
        if len(lines) > 4 and lines[4].startswith("labeled-data,"):
            index_col = [0, 1, 2]
    df = pd.read_csv(path, header=list(range(n_header)), index_col=index_col)
    return df


def _flatten_index(index: pd.Index, path: Path) -> pd.Index:
    """Both index layouts -> ``labeled-data/<video>/<image>`` posix strings."""
    if isinstance(index, pd.MultiIndex):
        return pd.Index(["/".join(str(p) for p in parts) for parts in index])
    out = []
    for value in index:
        text = str(value).replace("\\", "/")
        if not text.startswith("labeled-data/"):
            # Some tools write only the image name; the video folder is the file's folder.
            text = f"labeled-data/{path.parent.name}/{Path(text).name}"
        out.append(text)
    return pd.Index(out)


def load_labels(project: Project) -> LabeledData:
    """All labels of a project as arrays (see LabeledData).

    Raises ProjectError when the bodyparts of config.yaml and of any label file differ (see
    check_bodyparts).
    """
    frames = []
    for path in label_files(project):
        frame = read_label_file(path)
        check_bodyparts(project, frame, path)
        frames.append(frame)
    df = pd.concat(frames)
    df = df[~df.index.duplicated(keep="first")].sort_index()
    if len(df) == 0:
        raise ProjectError(f"no labeled data: the label files under {project.labeled_data_dir} "
                           "are empty")

    individuals = project.individuals
    if not project.multianimal and "individuals" in df.columns.names:
        # A single-animal project labelled with a multi-animal-style file: take its individual.
        names = [i for i in df.columns.get_level_values("individuals").unique() if i != "single"]
        individuals = names[:1] or individuals
    keypoints = _to_array(df, project, individuals, project.bodyparts)
    unique = None
    if project.unique_bodyparts:
        unique = _to_array(df, project, ["single"], project.unique_bodyparts)[:, 0]
    return LabeledData(image_paths=list(df.index), keypoints=keypoints, unique_keypoints=unique)


def check_bodyparts(project: Project, df: pd.DataFrame, path: Path) -> None:
    """Raises ProjectError when a label file's bodyparts differ from those of config.yaml.

    A bodypart renamed in config.yaml (or in the labels) would otherwise train silently: the
    config's name has no column, so every image counts it as unlabeled, while the labels under
    the other name are never read. Order does not matter (columns are looked up by name).
    Multi-animal: ``multianimalbodyparts`` must match each individual's bodyparts and
    ``uniquebodyparts`` those of the individual "single". A single-animal project labelled
    with an individuals level is compared against the individual load_labels reads.

    Args:
        project: the project (its config.yaml's bodyparts).
        df: the label file as read_label_file returns it.
        path: the label file (for the message).
    """
    try:
        where = path.relative_to(project.project_path).as_posix()
    except ValueError:
        where = str(path)
    if "individuals" not in df.columns.names:
        # A file without individuals holds every bodypart of the project at one level.
        _compare_bodyparts("bodyparts" if not project.multianimal
                           else "multianimalbodyparts + uniquebodyparts",
                           project.bodyparts + project.unique_bodyparts,
                           _unique(df.columns.get_level_values("bodyparts")), f"in {where}")
        return
    by_individual: dict[str, list[str]] = {}
    for ind, bp in zip(df.columns.get_level_values("individuals"),
                       df.columns.get_level_values("bodyparts")):
        names = by_individual.setdefault(str(ind), [])
        if str(bp) not in names:
            names.append(str(bp))
    animals = [ind for ind in by_individual if ind != "single"]
    if not project.multianimal:
        # load_labels reads the first individual that is not "single".
        labelled = by_individual[animals[0]] if animals else []
        _compare_bodyparts("bodyparts", project.bodyparts, labelled, f"in {where}")
        return
    for ind in animals:
        _compare_bodyparts("multianimalbodyparts", project.bodyparts, by_individual[ind],
                           f"of individual {ind} in {where}")
    _compare_bodyparts("uniquebodyparts", project.unique_bodyparts,
                       by_individual.get("single", []), f"of individual single in {where}")


def _unique(values) -> list[str]:
    out: list[str] = []
    for value in values:
        if str(value) not in out:
            out.append(str(value))
    return out


def _compare_bodyparts(key: str, configured: list[str], labelled: list[str], where: str) -> None:
    missing = [b for b in configured if b not in labelled]
    extra = [b for b in labelled if b not in configured]
    if not missing and not extra:
        return
    details = []
    if missing:
        details.append(f"missing from the labels: {', '.join(missing)}")
    if extra:
        details.append(f"labelled but not in config.yaml: {', '.join(extra)}")
    raise ProjectError(f"config.yaml {key} [{', '.join(configured)}] do not match the labels "
                       f"{where}: [{', '.join(labelled)}] ({'; '.join(details)})")


def _to_array(df: pd.DataFrame, project: Project, individuals: list[str],
              bodyparts: list[str]) -> np.ndarray:
    """(M, N, K, 3) keypoints; a bodypart without a column counts as unlabeled.

    check_bodyparts has already refused label files whose bodyparts differ from the config's,
    so a missing column here means an individual the file does not label at all.
    """
    has_ind = "individuals" in df.columns.names
    cols = df.columns.droplevel("scorer") if "scorer" in df.columns.names else df.columns
    values = df.to_numpy()
    lookup = {col: i for i, col in enumerate(cols)}
    out = np.zeros((len(df), len(individuals), len(bodyparts), 3), dtype=np.float32)
    found = False
    for n, ind in enumerate(individuals):
        for k, bp in enumerate(bodyparts):
            key_x = (ind, bp, "x") if has_ind else (bp, "x")
            key_y = (ind, bp, "y") if has_ind else (bp, "y")
            if key_x not in lookup or key_y not in lookup:
                continue
            found = True
            xy = values[:, [lookup[key_x], lookup[key_y]]].astype(np.float32)
            ok = np.isfinite(xy).all(axis=1)
            out[ok, n, k, :2] = xy[ok]
            out[ok, n, k, 2] = 2.0
    if not found:
        raise ProjectError(f"labels under {project.labeled_data_dir} hold none of the bodyparts "
                           f"{bodyparts} (individuals {individuals})")
    return out
