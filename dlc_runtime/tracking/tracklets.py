"""A tracklet: one tracker id's poses over the frames where the tracker followed it.

The quantities stitching compares two tracklets with live here (what DeepLabCut's
``refine_training_dataset/stitch.py`` ``Tracklet`` computes): start and end frames, the
likelihood-weighted centroid and its velocity at either end, a translation-free shape
descriptor of the first and last pose, and the mean identity score when the model has an
identity head. Tracklets are immutable values: joining two makes a new one.
"""
from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

# Frames averaged for the velocity at an end: DeepLabCut uses the last (first) three.
_VELOCITY_FRAMES = 3


class Tracklet:
    """Poses of one tracked animal.

    Args:
        id: the tracker's id for it (any hashable; kept for the ``_el.pickle`` keys).
        frames: (T,) frame indices, strictly increasing once sorted (duplicates are an error).
        keypoints: (T, K, 3) x, y, likelihood; NaN x/y where a keypoint is missing (float32
            or float64, kept as given).
        identity: optional (T, n_individuals) identity-head scores per frame.
    """

    __slots__ = ("id", "frames", "keypoints", "identity", "_centroid")

    def __init__(self, id: Hashable, frames: Sequence[int] | np.ndarray, keypoints: np.ndarray,
                 identity: np.ndarray | None = None) -> None:
        frames = np.asarray(frames, dtype=np.int64).reshape(-1)
        keypoints = np.asarray(keypoints)
        if keypoints.dtype not in (np.float32, np.float64):  # a tracker's float32 stays so
            keypoints = keypoints.astype(np.float64)
        if keypoints.ndim != 3 or keypoints.shape[-1] != 3:
            raise ValueError(f"tracklet {id!r}: keypoints must be (frames, keypoints, 3) "
                             f"x/y/likelihood, got shape {keypoints.shape}")
        if len(frames) != len(keypoints):
            raise ValueError(f"tracklet {id!r}: {len(frames)} frame indices for "
                             f"{len(keypoints)} poses")
        if identity is not None:
            identity = np.asarray(identity, dtype=np.float64)
            if identity.ndim != 2 or len(identity) != len(frames):
                raise ValueError(f"tracklet {id!r}: identity scores must be (frames, "
                                 f"individuals) with {len(frames)} rows, got {identity.shape}")
        order = np.argsort(frames, kind="stable")
        if np.any(order != np.arange(len(order))):
            frames, keypoints = frames[order], keypoints[order]
            identity = identity[order] if identity is not None else None
        dup = np.flatnonzero(np.diff(frames) == 0)
        if len(dup):
            raise ValueError(f"tracklet {id!r}: frame {frames[dup[0]]} appears twice; a tracker "
                             "id holds one pose per frame")
        self.id = id
        self.frames = frames
        self.keypoints = keypoints
        self.identity = identity
        self._centroid: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.frames)

    def __repr__(self) -> str:
        if not len(self):
            return f"Tracklet({self.id!r}, empty)"
        return f"Tracklet({self.id!r}, frames {self.start}..{self.end}, {len(self)} poses)"

    @property
    def start(self) -> int:
        return int(self.frames[0])

    @property
    def end(self) -> int:
        return int(self.frames[-1])

    @property
    def is_continuous(self) -> bool:
        """No frame missing between start and end."""
        return self.end - self.start + 1 == len(self)

    def overlaps(self, other: Tracklet) -> bool:
        """Both hold a pose in some common frame (such tracklets can never be one animal)."""
        if self.end < other.start or other.end < self.start:
            return False
        return bool(np.isin(self.frames, other.frames, assume_unique=True).any())

    @property
    def centroid(self) -> np.ndarray:
        """(T, 2) likelihood-weighted mean of the keypoints; NaN in frames with none visible."""
        if self._centroid is None:
            xy = self.keypoints[..., :2]
            # The epsilon keeps frames whose keypoints all have likelihood 0 (tracker fills).
            like = np.nan_to_num(self.keypoints[..., 2:3]) + 1e-10
            w = np.where(np.isnan(xy[..., :1]), 0.0, like)
            with np.errstate(invalid="ignore"):
                self._centroid = np.nansum(xy * w, axis=1) / w.sum(axis=1)
        return self._centroid

    def velocity(self, where: str = "end") -> np.ndarray:
        """(2,) centroid velocity in pixels per frame over the last (``end``) or first
        (``start``) three poses; zero for a single pose."""
        if where not in ("start", "end"):
            raise ValueError(f"where must be 'start' or 'end', got {where!r}")
        sl = slice(-_VELOCITY_FRAMES, None) if where == "end" else slice(0, _VELOCITY_FRAMES)
        c, f = self.centroid[sl], self.frames[sl]
        if len(c) < 2:
            return np.zeros(2)
        v = np.diff(c, axis=0) / np.diff(f)[:, None]
        v = v[~np.isnan(v).any(axis=1)]
        return v.mean(axis=0) if len(v) else np.zeros(2)

    def shape_at(self, where: str = "end") -> np.ndarray:
        """(K, 2) pose at the first or last frame relative to its centroid: a descriptor of
        posture and size that does not depend on where the animal is."""
        i = -1 if where == "end" else 0
        return self.keypoints[i, :, :2] - self.centroid[i]

    @property
    def likelihood(self) -> float:
        """Mean keypoint likelihood."""
        return float(np.nanmean(self.keypoints[..., 2])) if len(self) else float("nan")

    @property
    def mean_identity(self) -> np.ndarray | None:
        """(n_individuals,) identity scores averaged over frames; None without identity."""
        if self.identity is None or not len(self):
            return None
        return np.nanmean(self.identity, axis=0)

    @property
    def identity_label(self) -> int:
        """The most likely individual, or -1 without identity scores (DeepLabCut's convention)."""
        mean = self.mean_identity
        if mean is None or np.all(np.isnan(mean)):
            return -1
        return int(np.nanargmax(mean))

    def take(self, mask: np.ndarray) -> Tracklet:
        """The tracklet restricted to the frames where ``mask`` is true (same id)."""
        if mask.all():
            return self  # immutable: no copy needed
        ident = self.identity[mask] if self.identity is not None else None
        return Tracklet(self.id, self.frames[mask], self.keypoints[mask], ident)

    def split_at_gaps(self) -> list[Tracklet]:
        """Continuous pieces: a missing frame often marks a tracker's identity switch."""
        cuts = np.flatnonzero(np.diff(self.frames) != 1) + 1
        bounds = [0, *cuts.tolist(), len(self)]
        out = []
        for a, b in zip(bounds[:-1], bounds[1:]):
            mask = np.zeros(len(self), dtype=bool)
            mask[a:b] = True
            out.append(self.take(mask))
        return out

    def without_empty_frames(self) -> Tracklet:
        """Frames where every keypoint is missing removed (DeepLabCut's ``purify_tracklet``)."""
        return self.take(~np.isnan(self.keypoints[..., :2]).all(axis=(1, 2)))

    def join(self, other: Tracklet, id: Hashable | None = None) -> Tracklet:
        """Both tracklets' poses as one (they must not overlap in time)."""
        if self.overlaps(other):
            raise ValueError(f"cannot join {self!r} and {other!r}: they overlap in time")
        if (self.identity is None) != (other.identity is None):
            ident = None  # one side has no identity head output: the joint has none either
        else:
            ident = (np.concatenate([self.identity, other.identity])
                     if self.identity is not None else None)
        return Tracklet(self.id if id is None else id,
                        np.concatenate([self.frames, other.frames]),
                        np.concatenate([self.keypoints, other.keypoints]), ident)


def join_all(tracklets: Sequence[Tracklet], id: Hashable | None = None) -> Tracklet:
    """Join non-overlapping tracklets into one, in time order (one copy of their poses); the
    id is the earliest one's unless ``id`` is given."""
    parts = sorted(tracklets, key=lambda t: t.start)
    if not parts:
        raise ValueError("nothing to join: no tracklets given")
    if len(parts) == 1 and id is None:
        return parts[0]
    if any(t.identity is None for t in parts):
        identity = None  # a part without identity scores: the joint has none either
    else:
        identity = np.concatenate([t.identity for t in parts])
    try:
        return Tracklet(parts[0].id if id is None else id,
                        np.concatenate([t.frames for t in parts]),
                        np.concatenate([t.keypoints for t in parts]), identity)
    except ValueError as err:  # a frame held twice
        raise ValueError(f"cannot join {parts}: they overlap in time ({err})") from None
