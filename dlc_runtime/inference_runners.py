"""DeepLabCut 3's inference runners on a bundle: ``PoseInferenceRunner`` and
``DetectorInferenceRunner``, with its ``inference(images)`` contract.

``images`` is an iterable of image paths, ``(H, W, 3)`` uint8 RGB arrays, or ``(image, context)``
pairs; the result is one dict per image, as DeepLabCut's runners return after their
postprocessors:

- pose: ``"bodyparts"`` (N, K, 3) x, y (image pixels), likelihood, N the bundle's individuals
  (1 single-animal), missing ones NaN with likelihood 0; ``"unique_bodyparts"`` (1, U, 3) when
  the bundle has any; top-down also ``"bboxes"`` (N, 4) x, y, w, h and ``"bbox_scores"`` (N,)
  of the boxes the individuals were found in, padded with -1 as DeepLabCut pads them;
- detector: ``"bboxes"`` (n, 4) x, y, w, h and ``"bbox_scores"`` (n,), at most the bundle's
  ``max_individuals`` boxes scoring at least its ``box_score_threshold``, best first.

A top-down pose runner given ``{"bboxes": (n, 4) xywh}`` as an image's context runs the pose
graph on those boxes (DeepLabCut's "custom bounding boxes") instead of the bundle's detector.
Images are batched ``batch_size`` at a time while consecutive images have the same size.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

import cv2
import numpy as np

from dlc_runtime.backends.base import Backend, make_backend
from dlc_runtime.bundle import Bundle
from dlc_runtime.errors import BundleError, VideoError
from dlc_runtime.pipelines.base import Pipeline, make_pipeline, pipeline_class
from dlc_runtime.pipelines.top_down import select_boxes

ImageInput = Any  # str | Path | np.ndarray, or a (that, context dict) pair


def read_image(image: str | os.PathLike[str] | np.ndarray) -> np.ndarray:
    """An (H, W, 3) uint8 RGB array from a path (decoded with OpenCV) or an array (RGB, or
    grayscale (H, W) / (H, W, 1) made RGB)."""
    if isinstance(image, (str, os.PathLike)):
        bgr = cv2.imread(str(image), cv2.IMREAD_COLOR)
        if bgr is None:
            raise VideoError(f"cannot read image {image}: missing, unreadable or not an image "
                             "OpenCV decodes")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"an image must be (H, W, 3) RGB, got an array of shape {array.shape}")
    return np.ascontiguousarray(array, dtype=np.uint8)


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


class InferenceRunner:
    """A bundle's graphs behind DeepLabCut's ``inference(images)``.

    Args:
        bundle: a bundle folder or a loaded :class:`Bundle`.
        batch_size: images per graph call (DeepLabCut's runner ``batch_size``).
        device: "cpu" or "cuda[:N]".
        backend: a backend name (``dlc_runtime.backends``) or a ready :class:`Backend` running
            the graph this runner starts from (not closed here).
        backend_options: keyword arguments for the backend factory.
    """

    #: the manifest graph the runner's own backend runs.
    graph = "pose"

    def __init__(self, bundle: str | os.PathLike[str] | Bundle, batch_size: int = 8,
                 device: str = "cpu", backend: str | Backend = "onnxruntime",
                 backend_options: dict[str, Any] | None = None) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
        self.batch_size = batch_size
        self.device = device
        self._own_backend = not isinstance(backend, Backend)
        if isinstance(backend, Backend):
            self.backend = backend
        else:
            options = dict(backend_options or {})
            if self.graph != "pose":
                options.setdefault("graph", self.graph)
            self.backend = make_backend(self.bundle, backend, device, **options)

    def inference(self, images: Iterable[ImageInput], shelf_writer: Any = None
                  ) -> list[dict[str, np.ndarray]]:
        """One prediction dict per image, in order (see the module docstring)."""
        if shelf_writer is not None:
            raise ValueError("shelf_writer is not supported: results of a video stream to "
                             "the .h5 in analyze_videos; inference() returns a list")
        results: list[dict[str, np.ndarray]] = []
        for frames, contexts in self._batches(images):
            results.extend(self.predict_frames(frames, contexts))
        return results

    def predict_frames(self, frames: np.ndarray, contexts: list[dict[str, Any]] | None = None
                       ) -> list[dict[str, np.ndarray]]:
        """Predictions for a (B, H, W, 3) uint8 RGB batch; ``contexts`` one dict per frame."""
        raise NotImplementedError

    def _batches(self, images: Iterable[ImageInput]
                 ) -> Iterator[tuple[np.ndarray, list[dict[str, Any]]]]:
        frames: list[np.ndarray] = []
        contexts: list[dict[str, Any]] = []
        for item in images:
            image, context = (item if isinstance(item, tuple) else (item, {}))
            array = read_image(image)
            if frames and (array.shape != frames[0].shape or len(frames) == self.batch_size):
                yield np.stack(frames), contexts
                frames, contexts = [], []
            frames.append(array)
            contexts.append(dict(context or {}))
        if frames:
            yield np.stack(frames), contexts

    def close(self) -> None:
        """Close the backends this runner opened. Idempotent."""
        if self._own_backend and self.backend is not None:
            self.backend.close()
            self._own_backend = False

    def __enter__(self) -> InferenceRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PoseInferenceRunner(InferenceRunner):
    """Keypoints of images: the bundle's whole pipeline (a top-down bundle's detector
    included, unless an image's context gives its boxes)."""

    def __init__(self, bundle: str | os.PathLike[str] | Bundle, batch_size: int = 8,
                 device: str = "cpu", backend: str | Backend = "onnxruntime",
                 backend_options: dict[str, Any] | None = None) -> None:
        loaded = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
        self.graph = pipeline_class(loaded).backend_graph
        super().__init__(loaded, batch_size, device, backend, backend_options)
        try:
            self.pipeline: Pipeline = make_pipeline(self.bundle, self.backend)
        except BaseException:
            super().close()
            raise
        self.top_down = self.bundle.task == "top_down"

    def predict_frames(self, frames: np.ndarray, contexts: list[dict[str, Any]] | None = None
                       ) -> list[dict[str, np.ndarray]]:
        contexts = contexts or [{} for _ in range(len(frames))]
        self.pipeline.check_frame_size(frames.shape[2], frames.shape[1], source="image")
        if self.top_down:
            return self._top_down(frames, contexts)
        result = self.pipeline(frames)
        out = []
        for i in range(len(frames)):
            item = {"bodyparts": result.keypoints[i]}
            if result.unique_keypoints is not None:
                item["unique_bodyparts"] = result.unique_keypoints[i].reshape(1, -1, 3)
            out.append(item)
        return out

    def _top_down(self, frames: np.ndarray, contexts: list[dict[str, Any]]
                  ) -> list[dict[str, np.ndarray]]:
        pipeline: Any = self.pipeline  # TopDownPipeline: detector and pose backends, m slots
        m, step = pipeline.m, pipeline.batch.max
        out = []
        for start in range(0, len(frames), step):
            chunk, ctx = frames[start:start + step], contexts[start:start + step]
            boxes = np.tile(np.array([0, 0, 1, 1], np.float32), (len(chunk), m, 1))
            scores = np.full((len(chunk), m), -1.0, np.float32)
            valid = np.zeros((len(chunk), m), bool)
            given = [c.get("bboxes") is not None for c in ctx]
            if not all(given):
                found = pipeline.detector.run(chunk)
                chosen, ok = select_boxes(found["boxes"], found["scores"], m, pipeline.threshold)
                top = -np.sort(-found["scores"], axis=1)[:, :m]
                boxes[:, :chosen.shape[1]], valid[:, :ok.shape[1]] = chosen, ok
                scores[:, :top.shape[1]] = np.where(ok[:, :top.shape[1]], top, -1.0)
            for i, context in enumerate(ctx):
                if given[i]:
                    xyxy = xywh_to_xyxy(context["bboxes"])[:m]
                    n = len(xyxy)
                    boxes[i], valid[i], scores[i] = (0, 0, 1, 1), False, -1.0
                    boxes[i, :n], valid[i, :n] = xyxy, True
                    scores[i, :n] = np.asarray(context.get("bbox_scores", np.ones(n)),
                                               np.float32).reshape(-1)[:n]
            keypoints = pipeline.pose.run(chunk, boxes=boxes)["keypoints"]
            result = pipeline.postprocess(keypoints, valid)
            for i in range(len(chunk)):
                n_ind = result.keypoints.shape[1]
                xywh = np.full((n_ind, 4), -1.0, np.float32)
                score = np.full((n_ind,), -1.0, np.float32)
                filled = valid[i, :n_ind]
                xywh[:len(filled)][filled] = xyxy_to_xywh(boxes[i, :n_ind])[filled]
                score[:len(filled)][filled] = scores[i, :n_ind][filled]
                out.append({"bodyparts": result.keypoints[i], "bboxes": xywh,
                            "bbox_scores": score})
        return out

    def close(self) -> None:
        pipeline = getattr(self, "pipeline", None)
        if pipeline is not None:
            pipeline.close()
        super().close()


class DetectorInferenceRunner(InferenceRunner):
    """Boxes of images from a top-down bundle's detector graph; feed them to a
    :class:`PoseInferenceRunner` as contexts, or edit them first (custom bounding boxes)."""

    graph = "detector"

    def __init__(self, bundle: str | os.PathLike[str] | Bundle, batch_size: int = 8,
                 device: str = "cpu", backend: str | Backend = "onnxruntime",
                 backend_options: dict[str, Any] | None = None) -> None:
        loaded = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
        if "detector" not in loaded.manifest.graphs:
            raise BundleError(f"{loaded.path} is a {loaded.task} bundle without a detector "
                              "graph: DetectorInferenceRunner needs a top-down bundle")
        super().__init__(loaded, batch_size, device, backend, backend_options)
        decoder = self.bundle.manifest.decoder or {}
        self.max_individuals = int(decoder.get("max_individuals", len(self.bundle.individuals)))
        self.threshold = float(decoder.get("box_score_threshold", 0.1))

    def predict_frames(self, frames: np.ndarray, contexts: list[dict[str, Any]] | None = None
                       ) -> list[dict[str, np.ndarray]]:
        out = []
        step = self.bundle.input.batch.max
        for start in range(0, len(frames), step):
            found = self.backend.run(frames[start:start + step])
            for boxes, scores in zip(found["boxes"], found["scores"]):
                order = np.argsort(-scores, kind="stable")[:self.max_individuals]
                order = order[scores[order] >= self.threshold]
                out.append({"bboxes": xyxy_to_xywh(boxes[order]),
                            "bbox_scores": scores[order].astype(np.float32)})
        return out


__all__ = ["InferenceRunner", "PoseInferenceRunner", "DetectorInferenceRunner", "read_image",
           "xywh_to_xyxy", "xyxy_to_xywh"]
