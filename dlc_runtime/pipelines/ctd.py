"""Conditional top-down (CTD) pipeline: bottom-up conditions bundle -> top-M conditions -> pose
graph (box, crop and condition transform inside it).

Per batch: the nested bottom-up bundle (``conditions/``) runs through its own pipeline and gives
(B, N, K, 3) keypoints; the host keeps, in their order, the individuals DeepLabCut 3 hands to a
CTD model (:func:`select_conditions`) and packs the first M of them; the pose graph takes the
frames and those conditions and returns keypoints in frame coordinates. Empty slots come back as
NaN with likelihood 0, DeepLabCut's missing individual. numpy + onnxruntime only.

The backend ``analyze_video`` hands over runs the nested bundle's pose graph (``backend_graph``
is ``conditions``, which the manifest lists as ``conditions/pose.onnx``) inside the nested
bundle's own pipeline; the two-input pose graph runs on a backend of the same kind opened with
``Backend.open_graph`` and fed ``conditions`` by name.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np

from dlc_runtime.bundle import Bundle
from dlc_runtime.errors import BundleError
from dlc_runtime.pipelines.base import make_pipeline, register_pipeline
from dlc_runtime.pipelines.slots import SlotPipeline

if TYPE_CHECKING:
    from dlc_runtime.backends.base import Backend

#: DeepLabCut's FilterLowConfidencePoses threshold (the manifest may override it).
MIN_CONDITION_SCORE = 0.05


def condition_mask(keypoints: np.ndarray, frame_hw: tuple[int, int], bbox_margin: float,
                   min_score: float = MIN_CONDITION_SCORE) -> np.ndarray:
    """Which individuals DeepLabCut 3 turns into CTD crops, (B, N, K, 3) -> (B, N) bool.

    Its rules, in order: an individual needs one keypoint with x > 0, y > 0 and likelihood > 0
    (``CTDInferenceRunner``; a NaN compares as "not <= 0" there, so it is kept the same way
    here); its best likelihood must reach ``min_score`` (``FilterLowConfidencePoses``, np.max:
    a NaN likelihood drops it); the box of its keypoints with likelihood > 0 (+ margin, clipped
    to the frame, NaN coordinates ignored) must have an area of at least 1 pixel
    (``FilterInvalidBoundingBoxes``).
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bad = (kp[..., 0] <= 0) | (kp[..., 1] <= 0) | (kp[..., 2] <= 0)
        keep = ~bad.all(axis=-1)
        keep &= kp[..., 2].max(axis=-1) >= min_score
        visible = kp[..., 2] > 0
        xy = np.where(visible[..., None], kp[..., :2], np.nan)
    height, width = frame_hw
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        # nanmin/nanmax warn on all-NaN rows: exactly the individuals dropped below.
        warnings.simplefilter("ignore", RuntimeWarning)
        lo = np.nanmin(xy, axis=-2) - bbox_margin
        hi = np.nanmax(xy, axis=-2) + bbox_margin
        lo = np.clip(lo, 0, (width, height))
        hi = np.clip(hi, 0, (width, height))
        area = (hi[..., 0] - lo[..., 0]) * (hi[..., 1] - lo[..., 1])
        keep &= area >= 1  # NaN (no finite visible keypoint) compares False: dropped
    return keep


def select_conditions(keypoints: np.ndarray, m: int, frame_hw: tuple[int, int],
                      bbox_margin: float, min_score: float = MIN_CONDITION_SCORE
                      ) -> tuple[np.ndarray, np.ndarray]:
    """The first ``m`` usable individuals per frame, in the conditions model's order.

    Args:
        keypoints: (B, N, K, 3) the conditions model's keypoints (x, y frame pixels, likelihood).

    Returns:
        conditions (B, m, K, 3) float32, empty slots all zero, and a (B, m) bool mask of the
        filled slots. Keypoints without finite coordinates are passed as (0, 0, 0) (hidden),
        so the graph never sees a NaN.
    """
    kp = np.asarray(keypoints, dtype=np.float32)
    b, n, k = kp.shape[:3]
    keep = condition_mask(kp, frame_hw, bbox_margin, min_score)
    # Stable order: kept individuals first, each frame keeping the model's order.
    order = np.argsort(~keep, axis=1, kind="stable")[:, :m]
    chosen = np.take_along_axis(kp, order[:, :, None, None], axis=1)
    valid = np.take_along_axis(keep, order, axis=1)
    if n < m:
        chosen = np.concatenate([chosen, np.zeros((b, m - n, k, 3), np.float32)], axis=1)
        valid = np.concatenate([valid, np.zeros((b, m - n), bool)], axis=1)
    finite = np.isfinite(chosen).all(axis=-1) & valid[..., None]
    chosen = np.where(finite[..., None], chosen, 0.0).astype(np.float32)
    return np.ascontiguousarray(chosen), valid


@register_pipeline("cond_top_down")
class CondTopDownPipeline(SlotPipeline):
    """Runs a CTD bundle: its nested conditions bundle, then its pose graph.

    Args:
        bundle: a loaded ``cond_top_down`` bundle.
        backend: the backend running the ``conditions`` graph (what ``analyze_video`` makes for
            :attr:`backend_graph`); the pose graph's backend is opened from it
            (``Backend.open_graph``) and closed by :meth:`close`. None: both run on onnxruntime
            on ``device``.
        device: used only when ``backend`` is None.
    """

    backend_graph = "conditions"
    task = "cond_top_down"
    graphs = ("conditions", "pose")

    def __init__(self, bundle: Bundle, backend: Backend | None = None,
                 device: str = "cpu") -> None:
        where = str(bundle.path)
        decoder = bundle.manifest.decoder
        self.bbox_margin = float(decoder.get("bbox_margin", 20))
        self.min_score = float(decoder.get("min_condition_score", MIN_CONDITION_SCORE))
        if bundle.task == self.task:  # else the base class refuses it, naming the task
            self.conditions_bundle = Bundle.load(
                bundle.path / str(decoder.get("conditions_bundle", "conditions")))
            if self.conditions_bundle.task != "bottom_up":
                raise BundleError(f"{self.conditions_bundle.path}: the conditions bundle must "
                                  f"be bottom_up, got '{self.conditions_bundle.task}'; re-export")
            if self.conditions_bundle.bodyparts != bundle.bodyparts:
                raise BundleError(f"{where}: the conditions bundle's bodyparts "
                                  f"{self.conditions_bundle.bodyparts} differ from "
                                  f"{bundle.bodyparts}; re-export the bundle")
        super().__init__(bundle, backend, device)

    def _open(self, backend: Backend) -> None:
        expected = [o.name for o in self.conditions_bundle.graph("pose").outputs]
        if list(getattr(backend, "output_names", None) or []) != expected:
            # A backend handed over for another graph: open the conditions graph beside it.
            backend = self._own(backend.open_graph(self.bundle, "conditions"))
        self.conditions_backend = backend
        self.conditions = make_pipeline(self.conditions_bundle, backend)
        # The two-input pose graph, on a backend of the same kind, device and options.
        self.pose = self._own(backend.open_graph(self.bundle, "pose"))

    @property
    def backend_name(self) -> str:
        """What ran: one name, or one per graph when they differ."""
        first = self.conditions_backend.name
        if first == self.pose.name:
            return first
        return f"{first} (conditions), {self.pose.name} (pose)"

    def check_frame_size(self, width: int, height: int, source: str = "video") -> None:
        """The pose graph takes any size; the conditions bundle decides."""
        check = getattr(self.conditions, "check_frame_size", None)
        if check is not None:
            check(width, height, source)

    def inference(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        found = self.conditions(images).keypoints
        chosen, valid = select_conditions(found, self.m, images.shape[1:3], self.bbox_margin,
                                          self.min_score)
        keypoints = self.pose.run(images, conditions=chosen)["keypoints"]
        return keypoints, valid
