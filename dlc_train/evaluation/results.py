"""Evaluation result files with DeepLabCut 3's names, folders and columns.

In ``<project>/evaluation-results-pytorch/iteration-<i>/<Task><date>-trainset<pct>shuffle<n>/``
(the project config's ``eval_prefix`` replaces the first folder when set, as in DeepLabCut):

- ``<scorer>.h5``: the predictions on every labeled image (key ``df_with_missing``; rows
  (``labeled-data``, video, image); columns (scorer, individuals, bodyparts, coords) with coords
  x, y, likelihood, single-animal projects under the individual ``animal``, unique bodyparts
  under ``single``).
- ``<scorer>-results.csv``: one row indexed by ``%Training dataset``, ``Shuffle number``,
  ``Training epochs``, ``Detector epochs (TD only)``, ``pcutoff``; columns ``train rmse``,
  ``train rmse_pcutoff``, ``train mAP``, ``train mAR`` (then identity accuracies
  ``train id_head_<bodypart>_accuracy``), the same for ``test``; values rounded to 2 decimals.
- ``../../CombinedEvaluation-results.csv``: every evaluated snapshot's row, sorted.
- ``<scorer>-keypoint-results.csv`` (per-keypoint evaluation): rows ``Train error (px)`` and
  ``Test error (px)``, one column per bodypart.
- ``<scorer>-pck-results.csv`` (ours; only with PCK thresholds): rows ``Train`` / ``Test``.

Every file is written to a temporary name and renamed, so none is ever left half-written.
"""
from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from dlc_io import atomic_path, atomic_write_text
from dlc_train.data.project import Project

INDEX_COLUMNS = ["%Training dataset", "Shuffle number", "Training epochs",
                 "Detector epochs (TD only)", "pcutoff"]
COMBINED_NAME = "CombinedEvaluation-results.csv"


def evaluation_folder(project: Project, model_folder: Path) -> Path:
    """The shuffle's results folder (named like its ``dlc-models-pytorch`` folder)."""
    prefix = project.cfg.get("eval_prefix") or "evaluation-results-pytorch"
    return (project.project_path / str(prefix) / f"iteration-{project.iteration}"
            / model_folder.name)


def image_index(relative_path: str) -> tuple[str, ...]:
    """``labeled-data/<video>/<image>`` -> ("labeled-data", video, image), DeepLabCut's row."""
    parts = PurePosixPath(relative_path).parts
    if len(parts) < 3 or parts[-3] != "labeled-data":
        raise ValueError(f"{relative_path} is not an image under labeled-data/<video>/")
    return tuple(parts[-3:])


def predictions_frame(scorer: str, predictions: dict[str, dict[str, np.ndarray]],
                      individuals: list[str], bodyparts: list[str],
                      unique_bodyparts: list[str]) -> pd.DataFrame:
    """DeepLabCut's evaluation DataFrame of predictions keyed by relative image path.

    Each ``bodyparts`` array must hold one animal per individual (N, K, 3).
    """
    columns = pd.MultiIndex.from_tuples(
        [(scorer, ind, bp, c) for ind in individuals for bp in bodyparts
         for c in ("x", "y", "likelihood")]
        + [(scorer, "single", bp, c) for bp in unique_bodyparts
           for c in ("x", "y", "likelihood")],
        names=["scorer", "individuals", "bodyparts", "coords"])
    rows = []
    for pred in predictions.values():
        values = [np.asarray(pred["bodyparts"])[..., :3].reshape(-1)]
        if unique_bodyparts:
            values.append(np.asarray(pred["unique_bodyparts"])[..., :3].reshape(-1))
        rows.append(np.concatenate(values))
    index = pd.MultiIndex.from_tuples([image_index(p) for p in predictions])
    return pd.DataFrame(np.asarray(rows).reshape(len(rows), len(columns)), index=index,
                        columns=columns)


def write_h5(df: pd.DataFrame, path: Path) -> Path:
    """``df`` under key ``df_with_missing`` (DeepLabCut's key), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, keep_suffix=True) as tmp:
        df.to_hdf(tmp, key="df_with_missing", mode="w")
    return path


def scores_frame(scores: dict) -> pd.DataFrame:
    """One snapshot's results row, indexed as DeepLabCut indexes it."""
    return pd.DataFrame([scores]).set_index(INDEX_COLUMNS)


def write_scores(df_scores: pd.DataFrame, path: Path) -> Path:
    """Writes the snapshot's ``-results.csv`` and merges its row into the combined file two
    folders up (the row of the same index is replaced); returns the combined file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, df_scores.to_csv())
    combined = path.parent.parent / COMBINED_NAME
    merged = df_scores
    if combined.is_file():
        earlier = pd.read_csv(combined, index_col=list(range(len(INDEX_COLUMNS))))
        merged = df_scores.combine_first(earlier)
    atomic_write_text(combined, merged.sort_index().to_csv())
    return combined


def write_keypoint_results(rmse_per_bodypart: dict[str, dict[str, float]], path: Path) -> Path:
    """``{"train": {bodypart: rmse}, "test": ...}`` -> ``<scorer>-keypoint-results.csv``."""
    index = [f"{split.capitalize()} error (px)" for split in rmse_per_bodypart]
    df = pd.DataFrame(list(rmse_per_bodypart.values()), index=index)
    atomic_write_text(path, df.to_csv())
    return path


def write_pck_results(pck: dict[str, dict[str, float]], path: Path) -> Path:
    """``{"train": {"PCK@5px": fraction}, "test": ...}`` -> ``<scorer>-pck-results.csv``."""
    df = pd.DataFrame(list(pck.values()), index=[split.capitalize() for split in pck])
    atomic_write_text(path, df.to_csv())
    return path
