"""Top-down pose pipeline: detector graph -> top-M boxes -> pose graph (crops inside it).

Per batch: the detector graph returns fixed-size boxes and scores (best first); the host keeps
the top ``max_individuals`` boxes above the manifest's score threshold; the pose graph takes the
frames and those boxes and returns keypoints in frame coordinates. Empty slots come back as NaN
with likelihood 0, the DeepLabCut convention for a missing individual. numpy + onnxruntime only.

Why the pipeline opens its own onnxruntime sessions: the pose graph has two inputs (frames and
boxes), and the ``Backend`` interface runs one-input graphs. The backend ``analyze_video`` hands
over is used when it can run the detector; the two-input pose graph always runs here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from dlc_runtime.errors import BackendError, BundleError
from dlc_runtime.pipelines.base import PoseResult, register_pipeline

if TYPE_CHECKING:
    from dlc_runtime.backends.base import Backend
    from dlc_runtime.bundle import Bundle


def _session(path: Any, device: str):
    import onnxruntime as ort

    providers: list[Any] = ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        index = int(device.partition(":")[2] or 0)
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": index}))
    try:
        return ort.InferenceSession(str(path), providers=providers)
    except Exception as exc:  # onnxruntime raises several unrelated exception types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BackendError(f"onnxruntime cannot load {path}: {first}; re-export the bundle") \
            from exc


def select_boxes(boxes: np.ndarray, scores: np.ndarray, m: int, threshold: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Top ``m`` boxes per frame with score >= ``threshold``.

    Args:
        boxes: (B, D, 4); scores: (B, D).

    Returns:
        boxes (B, m, 4) float32 (empty slots get a unit box so the graph stays finite) and a
        (B, m) bool mask of the filled slots.
    """
    b, d = scores.shape
    order = np.argsort(-scores, axis=1, kind="stable")[:, :m]
    top_scores = np.take_along_axis(scores, order, axis=1)
    top = np.take_along_axis(boxes, order[..., None], axis=1)
    if d < m:
        top = np.concatenate([top, np.zeros((b, m - d, 4), top.dtype)], axis=1)
        top_scores = np.concatenate([top_scores, np.zeros((b, m - d), top_scores.dtype)], 1)
    valid = top_scores >= threshold
    filler = np.array([0.0, 0.0, 1.0, 1.0], np.float32)
    return np.where(valid[..., None], top, filler).astype(np.float32), valid


@register_pipeline("top_down")
class TopDownPipeline:
    """Runs a top-down bundle's detector and pose graphs on batches of frames.

    Args:
        bundle: a loaded ``top_down`` bundle.
        backend: the backend ``analyze_video`` made; its device is reused.
    """

    backend_graph = "detector"  # the one-input graph; the two-input pose graph runs here

    def __init__(self, bundle: Bundle, backend: Backend | None = None,
                 device: str | None = None) -> None:
        where = str(bundle.path)
        if bundle.task != "top_down":
            raise BundleError(f"{where}: TopDownPipeline needs a top_down bundle, got "
                              f"'{bundle.task}'")
        decoder = bundle.manifest.decoder
        for name in ("detector", "pose"):
            if name not in bundle.manifest.graphs:
                raise BundleError(f"{where}: a top_down bundle needs a '{name}' graph; "
                                  "re-export the bundle")
        self.bundle = bundle
        self.m = int(decoder.get("max_individuals", len(bundle.individuals)))
        self.threshold = float(decoder.get("box_score_threshold", 0.1))
        self.n_bodyparts = len(bundle.bodyparts)
        if device is None:
            name = getattr(backend, "name", "onnxruntime-cpu")
            device = "cuda" if "cuda" in name else "cpu"
        # The backend analyze_video makes for ``backend_graph`` runs the detector; a backend
        # handed over for another graph is not used, and the pipeline opens its own session.
        outputs = set(getattr(backend, "output_names", None) or ())
        self.detector_backend = backend if {"boxes", "scores"} <= outputs else None
        self.detector = None if self.detector_backend else \
            _session(bundle.graph_path("detector"), device)
        self.pose = _session(bundle.graph_path("pose"), device)
        self.batch = bundle.input.batch

    def check_frame_size(self, width: int, height: int, source: str = "video") -> None:
        """Both graphs take any frame size."""

    def preprocess(self, frames: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(frames, dtype=np.uint8)

    def inference(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.detector_backend is not None:
            out = self.detector_backend.run(images)
            boxes, scores = out["boxes"], out["scores"]
        else:
            boxes, scores = self.detector.run(["boxes", "scores"], {"images": images})
        chosen, valid = select_boxes(boxes, scores, self.m, self.threshold)
        (keypoints,) = self.pose.run(["keypoints"], {"images": images, "boxes": chosen})
        return keypoints, valid

    def postprocess(self, keypoints: np.ndarray, valid: np.ndarray) -> PoseResult:
        if keypoints.ndim != 4 or keypoints.shape[1:] != (self.m, self.n_bodyparts, 3):
            raise BackendError(f"pose graph of {self.bundle.path} returned keypoints of shape "
                               f"{keypoints.shape}, expected (B, {self.m}, {self.n_bodyparts}, "
                               "3); re-export it")
        kp = keypoints.astype(np.float32, copy=True)
        kp[~valid] = (np.nan, np.nan, 0.0)
        n = len(self.bundle.individuals)
        if self.m < n:  # fewer slots than individuals: the rest stay empty
            pad = np.full((len(kp), n - self.m, self.n_bodyparts, 3), np.nan, np.float32)
            pad[..., 2] = 0.0
            kp = np.concatenate([kp, pad], axis=1)
        return PoseResult(keypoints=kp[:, :n])

    def __call__(self, frames: np.ndarray) -> PoseResult:
        """Keypoints (B, N, K, 3) of a (B, H, W, 3) uint8 RGB batch."""
        if len(frames) > self.batch.max:
            parts = [self(frames[i: i + self.batch.max])
                     for i in range(0, len(frames), self.batch.max)]
            return PoseResult(keypoints=np.concatenate([p.keypoints for p in parts]))
        return self.postprocess(*self.inference(self.preprocess(frames)))
