"""evaluate_network: a shuffle's metrics and predictions, as ``deeplabcut.evaluate_network``.

For each shuffle and snapshot: predictions on every labeled image of the shuffle's split,
DeepLabCut 3's metrics on the train and the test images (:mod:`dlc_train.evaluation.run`), and
DeepLabCut 3's result files in its folders (:mod:`dlc_train.evaluation.results`); labeled
images with ``plotting``. Top-down shuffles run each detector snapshot with each pose
snapshot (or ground-truth boxes; :mod:`dlc_train.evaluation.top_down`); conditional top-down
shuffles run on the conditions of the bottom-up model their config names
(:mod:`dlc_train.evaluation.ctd`). docs/evaluate.md states where the numbers can differ from
DeepLabCut's.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from dlc_train.config import ConfigError, read_config_as_dict
from dlc_train.data.dlcloader import DLCLoader
from dlc_train.data.project import ProjectError, load_project
from dlc_train.evaluation import results as files
from dlc_train.evaluation.ctd import CondTopDownPredictor, conditions_model
from dlc_train.evaluation.metrics import pck_name
from dlc_train.evaluation.plots import (MODES, labeled_image_name, plot_labeled_image,
                                        require_matplotlib)
from dlc_train.evaluation.predict import ImagePredictor, evaluated_task
from dlc_train.evaluation.run import Evaluated, predict_split, rmse_per_bodypart, split_metrics
from dlc_train.evaluation.selection import parse_index, select_snapshots
from dlc_train.evaluation.top_down import DetectorBoxes, GroundTruthBoxes, TopDownPredictor
from dlc_train.runners.detector import SNAPSHOT_PREFIX as DETECTOR_PREFIX
from dlc_train.runners.snapshots import Snapshot, list_snapshots
from dlc_train.runners.train import resolve_device
from dlc_train.task import Task
# The scorer is the runtime's (plain string rules): evaluation files and analysis results of
# the same snapshot must carry the same name (docs/evaluate.md, dependency rule).
from dlc_runtime.scorer import dlc3_scorer

SPLITS = ("train", "test")


@dataclass
class EvaluationResult:
    """One evaluated snapshot.

    Attributes:
        scorer: DeepLabCut's scorer name of the snapshot (top-down with a detector:
            ``..._detector_<uid>_snapshot_<uid>``).
        snapshot: the snapshot file.
        scores: the results row as written (index columns, then ``<split> <metric>`` rounded to
            2 decimals).
        metrics: the unrounded metrics per split ("train", "test"), per-keypoint RMSE and PCK
            included.
        folder: the evaluation folder; ``files``: every file written, by kind ("predictions",
            "results", "combined"[, "keypoint_results"][, "pck_results"][, "plots"]).
    """

    scorer: str
    snapshot: Path
    scores: dict
    metrics: dict[str, dict[str, float]]
    folder: Path
    files: dict[str, Path] = field(default_factory=dict)
    detector: Path | None = None


class _TrainedShuffle(DLCLoader):
    """A shuffle's loader that refuses to make a split: evaluating on a new split would count
    training images as test images."""

    def _make_split(self):
        if not self.pose_config_path.is_file():
            raise ProjectError(_untrained(self))
        raise ProjectError(f"{self.split_path} is missing: shuffle {self.shuffle} has no "
                           "train/test split to evaluate on (it is written when the shuffle "
                           "is trained here)")


def _untrained(loader: DLCLoader) -> str:
    return (f"shuffle {loader.shuffle} (trainset {loader.train_pct}%) has no trained model: "
            f"{loader.pose_config_path} not found; train it first or pick another shuffle")


def evaluate_network(config: str | Path, shuffles: Iterable[int] = (1,),
                     trainingsetindex: int | str = 0, snapshotindex: int | str | None = None,
                     device: str | None = None, plotting: bool | str = False,
                     show_errors: bool = True, snapshots_to_evaluate: Sequence[str] | None = None,
                     comparison_bodyparts: str | Sequence[str] | None = None,
                     per_keypoint_evaluation: bool = False,
                     pcutoff: float | Sequence[float] | dict[str, float] | None = None,
                     pck_thresholds: Sequence[float] | None = None,
                     batch_size: int = 1, detector_snapshot_index: int | str | None = None,
                     ground_truth_boxes: bool = False) -> list[EvaluationResult]:
    """Evaluates snapshots of one or more shuffles (DeepLabCut 3's arguments, plus PCK).

    Bad arguments raise before anything is written: ConfigError (a bad value, a conditional
    top-down model whose conditions model is not named or not trained), ProjectError (an
    unknown or untrained shuffle), SnapshotError (no such snapshot), ImportError (plotting
    without matplotlib). A top-down shuffle without a
    detector snapshot is evaluated with ground-truth boxes, as DeepLabCut does.

    Args:
        config: the project's config.yaml.
        shuffles: shuffle numbers.
        trainingsetindex: index into TrainingFraction, or "all".
        snapshotindex: which snapshot (-1: the last, the best one when there is one), "all" or
            "best"; None: the project's ``snapshotindex``.
        device: "cpu", "cuda", "auto", ... (None: the pytorch_config's).
        plotting: draw labeled images (True or "bodypart": a colour per bodypart;
            "individual": per individual).
        show_errors: print each snapshot's results.
        snapshots_to_evaluate: snapshot names (``snapshot-050``); ``snapshotindex`` is then
            ignored.
        comparison_bodyparts: the bodyparts the metrics (and the .h5) cover; "all" or None:
            every one.
        per_keypoint_evaluation: also write ``<scorer>-keypoint-results.csv`` (RMSE per
            bodypart, train and test).
        pcutoff: likelihood threshold of ``rmse_pcutoff`` (one value, one per evaluated
            bodypart then unique bodypart, or a {bodypart: value} dict); None: the project's.
        pck_thresholds: pixel distances; PCK at each goes to ``<scorer>-pck-results.csv``.
        batch_size: images (top-down: crops) per forward pass (same-sized images only; the
            numbers do not change with it).
        detector_snapshot_index: top-down shuffles: which detector snapshot(s) find the boxes
            (as ``snapshotindex``); None: the project's ``detector_snapshotindex`` (-1 when
            unset; a null there means ground-truth boxes, as in DeepLabCut; so does a shuffle
            whose detector was never trained).
        ground_truth_boxes: top-down shuffles: crop around boxes made from the labels
            (``data.bbox_margin``) instead of running a detector.

    Returns:
        One EvaluationResult per evaluated (detector and) pose snapshot, detector by detector.
    """
    project = load_project(config)
    shuffles = [shuffles] if isinstance(shuffles, int) else list(shuffles)
    if isinstance(trainingsetindex, str) and trainingsetindex.strip().lower() == "all":
        indices = list(range(len(project.training_fractions)))
    elif isinstance(trainingsetindex, int) and not isinstance(trainingsetindex, bool):
        indices = [trainingsetindex]
    else:
        raise ConfigError(f"trainingsetindex {trainingsetindex!r}: use a number or 'all'")
    index = parse_index(snapshotindex, project.cfg.get("snapshotindex", -1))
    mode = _plot_mode(plotting)
    thresholds = [float(t) for t in (pck_thresholds or ())]
    if any(not np.isfinite(t) or t <= 0 for t in thresholds):
        raise ConfigError(f"PCK thresholds must be positive pixel distances, got {thresholds}")
    if int(batch_size) < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    project_detector = project.cfg.get("detector_snapshotindex", -1)
    detector_index = None if ground_truth_boxes or (
        detector_snapshot_index is None and project_detector is None) \
        else parse_index(detector_snapshot_index, project_detector)

    # Every shuffle and argument is checked before the first snapshot runs.
    jobs = []
    for trainset_index in indices:
        for shuffle in shuffles:
            loader = _TrainedShuffle(config, shuffle=shuffle, trainset_index=trainset_index)
            if not loader.pose_config_path.is_file():
                raise ProjectError(_untrained(loader))
            pose_cfg = read_config_as_dict(loader.pose_config_path)
            task = evaluated_task(pose_cfg, str(loader.pose_config_path))
            _check_bodyparts(loader, pose_cfg)
            chosen = Evaluated.choose(loader, comparison_bodyparts, pcutoff,
                                      loader.project.cfg.get("pcutoff"))
            prefix = (pose_cfg.get("runner") or {}).get("snapshot_prefix") or "snapshot"
            snapshots = select_snapshots(loader.train_folder, index, snapshots_to_evaluate,
                                         prefix)
            detectors = [None] if task != Task.TOP_DOWN else \
                _detector_snapshots(loader, pose_cfg, detector_index)
            if task == Task.COND_TOP_DOWN:
                conditions_model(loader, pose_cfg)  # named and trained: checked up front
            jobs.extend((loader, pose_cfg, chosen, snapshot, detector)
                        for detector in detectors for snapshot in snapshots)
    return [evaluate_snapshot(loader, pose_cfg, snapshot, chosen, device=device,
                              plot_mode=mode, show_errors=show_errors,
                              per_keypoint=per_keypoint_evaluation, pck_thresholds=thresholds,
                              batch_size=int(batch_size), detector=detector)
            for loader, pose_cfg, chosen, snapshot, detector in jobs]


def _detector_snapshots(loader: DLCLoader, pose_cfg: dict,
                        index: int | str | None) -> list[Snapshot | None]:
    """A top-down shuffle's detector snapshots to evaluate with; [None] (ground-truth boxes)
    when ``index`` is None or, as in DeepLabCut, when no detector snapshot was trained (said in
    one printed line); ConfigError when snapshots exist but the config has no detector."""
    if index is None:
        return [None]
    folder = loader.train_folder
    if not list_snapshots(folder, DETECTOR_PREFIX):
        print(f"shuffle {loader.shuffle} is a top-down model without a detector snapshot "
              f"({DETECTOR_PREFIX}-*.pt) in {folder}: evaluating with ground-truth boxes; train "
              "its detector (dlc train --detector-epochs N) to analyze videos")
        return [None]
    if not isinstance((pose_cfg.get("detector") or {}).get("model"), dict):
        raise ConfigError(f"{loader.pose_config_path} has no 'detector' section with a "
                          "'model' to run its detector snapshots: make the config again, or "
                          "evaluate with ground-truth boxes (--gt-boxes)")
    return list(select_snapshots(folder, index, None, DETECTOR_PREFIX))


def _check_bodyparts(loader: DLCLoader, pose_cfg: dict) -> None:
    """The model must predict the project's bodyparts (a config from another project, or one
    made before the bodyparts changed, would compare the wrong keypoints)."""
    meta = pose_cfg.get("metadata") or {}
    for key, expected in (("bodyparts", loader.bodyparts),
                          ("unique_bodyparts", loader.unique_bodyparts)):
        got = meta.get(key)
        if got is not None and [str(b) for b in got] != list(expected):
            raise ConfigError(f"{loader.pose_config_path} was made for {key} {list(got)}, the "
                              f"project has {list(expected)}: retrain the shuffle")


def _plot_mode(plotting: bool | str) -> str | None:
    if plotting is False or plotting is None:
        return None
    mode = "bodypart" if plotting is True else str(plotting).lower()
    if mode not in MODES:
        raise ConfigError(f"plotting {plotting!r}: use True, False, 'bodypart' or 'individual'")
    require_matplotlib()
    return mode


def evaluate_snapshot(loader: DLCLoader, pose_cfg: dict, snapshot: Snapshot, chosen: Evaluated,
                      device: str | None = None, plot_mode: str | None = None,
                      show_errors: bool = True, per_keypoint: bool = False,
                      pck_thresholds: Sequence[float] = (), batch_size: int = 1,
                      detector: Snapshot | None = None) -> EvaluationResult:
    """Evaluates one snapshot of a shuffle and writes its files (see :func:`evaluate_network`;
    ``chosen``: the compared bodyparts and pcutoff; ``detector``: a top-down model's detector
    snapshot, None: ground-truth boxes)."""
    project = loader.project
    scorer = dlc3_scorer(pose_cfg.get("net_type") or "unknown", f"{project.task}{project.date}",
                         loader.shuffle, snapshot.path,
                         detector.path if detector is not None else None)
    predictor = _predictor(loader, pose_cfg, snapshot, detector, device, batch_size)
    with_identity = bool((pose_cfg.get("metadata") or {}).get("with_identity")) \
        and "identity" in predictor.heads
    cutoff = chosen.pcutoff
    scores = {"%Training dataset": loader.train_fraction, "Shuffle number": loader.shuffle,
              "Training epochs": snapshot.epoch,
              "Detector epochs (TD only)": -1 if detector is None else detector.epoch,
              "pcutoff": ", ".join(str(v) for v in cutoff) if isinstance(cutoff, list)
              else cutoff}
    metrics: dict[str, dict[str, float]] = {}
    predictions: dict[str, dict] = {}
    for split in SPLITS:
        found = predict_split(predictor, loader, split)
        metrics[split] = split_metrics(loader, split, found, chosen, per_keypoint,
                                       pck_thresholds, with_identity)
        for key, value in metrics[split].items():
            if not key.startswith(("rmse_keypoint_", "rmse_unique_keypoint_", "PCK@")):
                scores[f"{split} {key}"] = round(value, 2)
        predictions.update({_relative(loader, path): pred for path, pred in found.items()})

    folder = files.evaluation_folder(project, loader.model_folder)
    written = _write(loader, folder, scorer, scores, metrics, predictions, chosen,
                     per_keypoint, pck_thresholds)
    if show_errors:
        print(f"Evaluation results for {written['results'].name} (pcutoff: {scores['pcutoff']}):")
        print(files.scores_frame(scores).iloc[0])
    if plot_mode is not None:
        written["plots"] = _plot(loader, folder / f"LabeledImages_{scorer}", predictions,
                                 chosen, plot_mode)
    return EvaluationResult(scorer, snapshot.path, scores, metrics, folder, written,
                            detector.path if detector is not None else None)


def _predictor(loader: DLCLoader, pose_cfg: dict, snapshot: Snapshot,
               detector: Snapshot | None, device: str | None, batch_size: int):
    """ImagePredictor for bottom-up models; TopDownPredictor with the detector's boxes (or the
    labels' boxes when ``detector`` is None) for top-down ones; CondTopDownPredictor with the
    conditions of the bottom-up model its config names for conditional top-down ones."""
    task = evaluated_task(pose_cfg, str(loader.pose_config_path))
    if task == Task.BOTTOM_UP:
        return ImagePredictor(pose_cfg, snapshot.path, device=device, batch_size=batch_size)
    device = resolve_device(device or (pose_cfg.get("runner") or {}).get("device")
                            or pose_cfg.get("device"))
    individuals = len(loader.individuals)
    if task == Task.COND_TOP_DOWN:
        bottom_up_cfg, bottom_up_snapshot = conditions_model(loader, pose_cfg)
        margin = (pose_cfg.get("data") or {}).get("bbox_margin")
        return CondTopDownPredictor(
            pose_cfg, snapshot.path,
            ImagePredictor(bottom_up_cfg, bottom_up_snapshot, device=str(device)),
            individuals, len(loader.bodyparts), len(loader.unique_bodyparts), device=device,
            batch_size=batch_size, bbox_margin=25.0 if margin is None else float(margin))
    if detector is not None:
        boxes = DetectorBoxes(pose_cfg, detector.path, individuals, device)
    else:
        margin = (pose_cfg.get("data") or {}).get("bbox_margin")
        labels = dict(loader.train_samples() + loader.test_samples())
        boxes = GroundTruthBoxes(labels, 20.0 if margin is None else float(margin))
    return TopDownPredictor(pose_cfg, snapshot.path, boxes, individuals, len(loader.bodyparts),
                            len(loader.unique_bodyparts), device=device, batch_size=batch_size)


def _relative(loader: DLCLoader, path: str) -> str:
    return Path(path).relative_to(loader.project.project_path).as_posix()


def _write(loader: DLCLoader, folder: Path, scorer: str, scores: dict, metrics: dict,
           predictions: dict, chosen: Evaluated, per_keypoint: bool,
           pck_thresholds: Sequence[float]) -> dict[str, Path]:
    subset = {rel: {"bodyparts": p["bodyparts"][:, chosen.kept],
                    **({"unique_bodyparts": p["unique_bodyparts"][:, chosen.kept_unique]}
                       if chosen.kept_unique else {})}
              for rel, p in predictions.items()}
    df = files.predictions_frame(scorer, subset, loader.individuals, chosen.bodyparts,
                                 chosen.unique_bodyparts)
    # Every labeled image, in the labels' order (as DeepLabCut reindexes to its dataset).
    df = df.reindex(pd.MultiIndex.from_tuples(
        [files.image_index(rel) for rel in loader.labels.image_paths]))
    written = {"predictions": files.write_h5(df, folder / f"{scorer}.h5")}
    written["results"] = folder / f"{scorer}-results.csv"
    written["combined"] = files.write_scores(files.scores_frame(scores), written["results"])
    if per_keypoint:
        written["keypoint_results"] = files.write_keypoint_results(
            {split: rmse_per_bodypart(metrics[split], chosen) for split in SPLITS},
            folder / f"{scorer}-keypoint-results.csv")
    if pck_thresholds:
        pck = {split: {pck_name(t): metrics[split].get(pck_name(t), float("nan"))
                       for t in pck_thresholds} for split in SPLITS}
        written["pck_results"] = files.write_pck_results(
            pck, folder / f"{scorer}-pck-results.csv")
    return written


def _plot(loader: DLCLoader, folder: Path, predictions: dict, chosen: Evaluated,
          mode: str) -> Path:
    cfg = loader.project.cfg
    train = set(loader.train_images)
    row = {path: i for i, path in enumerate(loader.labels.image_paths)}
    for rel in loader.train_images + loader.test_images:
        i, pred = row[rel], predictions[rel]
        unique_gt = unique_pred = None
        if chosen.kept_unique:
            unique_gt = loader.labels.unique_keypoints[i][None, chosen.kept_unique]
            unique_pred = pred["unique_bodyparts"][:, chosen.kept_unique]
        plot_labeled_image(loader.project.project_path / rel,
                           folder / labeled_image_name(rel, rel in train),
                           loader.labels.keypoints[i][:, chosen.kept],
                           pred["bodyparts"][:, chosen.kept],
                           pcutoff=float(cfg.get("pcutoff", 0.6)),
                           colormap=str(cfg.get("colormap") or "rainbow"),
                           dotsize=float(cfg.get("dotsize", 12)),
                           alpha=float(cfg.get("alphavalue", 0.7)), mode=mode,
                           unique_gt=unique_gt, unique_pred=unique_pred)
    return folder
