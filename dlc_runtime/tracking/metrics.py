"""Tracking metrics against ground truth (CLEAR MOT and identity metrics, by ``motmetrics``).

Each frame, every ground-truth animal with a keypoint in the frame is an object and every track
with a keypoint is a hypothesis. A pair's distance is the mean pixel distance over the
keypoints both have; pairs farther apart than ``max_distance`` (or with no keypoint in common)
cannot match. ``motmetrics`` does the matching across frames (it keeps a match while it stays
within reach, as CLEAR MOT prescribes) and computes the scores; nothing is recomputed here.

``motmetrics`` is an optional dependency (the ``tracking-metrics`` extra), imported only when
metrics are computed.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

INSTALL_HINT = "pip install 'dlc-deploy[tracking-metrics]'"
_METRICS = ["num_frames", "num_objects", "idf1", "idp", "idr", "mota", "motp", "num_switches",
            "num_fragmentations", "precision", "recall", "num_misses", "num_false_positives",
            "mostly_tracked", "num_unique_objects"]


@dataclass(frozen=True)
class TrackingMetrics:
    """Scores of tracks against ground truth.

    Attributes:
        idf1, idp, idr: identity F1, precision and recall (each animal's frames credited only
            to the one track best matched with it over the whole video).
        mota: multiple object tracking accuracy, 1 - (misses + false positives + switches) /
            objects; can be negative.
        motp_px: mean distance of the matched pairs, pixels.
        id_switches: times an animal's match moved to another track.
        fragmentations: times an animal's matched run was interrupted.
        precision, recall: matched pairs over hypotheses / over objects.
        misses, false_positives: objects without a match / hypotheses without one.
        frames, objects: frames scored; animal-frames in the ground truth.
        animals, mostly_tracked: animals in the ground truth; those matched >= 80 % of their
            frames.
        max_distance_px: the matching distance used.
    """

    idf1: float
    idp: float
    idr: float
    mota: float
    motp_px: float
    id_switches: int
    fragmentations: int
    precision: float
    recall: float
    misses: int
    false_positives: int
    frames: int
    objects: int
    animals: int
    mostly_tracked: int
    max_distance_px: float

    def summary(self) -> str:
        """One line for the terminal."""
        return (f"IDF1 {self.idf1:.3f}, MOTA {self.mota:.3f}, {self.id_switches} identity "
                f"switches, {self.fragmentations} fragmentations, precision "
                f"{self.precision:.3f}, recall {self.recall:.3f} ({self.frames} frames, "
                f"{self.objects} animal-frames, matched within {self.max_distance_px:.1f} px)")

    def as_dict(self) -> dict:
        return asdict(self)


def require_motmetrics():
    """The ``motmetrics`` module; ImportError (one line naming the extra) when absent."""
    try:
        import motmetrics
    except ImportError:
        raise ImportError(f"tracking metrics need motmetrics: {INSTALL_HINT}") from None
    return motmetrics


def _check(name: str, arr: np.ndarray, coords: tuple[int, ...]) -> None:
    if arr.ndim != 4 or arr.shape[-1] not in coords:
        raise ValueError(f"{name} must be (frames, animals, keypoints, "
                         f"{' or '.join(map(str, coords))}), got shape {arr.shape}")


def animal_extent(truth: np.ndarray) -> float:
    """Median, over frames and animals, of the largest distance between two keypoints of an
    animal (its size in pixels); NaN when no animal has two keypoints."""
    d = np.linalg.norm(truth[:, :, :, None] - truth[:, :, None], axis=-1)   # (F, A, K, K)
    d = np.where(np.isfinite(d), d, -np.inf).max(axis=(2, 3))
    d = d[np.isfinite(d) & (d > 0)]
    return float(np.median(d)) if len(d) else float("nan")


def pair_distances(truth_frame: np.ndarray, pred_frame: np.ndarray) -> np.ndarray:
    """(A, N) mean keypoint distance between each truth animal (A, K, 2) and each track
    (N, K, 2); NaN where they have no keypoint in common."""
    d = np.linalg.norm(truth_frame[:, None] - pred_frame[None], axis=-1)   # (A, N, K)
    shared = np.isfinite(d)
    with np.errstate(invalid="ignore"):
        mean = np.where(shared, d, 0.0).sum(-1) / shared.sum(-1)
    return np.where(shared.any(-1), mean, np.nan)


def tracking_metrics(tracks: np.ndarray, truth: np.ndarray, max_distance: float | None = None,
                     min_likelihood: float = 0.0) -> TrackingMetrics:
    """Score tracks against ground truth.

    Args:
        tracks: (F, N, K, 3) x, y, likelihood or (F, N, K, 2) x, y of N tracks (any N; track
            ``n`` is one identity throughout); NaN where a track has no keypoint.
        truth: (F, A, K, 2) ground truth, NaN where a keypoint is not in the frame (as
            :func:`dlc_train.synthetic.load_ground_truth` reads it).
        max_distance: farthest mean keypoint distance (pixels) of a match; None: half the
            animals' median size (:func:`animal_extent`).
        min_likelihood: keypoints below this likelihood count as absent (3-coordinate tracks).
    Returns:
        a :class:`TrackingMetrics`.
    Raises:
        ValueError: shapes that do not agree, or no usable distance; ImportError (one line
            naming the extra) when motmetrics is not installed.
    """
    tracks = np.asarray(tracks, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    _check("tracks", tracks, (2, 3))
    _check("truth", truth, (2,))
    if tracks.shape[0] != truth.shape[0] or tracks.shape[2] != truth.shape[2]:
        raise ValueError(f"tracks {tracks.shape[:3]} and truth {truth.shape[:3]} must have the "
                         "same frames and keypoints")
    xy = tracks[..., :2].copy()
    if tracks.shape[-1] == 3:
        xy[~(tracks[..., 2] >= min_likelihood)] = np.nan
    xy[~np.isfinite(xy).all(-1)] = np.nan
    if max_distance is None:
        max_distance = 0.5 * animal_extent(truth)
    if not (np.isfinite(max_distance) and max_distance > 0):
        raise ValueError(f"max_distance must be a positive number of pixels, got {max_distance}")
    mm = require_motmetrics()

    acc = mm.MOTAccumulator(auto_id=True)
    animal_ids, track_ids = np.arange(truth.shape[1]), np.arange(tracks.shape[1])
    for f in range(truth.shape[0]):
        present = np.isfinite(truth[f]).any(axis=(1, 2))
        found = np.isfinite(xy[f]).any(axis=(1, 2))
        d = pair_distances(truth[f][present], xy[f][found])
        d[d > max_distance] = np.nan
        acc.update(animal_ids[present], track_ids[found], d)
    row = mm.metrics.create().compute(acc, metrics=_METRICS, name="tracks").iloc[0]
    return TrackingMetrics(
        idf1=float(row["idf1"]), idp=float(row["idp"]), idr=float(row["idr"]),
        mota=float(row["mota"]), motp_px=float(row["motp"]),
        id_switches=int(row["num_switches"]), fragmentations=int(row["num_fragmentations"]),
        precision=float(row["precision"]), recall=float(row["recall"]),
        misses=int(row["num_misses"]), false_positives=int(row["num_false_positives"]),
        frames=int(row["num_frames"]), objects=int(row["num_objects"]),
        animals=int(row["num_unique_objects"]), mostly_tracked=int(row["mostly_tracked"]),
        max_distance_px=float(max_distance))
