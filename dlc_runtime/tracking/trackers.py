"""SORT trackers linking each frame's animals into tracklets: box, ellipse and skeleton.

DeepLabCut's trackers (``core/trackingutils.py``: ``SORTBox``, ``SORTEllipse``,
``SORTSkeleton``) with their parameter names: each live track is a constant-velocity Kalman
filter; a frame's detections are assigned to the predicted tracks with the Hungarian algorithm;
a pair is only matched when its similarity passes the threshold (box IoU ``iou_threshold``,
ellipse similarity ``iou_threshold``, skeleton OKS ``oks_threshold``); unmatched detections start
tracks; a track unmatched for more than ``max_age`` frames ends; a detection is reported under
its track once the track was matched ``min_hits`` frames in a row (or during the first
``min_hits`` frames of the video).

Streamed: ``update`` takes one frame, ``track_batch`` a batch; nothing looks back, and the state
is the live tracks. Input per frame: (N, K, 3) x, y, likelihood, NaN where a keypoint is missing;
an animal whose keypoints are all NaN is no detection. Output: (N,) track id per animal, -1 where
the animal is not (yet) tracked. Given a ``Tracklets`` store, tracked poses, identity scores and
unique bodyparts go there.

Where this differs from DeepLabCut, on purpose:
- A track's first detection counts as a hit (DeepLabCut's SORT reports a new track from its
  second frame on, except in the first ``min_hits`` frames of the video).
- Identity-head scores (N, n_ids) weigh the assignment as DeepLabCut's ellipse tracker does
  (a matching identity doubles the pair's score) but continuously: the weight is
  1 + p_detection . p_track, p_track the running mean of its detections' scores; the threshold
  gate uses the geometry only, so identity never links two far apart animals.
- Skeleton: DeepLabCut accepts ``oks_threshold`` but matches every pair; here None (default)
  keeps that, a number rejects pairs below that OKS. Unmatched skeleton tracks are not emitted
  as predicted poses.
"""
from __future__ import annotations

import numpy as np

from dlc_runtime.tracking import geometry
from dlc_runtime.tracking.kalman import KalmanBank
from dlc_runtime.tracking.tracklet_store import Tracklets

# A forbidden pair's score: low enough that the assignment takes any allowed pair first.
_FORBIDDEN = -1e9


class SortTracker:
    """Base class: the SORT loop; subclasses say what is measured and how pairs compare.

    Args:
        max_age: frames a track survives without a detection.
        min_hits: consecutive matched frames before a track's detections are reported.
        tracklets: optional store receiving the tracked poses.
        start_frame: frame index of the first ``update`` when frames are not given.
    """

    method = ""

    def __init__(self, max_age: int, min_hits: int, tracklets: Tracklets | None = None,
                 start_frame: int = 0) -> None:
        if int(max_age) != max_age or max_age < 0:
            raise ValueError(f"max_age must be a whole number of frames >= 0, got {max_age!r}")
        if int(min_hits) != min_hits or min_hits < 0:
            raise ValueError(f"min_hits must be a whole number of frames >= 0, got {min_hits!r}")
        self.max_age, self.min_hits = int(max_age), int(min_hits)
        self.tracklets = tracklets
        self.n_frames = 0
        self._next_frame = int(start_frame)
        self._bank: KalmanBank | None = None
        self._ids = np.zeros(0, dtype=np.int64)
        self._since = np.zeros(0, dtype=np.int64)  # frames since the last match
        self._streak = np.zeros(0, dtype=np.int64)
        self._id_sum: np.ndarray | None = None  # (T, n_ids) sum of matched identity scores
        self._id_count = np.zeros(0, dtype=np.int64)
        self._next_id = 0
        self._n_keypoints: int | None = None

    # --- what subclasses define -------------------------------------------------------------
    def _make_bank(self, m: int) -> KalmanBank:
        raise NotImplementedError

    def _measure(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(D, K, 2) detections -> (D, m) measurements (NaN where missing), (D,) usable."""
        raise NotImplementedError

    def _compare(self, z: np.ndarray, xy: np.ndarray, pred: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Detections vs predicted measurements -> (D, T) score (higher is better), allowed."""
        raise NotImplementedError

    def _weigh(self, score: np.ndarray, agreement: np.ndarray) -> np.ndarray:
        return score * (1 + agreement)

    def _before_predict(self, bank: KalmanBank) -> None:
        pass

    # --- the loop ---------------------------------------------------------------------------
    @property
    def live_ids(self) -> np.ndarray:
        """Ids of the tracks alive after the last frame."""
        return self._ids.copy()

    def track_identity(self, track_id: int) -> np.ndarray | None:
        """Running mean of the identity scores matched to a live track (None without any)."""
        where = np.flatnonzero(self._ids == track_id)
        if not len(where) or self._id_sum is None or self._id_count[where[0]] == 0:
            return None
        return self._id_sum[where[0]] / self._id_count[where[0]]

    def track_batch(self, keypoints: np.ndarray, identity: np.ndarray | None = None,
                    unique: np.ndarray | None = None, frames=None) -> np.ndarray:
        """``update`` over a batch: keypoints (B, N, K, 3), identity (B, N, n_ids), unique
        (B, K_unique, 3), frames (B,) -> (B, N) track ids."""
        keypoints = np.asarray(keypoints)
        if keypoints.ndim != 4:
            raise ValueError(f"a batch of animals must be (frames, animals, keypoints, 3), got "
                             f"shape {keypoints.shape}")
        out = np.full(keypoints.shape[:2], -1, dtype=np.int64)
        for b in range(len(keypoints)):
            out[b] = self.update(keypoints[b], None if identity is None else identity[b],
                                 None if unique is None else unique[b],
                                 None if frames is None else int(frames[b]))
        return out

    def update(self, keypoints: np.ndarray, identity: np.ndarray | None = None,
               unique: np.ndarray | None = None, frame: int | None = None) -> np.ndarray:
        """Track one frame: keypoints (N, K, 3), identity (N, n_ids) or None, unique bodyparts
        (K_unique, 3) or None (stored as they are) -> (N,) track ids, -1 where untracked."""
        kp, identity = self._check(keypoints, identity)
        frame = self._next_frame if frame is None else int(frame)
        self._next_frame = frame + 1
        self.n_frames += 1
        if unique is not None and self.tracklets is not None:
            self.tracklets.single[frame] = np.array(unique, dtype=np.float64)
        out = np.full(len(kp), -1, dtype=np.int64)

        present = np.flatnonzero(~np.isnan(kp[..., :2]).all(axis=(1, 2)))
        xy = kp[present, :, :2]
        z, usable = self._measure(xy)
        det, z, xy = present[usable], z[usable], xy[usable]
        det_id = None if identity is None else _normalized(identity[det])
        if self._bank is None:
            self._bank = self._make_bank(z.shape[1] if z.ndim == 2 else 0)

        rows = cols = np.zeros(0, dtype=np.int64)
        if len(self._ids):
            self._before_predict(self._bank)
            pred = self._bank.predict()
            self._streak[self._since > 0] = 0
            self._since += 1
            finite = np.isfinite(pred).all(axis=1)
            if not finite.all():  # a diverged filter (e.g. negative box area): end the track
                self._drop(~finite)
                pred = pred[finite]
            if len(det) and len(self._ids):
                score, allowed = self._compare(z, xy, pred)
                weighed = score
                if det_id is not None and self._id_sum is not None:
                    track_id = _normalized(self._id_sum / np.maximum(self._id_count, 1)[:, None])
                    weighed = self._weigh(score, det_id @ track_id.T)
                from scipy.optimize import linear_sum_assignment

                rows, cols = linear_sum_assignment(np.where(allowed, weighed, _FORBIDDEN),
                                                   maximize=True)
                ok = allowed[rows, cols]
                rows, cols = rows[ok], cols[ok]

        if len(rows):
            observed = ~np.isnan(z[rows])
            self._bank.update(cols, z[rows], None if observed.all() else observed)
            self._since[cols] = 0
            self._streak[cols] += 1
            self._add_identity(cols, det_id, rows)
        new = np.setdiff1d(np.arange(len(det)), rows)
        if len(new):
            self._start(z[new], det_id, new)
            rows = np.concatenate([rows, new])
            cols = np.concatenate([cols, np.arange(len(self._ids) - len(new), len(self._ids))])

        confirmed = (self._streak[cols] >= self.min_hits) | (self.n_frames <= self.min_hits)
        for r, c in zip(rows[confirmed], cols[confirmed]):
            out[det[r]] = self._ids[c]
            if self.tracklets is not None:
                self.tracklets.add(frame, self._ids[c], kp[det[r]],
                                   None if identity is None else identity[det[r]])
        dead = self._since > self.max_age
        if dead.any():
            self._drop(dead)
        return out

    def finish(self) -> None:
        """End of the video: every live tracklet in the store is closed."""
        if self.tracklets is not None:
            self.tracklets.close_all()

    # --- bookkeeping ------------------------------------------------------------------------
    def _check(self, keypoints, identity) -> tuple[np.ndarray, np.ndarray | None]:
        kp = np.asarray(keypoints, dtype=np.float64)
        if kp.ndim != 3 or kp.shape[-1] != 3:
            raise ValueError(f"a frame's animals must be (animals, keypoints, 3) x/y/likelihood, "
                             f"got shape {kp.shape}")
        if self._n_keypoints is None:
            self._n_keypoints = kp.shape[1]
        elif kp.shape[1] != self._n_keypoints:
            raise ValueError(f"{kp.shape[1]} keypoints per animal in this frame, "
                             f"{self._n_keypoints} before; one tracker follows one keypoint set")
        if identity is not None:
            identity = np.asarray(identity, dtype=np.float64)
            if identity.ndim != 2 or len(identity) != len(kp):
                raise ValueError(f"identity scores must be (animals, individuals) with "
                                 f"{len(kp)} rows, got shape {identity.shape}")
            if self._id_sum is not None and identity.shape[1] != self._id_sum.shape[1]:
                raise ValueError(f"{identity.shape[1]} identity scores per animal, "
                                 f"{self._id_sum.shape[1]} before")
        return kp, identity

    def _start(self, z: np.ndarray, det_id: np.ndarray | None, new: np.ndarray) -> None:
        self._bank.add(self._initial(z))
        n = len(z)
        self._ids = np.concatenate([self._ids, self._next_id + np.arange(n)])
        self._next_id += n
        self._since = np.concatenate([self._since, np.zeros(n, dtype=np.int64)])
        self._streak = np.concatenate([self._streak, np.ones(n, dtype=np.int64)])
        self._id_count = np.concatenate([self._id_count, np.zeros(n, dtype=np.int64)])
        if det_id is not None and self._id_sum is None:
            self._id_sum = np.zeros((len(self._ids) - n, det_id.shape[1]))
        if self._id_sum is not None:
            self._id_sum = np.concatenate([self._id_sum, np.zeros((n, self._id_sum.shape[1]))])
        self._add_identity(np.arange(len(self._ids) - n, len(self._ids)), det_id, new)

    def _initial(self, z: np.ndarray) -> np.ndarray:
        return z

    def _add_identity(self, cols, det_id, rows) -> None:
        if det_id is None or self._id_sum is None:
            return
        self._id_sum[cols] += det_id[rows]
        self._id_count[cols] += 1

    def _drop(self, mask: np.ndarray) -> None:
        if self.tracklets is not None:
            for track_id in self._ids[mask]:
                self.tracklets.close(track_id)
        keep = ~mask
        self._bank.keep(keep)
        self._ids, self._since = self._ids[keep], self._since[keep]
        self._streak, self._id_count = self._streak[keep], self._id_count[keep]
        if self._id_sum is not None:
            self._id_sum = self._id_sum[keep]


def _normalized(scores: np.ndarray) -> np.ndarray:
    """Rows as probabilities (negative scores clipped; an all-zero row stays zero)."""
    scores = np.clip(np.nan_to_num(scores), 0, None)
    total = scores.sum(axis=1, keepdims=True)
    return np.divide(scores, total, out=np.zeros_like(scores), where=total > 0)


class BoxTracker(SortTracker):
    """SORT on the animals' bounding boxes (DeepLabCut's ``SORTBox``).

    Args:
        iou_threshold: least IoU of a detection with a track's predicted box to match it.
        slack: pixels added on each side of the keypoints' box (``boundingboxslack``).
    """

    method = "box"

    def __init__(self, max_age: int = 1, min_hits: int = 1, iou_threshold: float = 0.3,
                 slack: float = 0.0, **kwargs) -> None:
        super().__init__(max_age, min_hits, **kwargs)
        self.iou_threshold, self.slack = float(iou_threshold), float(slack)

    def _make_bank(self, m: int) -> KalmanBank:
        # SORT's model: centre x, y and area with velocities, aspect ratio without.
        return KalmanBank(4, q_pos=1.0, q_vel=[0.01, 0.01, 1e-4, 0.0], r=[1, 1, 10, 10],
                          p0_pos=10.0, p0_vel=[1e4, 1e4, 1e4, 0.0])

    def _before_predict(self, bank: KalmanBank) -> None:
        # An area about to turn negative stops shrinking (SORT's guard).
        bank.vel[bank.vel[:, 2] + bank.pos[:, 2] <= 0, 2] = 0.0

    def _measure(self, xy):
        return geometry.box_to_z(geometry.boxes_from_keypoints(xy, self.slack)), np.ones(len(xy), bool)

    def _compare(self, z, xy, pred):
        score = geometry.iou(geometry.z_to_box(z), geometry.z_to_box(pred))
        return score, score >= self.iou_threshold


class EllipseTracker(SortTracker):
    """SORT on the ``sd``-sigma error ellipse of each animal's keypoints (``SORTEllipse``);
    animals with fewer than three visible keypoints have no ellipse and stay untracked.

    Args:
        iou_threshold: least ellipse similarity (0..1) of a detection with a track to match.
        sd: ellipse size in standard deviations.
    """

    method = "ellipse"

    def __init__(self, max_age: int = 1, min_hits: int = 1, iou_threshold: float = 0.6,
                 sd: float = 2.0, **kwargs) -> None:
        super().__init__(max_age, min_hits, **kwargs)
        self.iou_threshold, self.sd = float(iou_threshold), float(sd)

    def _make_bank(self, m: int) -> KalmanBank:
        # Centre x, y, width, height, angle, each with a velocity (DeepLabCut's noise levels).
        return KalmanBank(5, q_pos=1.0, q_vel=0.01, r=[1, 1, 10, 10, 10], p0_pos=10.0,
                          p0_vel=1e4)

    def _measure(self, xy):
        return geometry.fit_ellipses(xy, self.sd)

    def _compare(self, z, xy, pred):
        score = geometry.ellipse_similarity(z, pred)
        return score, score >= self.iou_threshold


class SkeletonTracker(SortTracker):
    """SORT on the keypoints themselves (``SORTSkeleton``): pairs cost the directed Hausdorff
    distance from the detection to the track's predicted pose; missing keypoints are not
    measured.

    Args:
        oks_threshold: None matches any pair (DeepLabCut's behaviour); a number is the least
            object keypoint similarity of a matched pair.
    """

    method = "skeleton"

    def __init__(self, max_age: int = 20, min_hits: int = 3, oks_threshold: float | None = None,
                 **kwargs) -> None:
        super().__init__(max_age, min_hits, **kwargs)
        self.oks_threshold = None if oks_threshold is None else float(oks_threshold)

    def _make_bank(self, m: int) -> KalmanBank:
        # Every coordinate with a velocity; velocities uncertain and free to change.
        return KalmanBank(m, q_pos=1.0, q_vel=10.0, r=1.0, p0_pos=1.0, p0_vel=1000.0)

    def _measure(self, xy):
        return xy.reshape(len(xy), 2 * xy.shape[1]), np.ones(len(xy), bool)

    def _initial(self, z):
        # Missing keypoints of a new track start at the animal's centroid (DeepLabCut's fill).
        xy = z.reshape(len(z), -1, 2)
        fill = np.nanmean(xy, axis=1, keepdims=True)
        return np.where(np.isnan(xy), fill, xy).reshape(len(z), -1)

    def _compare(self, z, xy, pred):
        pred_xy = pred.reshape(len(pred), -1, 2)
        score = -geometry.directed_hausdorff(xy, pred_xy)
        if self.oks_threshold is None:
            return score, np.ones(score.shape, bool)
        return score, geometry.keypoint_similarity(xy, pred_xy) >= self.oks_threshold

    def _weigh(self, score, agreement):
        return score / (1 + agreement)  # a distance: agreeing identity shrinks it


TRACKERS = {"box": BoxTracker, "ellipse": EllipseTracker, "skeleton": SkeletonTracker}


def make_tracker(method: str, **params) -> SortTracker:
    """A tracker by DeepLabCut's ``track_method`` name, with its parameters."""
    if method not in TRACKERS:
        raise ValueError(f"unknown track method {method!r}; use one of {sorted(TRACKERS)}")
    return TRACKERS[method](**params)
