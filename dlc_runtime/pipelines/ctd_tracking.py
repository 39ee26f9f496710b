"""Conditional top-down (CTD) tracking: frame t's conditions are frame t-1's tracked poses.

DeepLabCut 3's CTD tracking (``CTDTrackingConfig``, ``analyze_videos(..., ctd_tracking=True)``),
with its parameters and defaults. Slot i of the output is the same animal for the whole video:

- Bottom-up (the nested conditions bundle) runs when no animal is tracked (the first frame, or
  after every track was lost: then the slots are filled as the plain CTD pipeline fills them),
  every ``bu_min_frequency`` frames when set, and, while fewer than M animals are tracked and
  ``bu_on_lost_idv``, once ``bu_max_frequency`` frames have passed since its last run.
- A re-seeding keeps every tracked animal's own condition; a bottom-up animal whose best object
  keypoint similarity (OKS, sigma 0.1) with the tracked poses is below ``threshold_bu_add`` is
  new, and the new ones, least similar first, take the free slots in slot order.
- After the pose graph, keypoints with likelihood <= ``threshold_ctd`` or outside the frame are
  not passed on; a slot whose pose has fewer than two keypoints left or is no usable condition
  (DeepLabCut's condition rules, :func:`~dlc_runtime.pipelines.ctd.condition_mask`) is freed,
  and so is the later of two poses with OKS >= ``threshold_nms`` (oldest track kept, then the
  best mean likelihood): two conditions that converged on one animal.

The frame's output is what the pose graph returned for every slot that had a condition (also a
slot freed after it, as DeepLabCut writes it); empty slots are NaN with likelihood 0. Frames go
through one at a time, in order: the state (previous poses, track ages, frames since bottom-up)
carries across :meth:`CTDTrackingPipeline.submit` calls until :meth:`CTDTrackingPipeline.reset`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from dlc_runtime.errors import BackendError, BundleError, TrackingError
from dlc_runtime.frames import Frames
from dlc_runtime.pipelines.base import PendingPose
from dlc_runtime.pipelines.ctd import CondTopDownPipeline, condition_mask, select_conditions

if TYPE_CHECKING:
    from dlc_runtime.backends.base import Backend
    from dlc_runtime.bundle import Bundle

#: DeepLabCut's OKS sigma (every keypoint) and box margin for the CTD tracking comparisons.
OKS_SIGMA = 0.1
NMS_MARGIN = 1.0


@dataclass(frozen=True)
class CTDTrackingOptions:
    """DeepLabCut's ``CTDTrackingConfig``: same names, meanings and defaults.

    Args:
        bu_on_lost_idv: run bottom-up when fewer animals than slots are tracked.
        bu_min_frequency: run bottom-up every this many frames; None: only when needed.
        bu_max_frequency: with an animal lost, bottom-up runs at most every this many frames;
            None: on every such frame.
        threshold_bu_add: a bottom-up animal whose best OKS with the tracked poses is below this
            is added as a new animal.
        threshold_ctd: keypoints with a likelihood at or below this are not passed on as the
            next frame's conditions.
        threshold_nms: OKS at or above which two tracked poses are one animal (the younger
            track is freed).
    """

    bu_on_lost_idv: bool = True
    bu_min_frequency: int | None = None
    bu_max_frequency: int | None = 100
    threshold_bu_add: float = 0.25
    threshold_ctd: float = 0.01
    threshold_nms: float = 0.9

    def __post_init__(self) -> None:
        if not isinstance(self.bu_on_lost_idv, (bool, np.bool_)):
            raise TrackingError(f"CTD tracking: bu_on_lost_idv must be true or false, got "
                                f"{self.bu_on_lost_idv!r}")
        for name in ("bu_min_frequency", "bu_max_frequency"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) \
                    or not float(value).is_integer() or value < 1:
                raise TrackingError(f"CTD tracking: {name} must be a whole number of frames "
                                    f">= 1 or None, got {value!r}")
            object.__setattr__(self, name, int(value))
        for name in ("threshold_bu_add", "threshold_ctd", "threshold_nms"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) \
                    or not 0.0 <= float(value) <= 1.0:
                raise TrackingError(f"CTD tracking: {name} must be a number in [0, 1], got "
                                    f"{value!r}")

    @classmethod
    def from_dict(cls, config: Mapping[str, Any],
                  video_fps: float | None = None) -> CTDTrackingOptions:
        """Options from a dict of DeepLabCut's keys (unknown keys are refused).

        Args:
            video_fps: as DeepLabCut's ``CTDTrackingConfig.build``: when given, the two
                frequencies are in seconds and become ``int(seconds * fps)`` frames.
        """
        if not isinstance(config, Mapping):
            raise TrackingError(f"CTD tracking options must be a mapping, got "
                                f"{type(config).__name__}")
        names = [f.name for f in fields(cls)]
        unknown = sorted(str(k) for k in config if k not in names)
        if unknown:
            raise TrackingError(f"CTD tracking has no option {', '.join(unknown)}; it takes "
                                f"{', '.join(names)}")
        values = dict(config)
        if video_fps is not None:
            for name in ("bu_min_frequency", "bu_max_frequency"):
                if values.get(name) is not None:
                    values[name] = int(values[name] * video_fps)
        return cls(**values)

    @classmethod
    def build(cls, value: bool | Mapping[str, Any] | CTDTrackingOptions | None
              ) -> CTDTrackingOptions | None:
        """``ctd_tracking=`` of the analysis: False/None: off; True: defaults; a dict or
        options: those."""
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, cls):
            return value
        return cls.from_dict(value)  # type: ignore[arg-type]


def object_keypoint_similarity(pred: np.ndarray, true: np.ndarray, sigma: float = OKS_SIGMA,
                               margin: float = 0.0) -> np.ndarray:
    """DeepLabCut's ``calc_object_keypoint_similarity`` for every pair, (P, K, 2) x (T, K, 2) ->
    (P, T), NaN coordinates hidden.

    Over the keypoints visible in ``true``: mean of exp(-d^2 / (2 A (2 sigma)^2)), A the area of
    their span (+ ``margin`` on each side), a hidden predicted keypoint counting 0. NaN where
    ``true`` has fewer than two visible keypoints or no area.
    """
    pred = np.asarray(pred, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    visible = np.isfinite(true).all(axis=-1)  # (T, K)
    seen = np.where(visible[..., None], true, np.nan)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN spans: the NaN rows below
        span = np.nanmax(seen, axis=1) - np.nanmin(seen, axis=1)
    area = np.prod(span + np.spacing(1) + 2 * margin, axis=-1)  # (T,)
    d2 = ((pred[:, None] - true[None]) ** 2).sum(-1)  # (P, T, K)
    d2 = np.where(np.isnan(d2), np.inf, d2)
    with np.errstate(invalid="ignore", divide="ignore"):
        sim = np.exp(-d2 / (2 * area[None, :, None] * (2 * sigma) ** 2))
        out = np.where(visible[None], sim, 0.0).sum(-1) / visible.sum(-1)[None]
    bad = (visible.sum(-1) < 2) | np.isclose(area, 0) | ~np.isfinite(area)
    out[:, bad] = np.nan
    return out


class CTDTrackingPipeline(CondTopDownPipeline):
    """A CTD bundle run as DeepLabCut's CTD tracking: slot i is identity i for the whole video.

    Args:
        bundle: a loaded ``cond_top_down`` bundle.
        backend: as :class:`~dlc_runtime.pipelines.ctd.CondTopDownPipeline` (runs the
            ``conditions`` graph; the pose graph is opened beside it).
        device: used only when ``backend`` is None.
        bu_on_lost_idv, bu_min_frequency, bu_max_frequency, threshold_bu_add, threshold_ctd,
            threshold_nms: :class:`CTDTrackingOptions`.

    Frames must come in video order; call :meth:`reset` before another video.

    Attributes:
        options: the :class:`CTDTrackingOptions`.
        bottom_up_runs: frames on which the conditions model ran since :meth:`reset`.
    """

    def __init__(self, bundle: Bundle, backend: Backend | None = None, device: str = "cpu", *,
                 bu_on_lost_idv: bool = True, bu_min_frequency: int | None = None,
                 bu_max_frequency: int | None = 100, threshold_bu_add: float = 0.25,
                 threshold_ctd: float = 0.01, threshold_nms: float = 0.9) -> None:
        self.options = CTDTrackingOptions(
            bu_on_lost_idv=bu_on_lost_idv, bu_min_frequency=bu_min_frequency,
            bu_max_frequency=bu_max_frequency, threshold_bu_add=threshold_bu_add,
            threshold_ctd=threshold_ctd, threshold_nms=threshold_nms)
        super().__init__(bundle, backend, device)
        self.reset()

    @classmethod
    def from_options(cls, bundle: Bundle, backend: Backend | None = None, device: str = "cpu",
                     options: CTDTrackingOptions | None = None) -> CTDTrackingPipeline:
        return cls(bundle, backend, device, **asdict(options or CTDTrackingOptions()))

    def reset(self) -> None:
        """Forget the tracks: the next frame starts a new video (bottom-up runs on it)."""
        k = self.n_bodyparts
        #: per slot, the conditions of the next frame (hidden keypoints (0, 0, 0)).
        self._poses = np.zeros((self.m, k, 3), np.float32)
        self._tracked = np.zeros(self.m, bool)
        self._ages = np.zeros(self.m, np.int64)  # frames each track has been kept
        self._bu_age = -1  # frames since bottom-up last ran
        self.bottom_up_runs = 0

    def state(self) -> dict:
        """The tracks after the last frame, as plain lists (a checkpoint saves them; with
        :meth:`restore` a resumed analysis continues exactly where it stopped)."""
        return {"poses": self._poses.tolist(), "tracked": self._tracked.tolist(),
                "ages": self._ages.tolist(), "bu_age": int(self._bu_age),
                "bottom_up_runs": int(self.bottom_up_runs)}

    def restore(self, state: dict) -> None:
        """Continue from a :meth:`state` of the same bundle."""
        poses = np.asarray(state["poses"], np.float32)
        if poses.shape != self._poses.shape:
            raise BundleError(f"a CTD tracking state of shape {poses.shape} does not fit "
                              f"{self.bundle.path} ({self._poses.shape})")
        self._poses = poses
        self._tracked = np.asarray(state["tracked"], bool)
        self._ages = np.asarray(state["ages"], np.int64)
        self._bu_age = int(state["bu_age"])
        self.bottom_up_runs = int(state["bottom_up_runs"])

    # -- per frame ------------------------------------------------------------------------------
    def submit(self, frames: Frames) -> PendingPose:
        """Keypoints (B, N, K, 3) of the next B frames of the video, slot i identity i. Runs
        now, frame by frame: each frame's conditions come from the one before."""
        images = self.preprocess(frames)
        out = np.zeros((len(images), self.m, self.n_bodyparts, 3), np.float32)
        valid = np.zeros((len(images), self.m), bool)
        for i, image in enumerate(images):
            out[i], valid[i] = self._step(image)
        return PendingPose.ready(self.postprocess(out, valid))

    def _step(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One frame: (keypoints (M, K, 3), slots that had a condition (M,))."""
        hw = image.shape[:2]
        self._bu_age += 1
        if self._bottom_up_due():
            self._bu_age = 0
            self.bottom_up_runs += 1
            found = self.conditions(image[None]).keypoints
            if self._tracked.any():
                self._add_new(found[0], hw)
            else:  # nothing tracked: the plain CTD pipeline's choice
                chosen, valid = select_conditions(found, self.m, hw, self.bbox_margin,
                                                  self.min_score)
                self._poses, self._tracked = chosen[0], valid[0]
                self._ages[:] = 0
        valid = self._tracked & condition_mask(self._poses[None], hw, self.bbox_margin,
                                               self.min_score)[0]
        keypoints = np.zeros_like(self._poses)
        if valid.any():
            conditions = np.where(valid[:, None, None], self._poses, 0.0).astype(np.float32)
            keypoints = self._run_pose(image, conditions)
        self._update(keypoints, valid, hw)
        return keypoints, valid

    def _bottom_up_due(self) -> bool:
        opts = self.options
        if not self._tracked.any():
            return True
        if opts.bu_min_frequency is not None and self._bu_age >= opts.bu_min_frequency:
            return True
        lost = int(self._tracked.sum()) < self.m
        return lost and opts.bu_on_lost_idv and (opts.bu_max_frequency is None
                                                 or self._bu_age >= opts.bu_max_frequency)

    def _run_pose(self, image: np.ndarray, conditions: np.ndarray) -> np.ndarray:
        n = max(1, self.batch.min)  # a static-batch graph gets the frame repeated
        out = self.pose.run(np.repeat(image[None], n, axis=0),
                            conditions=np.repeat(conditions[None], n, axis=0))["keypoints"]
        if out.ndim != 4 or out.shape[1:] != conditions.shape:
            raise BackendError(f"pose graph of {self.bundle.path} returned keypoints of shape "
                               f"{out.shape}, expected (B, {self.m}, {self.n_bodyparts}, 3); "
                               "re-export it")
        return np.asarray(out[0], dtype=np.float32)

    def _passed_on(self, keypoints: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
        """Keypoints as conditions: those at or below ``threshold_ctd``, not finite or outside
        the frame become hidden (0, 0, 0)."""
        kp = np.asarray(keypoints, dtype=np.float32)
        x, y, score = kp[..., 0], kp[..., 1], kp[..., 2]
        with np.errstate(invalid="ignore"):
            seen = np.isfinite(kp).all(-1) & (score > self.options.threshold_ctd) \
                & (x >= 0) & (y >= 0) & (x < hw[1]) & (y < hw[0])
        return np.where(seen[..., None], kp, 0.0).astype(np.float32)

    def _usable(self, poses: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
        """(P, K, 3) passed-on poses -> (P,) enough keypoints to compare and a usable
        condition."""
        need = min(2, self.n_bodyparts)
        return ((poses[..., 2] > 0).sum(-1) >= need) & condition_mask(
            poses[None], hw, self.bbox_margin, self.min_score)[0]

    def _add_new(self, found: np.ndarray, hw: tuple[int, int]) -> None:
        """Bottom-up animals unlike every tracked pose take the free slots."""
        free = np.flatnonzero(~self._tracked)
        candidates = self._passed_on(found, hw)
        candidates = candidates[self._usable(candidates, hw)]
        if not len(free) or not len(candidates):
            return
        oks = object_keypoint_similarity(_xy(candidates), _xy(self._poses[self._tracked]))
        best = np.fmax.reduce(oks, axis=1, initial=0.0)  # NaN (no area) counts as no match
        new = np.flatnonzero(best < self.options.threshold_bu_add)
        new = new[np.argsort(best[new], kind="stable")][:len(free)]
        slots = free[:len(new)]
        self._poses[slots] = candidates[new]
        self._tracked[slots] = True
        self._ages[slots] = 0

    def _update(self, keypoints: np.ndarray, valid: np.ndarray, hw: tuple[int, int]) -> None:
        """The next frame's conditions from this frame's poses (thresholds, then NMS)."""
        poses = self._passed_on(keypoints, hw)
        keep = valid & self._usable(poses, hw)
        candidates = np.flatnonzero(keep)
        visible = poses[candidates, :, 2] > 0
        score = np.where(visible, poses[candidates, :, 2], 0).sum(-1) / visible.sum(-1)
        # Oldest track first, then the best mean likelihood (DeepLabCut's NMS order).
        order = candidates[np.lexsort((-score, -self._ages[candidates]))]
        kept: list[int] = []
        xy = _xy(poses)
        for i in order:
            if kept:
                sim = object_keypoint_similarity(xy[kept], xy[i:i + 1], margin=NMS_MARGIN)
                if (sim >= self.options.threshold_nms).any():
                    continue
            kept.append(int(i))
        tracked = np.zeros(self.m, bool)
        tracked[kept] = True
        self._tracked = tracked
        self._poses = np.where(tracked[:, None, None], poses, 0.0).astype(np.float32)
        self._ages = np.where(tracked, self._ages + 1, 0)


def _xy(poses: np.ndarray) -> np.ndarray:
    """(P, K, 3) conditions -> (P, K, 2), NaN where hidden (likelihood 0)."""
    return np.where(poses[..., 2:3] > 0, poses[..., :2], np.nan).astype(np.float64)


__all__ = ["CTDTrackingOptions", "CTDTrackingPipeline", "object_keypoint_similarity"]
