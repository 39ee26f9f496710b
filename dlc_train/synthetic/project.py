"""Write a complete DeepLabCut project: config.yaml, labeled-data, a video and its ground truth.

Layout (``{task}-{scorer}-{date}/``)::

    config.yaml
    labeled-data/<video_stem>/img0000.png ... CollectedData_<scorer>.csv / .h5
    videos/<video_stem>.mp4
    videos/<video_stem>_groundtruth.csv      # frame,individual,bodypart,x,y (NaN = outside)

Keypoints outside the frame are NaN in both the labels and the ground truth (DeepLabCut's
"unlabeled"). Labeled poses are resampled until every keypoint is inside, so labels have no NaN in
practice; in the video only the tail tip leaves the frame, in about 5-10 % of the frames at the
default size (the animal turns away from walls, its tail can swing out). With
``video_motion="tracking"`` the video is the scripted scenario and the labeled frames are crowded
(animals touching, one across the border; covered keypoints unlabeled too). Same seed ->
identical PNG, CSV and ground truth bytes and (with this OpenCV/FFmpeg) an identical mp4; the .h5
content is identical but HDF5 stores timestamps, so compare it with pandas, not bytes.

The label files follow DeepLabCut exactly: the .h5 holds key ``df_with_missing`` (table format),
columns MultiIndex (scorer, bodyparts, coords) or, for several animals, (scorer, individuals,
bodyparts, coords); the index is the flat relative image path ``labeled-data/<stem>/imgNNNN.png``,
as in the openfield example (DeepLabCut >= 2.3 writes a 3-level row MultiIndex instead; readers
should accept both).
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import yaml

from .crowded import covered_keypoints, sample_crowded_poses
from .motion import inside, sample_frame_poses, simulate_video_poses
from .render import make_background, render_frame, sample_appearance
from .scenario import scenario_poses
from .spec import BODYPARTS, SKELETON, SyntheticSpec

GROUND_TRUTH_COLUMNS = ["frame", "individual", "bodypart", "x", "y"]


@dataclass(frozen=True)
class SyntheticProject:
    """Paths of a generated project."""

    project_dir: Path
    config_path: Path
    video_path: Path
    ground_truth_path: Path
    labeled_dir: Path
    labels_h5: Path
    labels_csv: Path


def _streams(seed: int) -> dict[str, np.random.Generator]:
    # Independent streams: changing e.g. num_video_frames leaves the labeled frames unchanged.
    names = ("background", "labeled", "labeled_noise", "video", "video_noise")
    children = np.random.SeedSequence(seed).spawn(len(names))
    return {n: np.random.default_rng(c) for n, c in zip(names, children)}


def _mask_outside(kps: np.ndarray, spec: SyntheticSpec) -> np.ndarray:
    # DeepLabCut marks unlabeled keypoints NaN; a keypoint outside the frame cannot be labeled.
    out = kps.astype(np.float64).copy()
    out[~inside(out, spec.width, spec.height)] = np.nan
    return out


def label_columns(spec: SyntheticSpec) -> pd.MultiIndex:
    """DeepLabCut's column MultiIndex for this spec."""
    if spec.multianimal:
        return pd.MultiIndex.from_product(
            [[spec.scorer], spec.individuals, list(BODYPARTS), ["x", "y"]],
            names=["scorer", "individuals", "bodyparts", "coords"])
    return pd.MultiIndex.from_product([[spec.scorer], list(BODYPARTS), ["x", "y"]],
                                      names=["scorer", "bodyparts", "coords"])


def _config(spec: SyntheticSpec, project_dir: Path, video_path: Path) -> dict:
    """config.yaml content with the openfield example's key set and order."""
    date = datetime.date.fromisoformat(spec.date)
    W, H = spec.width, spec.height
    cfg: dict = {
        "Task": spec.task,
        "scorer": spec.scorer,
        "date": f"{date:%b}{date.day}",
        "multianimalproject": spec.multianimal,
        "identity": False if spec.multianimal else None,
        "project_path": str(project_dir),
        "engine": "pytorch",
        "video_sets": {str(video_path): {"crop": f"0, {W}, 0, {H}"}},
    }
    if spec.multianimal:
        cfg.update({"individuals": spec.individuals, "uniquebodyparts": [],
                    "multianimalbodyparts": list(BODYPARTS), "bodyparts": "MULTI!"})
    else:
        cfg["bodyparts"] = list(BODYPARTS)
    cfg.update({
        "start": 0, "stop": 1, "numframes2pick": 20,
        "skeleton": [list(e) for e in SKELETON], "skeleton_color": "black", "pcutoff": 0.4,
        "dotsize": 4, "alphavalue": 0.7, "colormap": "jet",
        "TrainingFraction": [0.95], "iteration": 0, "default_net_type": spec.net_type,
        "default_augmenter": "albumentations", "snapshotindex": -1,
        "detector_snapshotindex": -1, "batch_size": 8, "detector_batch_size": 1,
        "cropping": False, "x1": 0, "x2": W, "y1": 0, "y2": H,
        "corner2move2": [50, 50], "move2corner": True,
        "SuperAnimalConversionTables": {"superanimal_topviewmouse": {
            "snout": "nose", "leftear": "left_ear", "rightear": "right_ear",
            "tailbase": "tail_base", "tailtip": "tail_end"}},
    })
    return cfg


def _write_labeled_frames(spec: SyntheticSpec, labeled_dir: Path, background: np.ndarray,
                          appearance, rngs: dict) -> pd.DataFrame:
    digits = max(4, len(str(spec.num_labeled_frames - 1)))
    rows, index = [], []
    crowded = spec.video_motion == "tracking"   # label what the scenario's video shows
    sample = sample_crowded_poses if crowded else sample_frame_poses
    for i in range(spec.num_labeled_frames):
        poses = sample(rngs["labeled"], spec, appearance)
        img, kps = render_frame(background, poses, rngs["labeled_noise"])
        name = f"img{i:0{digits}d}.png"
        if not cv2.imwrite(str(labeled_dir / name), img):
            raise OSError(f"could not write {labeled_dir / name}")
        labels = _mask_outside(kps, spec)
        if crowded:
            labels[covered_keypoints(poses, kps, spec.width, spec.height)] = np.nan
        rows.append(labels.reshape(-1))
        index.append(f"labeled-data/{spec.video_stem}/{name}")
    return pd.DataFrame(np.asarray(rows, np.float64), index=pd.Index(index),
                        columns=label_columns(spec))


def _write_video(spec: SyntheticSpec, video_path: Path, background: np.ndarray, appearance,
                 rngs: dict) -> np.ndarray:
    if spec.video_motion == "tracking":
        frames = scenario_poses(spec, appearance)
    else:
        frames = simulate_video_poses(rngs["video"], spec, appearance)
    writer = cv2.VideoWriter(str(video_path), cv2.VideoWriter_fourcc(*"mp4v"), float(spec.fps),
                             (spec.width, spec.height))
    if not writer.isOpened():
        raise OSError(f"cv2.VideoWriter could not open {video_path} (mp4v)")
    truth = np.empty((len(frames), spec.num_animals, len(BODYPARTS), 2), np.float64)
    try:
        for t, poses in enumerate(frames):
            img, kps = render_frame(background, poses, rngs["video_noise"])
            writer.write(img)
            truth[t] = _mask_outside(kps, spec)
    finally:
        writer.release()
    return truth


def write_ground_truth(path: Path, truth: np.ndarray, individuals: list[str]) -> None:
    """Long-format CSV: one row per (frame, individual, bodypart); NaN where outside the frame."""
    n, a, k, _ = truth.shape
    df = pd.DataFrame({
        "frame": np.repeat(np.arange(n), a * k),
        "individual": np.tile(np.repeat(np.asarray(individuals), k), n),
        "bodypart": np.tile(np.asarray(BODYPARTS), n * a),
        "x": truth[..., 0].reshape(-1), "y": truth[..., 1].reshape(-1)})
    df.to_csv(path, index=False)


def load_ground_truth(path: str | Path) -> np.ndarray:
    """Read a ground-truth CSV into (n_frames, n_animals, K, 2) float64 (NaN = not visible).

    Animals and bodyparts keep their order of first appearance in the file.
    """
    df = pd.read_csv(path)
    if list(df.columns) != GROUND_TRUTH_COLUMNS:
        raise ValueError(f"{path}: expected columns {GROUND_TRUTH_COLUMNS}, got {list(df.columns)}")
    n = int(df["frame"].max()) + 1
    a = df["individual"].nunique()
    k = df["bodypart"].nunique()
    if len(df) != n * a * k:
        raise ValueError(f"{path}: {len(df)} rows, expected {n}*{a}*{k}")
    return df[["x", "y"]].to_numpy(np.float64).reshape(n, a, k, 2)


def generate_project(dest_dir: str | Path, spec: SyntheticSpec | None = None) -> SyntheticProject:
    """Generate a DeepLabCut project under ``dest_dir`` (created if needed).

    Args:
        dest_dir: parent folder; the project goes to ``dest_dir/{task}-{scorer}-{date}``.
        spec: what to generate; defaults to ``SyntheticSpec()``.
    Returns:
        the paths of the project, config, video, ground truth and label files.
    Raises:
        FileExistsError: when the project folder already exists and is not empty.
    """
    spec = spec or SyntheticSpec()
    project_dir = (Path(dest_dir) / f"{spec.task}-{spec.scorer}-{spec.date}").resolve()
    if project_dir.exists() and any(project_dir.iterdir()):
        raise FileExistsError(f"{project_dir} exists and is not empty")
    labeled_dir = project_dir / "labeled-data" / spec.video_stem
    videos_dir = project_dir / "videos"
    labeled_dir.mkdir(parents=True, exist_ok=True)
    videos_dir.mkdir(parents=True, exist_ok=True)
    paths = SyntheticProject(
        project_dir=project_dir, config_path=project_dir / "config.yaml",
        video_path=videos_dir / f"{spec.video_stem}.mp4",
        ground_truth_path=videos_dir / f"{spec.video_stem}_groundtruth.csv",
        labeled_dir=labeled_dir, labels_h5=labeled_dir / f"CollectedData_{spec.scorer}.h5",
        labels_csv=labeled_dir / f"CollectedData_{spec.scorer}.csv")

    rngs = _streams(spec.seed)
    appearance = sample_appearance(rngs["background"])
    background = make_background(rngs["background"], spec.width, spec.height, appearance)

    labels = _write_labeled_frames(spec, labeled_dir, background, appearance, rngs)
    labels.to_csv(paths.labels_csv)
    labels.to_hdf(paths.labels_h5, key="df_with_missing", mode="w", format="table")

    truth = _write_video(spec, paths.video_path, background, appearance, rngs)
    write_ground_truth(paths.ground_truth_path, truth, spec.individuals)

    with open(paths.config_path, "w") as f:
        yaml.safe_dump(_config(spec, project_dir, paths.video_path), f, sort_keys=False)
    return paths
