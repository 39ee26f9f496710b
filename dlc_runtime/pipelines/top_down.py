"""Top-down pose pipeline: detector graph -> top-M boxes -> pose graph (crops inside it).

Per batch: the detector graph returns fixed-size boxes and scores (best first); the host keeps
the top ``max_individuals`` boxes above the manifest's score threshold; the pose graph takes the
frames and those boxes and returns keypoints in frame coordinates. Empty slots come back as NaN
with likelihood 0, the DeepLabCut convention for a missing individual.

Both graphs run on backends of the same kind: the one ``analyze_video`` makes runs
``backend_graph`` (the detector), and the pipeline opens the pose graph's with
:meth:`~dlc_runtime.backends.base.Backend.open_graph` (same kind, device and options), so
onnxruntime, TensorRT and torch bundles all run here. numpy only on the host.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from dlc_runtime.errors import BackendError
from dlc_runtime.pipelines.base import register_pipeline
from dlc_runtime.pipelines.slots import SlotPipeline

if TYPE_CHECKING:
    from dlc_runtime.backends.base import Backend
    from dlc_runtime.bundle import Bundle


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
class TopDownPipeline(SlotPipeline):
    """Runs a top-down bundle's detector and pose graphs on batches of frames.

    Args:
        bundle: a loaded ``top_down`` bundle.
        backend: the backend running its ``detector`` graph (what ``analyze_video`` makes for
            :attr:`backend_graph`); the pose graph's backend is opened from it and closed by
            :meth:`close`. None: both run on onnxruntime on ``device``.
        device: used only when ``backend`` is None.
    """

    backend_graph = "detector"  # the graph of the backend handed in; the pose one is opened
    task = "top_down"
    graphs = ("detector", "pose")

    def __init__(self, bundle: Bundle, backend: Backend | None = None,
                 device: str = "cpu") -> None:
        self.threshold = float(bundle.manifest.decoder.get("box_score_threshold", 0.1))
        super().__init__(bundle, backend, device)

    def _open(self, backend: Backend) -> None:
        outputs = getattr(backend, "output_names", None)
        if outputs is not None and not {"boxes", "scores"} <= set(outputs):
            # Handed a backend for another graph (make_backend(bundle) runs "pose"): open the
            # detector beside it, same kind and options.
            backend = self._own(backend.open_graph(self.bundle, "detector"))
        self.detector = backend
        self.pose = self._own(backend.open_graph(self.bundle, "pose"))

    @property
    def backend_name(self) -> str:
        """What ran, for the result metadata: one name, or one per graph when they differ
        (a torch fp16 pose artifact beside the fp32 detector)."""
        if self.detector.name == self.pose.name:
            return self.detector.name
        return f"{self.detector.name} (detector), {self.pose.name} (pose)"

    def inference(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self.detector.run(images)
        try:
            boxes, scores = out["boxes"], out["scores"]
        except KeyError:
            raise BackendError(f"the detector backend of {self.bundle.path} returned "
                               f"{sorted(out)}, not boxes and scores: it must run the "
                               "'detector' graph") from None
        chosen, valid = select_boxes(boxes, scores, self.m, self.threshold)
        keypoints = self.pose.run(images, boxes=chosen)["keypoints"]
        return keypoints, valid
