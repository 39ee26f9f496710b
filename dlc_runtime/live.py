"""A DeepLabCut-live compatible class: one frame in, its pose out, for closed-loop experiments.

``from dlc_runtime.live import DLCLive, Processor`` in place of ``from dlclive import DLCLive,
Processor``, with ``model_path`` a bundle folder. The constructor takes DeepLabCut-live's
arguments in its order; ``init_inference(frame)`` loads the backend, warms it up and returns the
first pose; ``get_pose(frame)`` each next one; ``close()`` releases the backend. The contract
(details and the differences from DeepLabCut-live in ``docs/live.md``):

- Frames: uint8 (H, W, 3) **BGR**, as OpenCV cameras give them, converted to RGB here
  (``convert2rgb=False``: frames already RGB); grey (H, W) or (H, W, 1) frames are replicated
  to three channels. Anything else is refused with one line (no guessing of float ranges).
- Per frame: static ``cropping`` [x1, x2, y1, y2] (inside the frame), the ``dynamic`` window,
  ``resize`` (OpenCV linear, sizes floored), colour conversion, ``pipeline(image[None])``;
  keypoints come back in full-frame pixels (scaled by the exact size ratio, offset by the crop).
- Pose: (K, 3) x, y, likelihood (``single_animal=True``: the first individual), or (N, K, 3)
  for the bundle's N individuals; a missing one is NaN with likelihood 0, as ``analyze_video``
  writes it. Unique bodyparts: :attr:`DLCLive.unique_pose`.
- ``processor.process(pose, **kwargs)`` gets that pose and ``get_pose``'s keyword arguments;
  its return value is returned. Dynamic cropping follows the model's pose, not the processor's.
- Latency: :attr:`DLCLive.latency` (whole ``get_pose`` calls) and
  :attr:`DLCLive.pipeline_latency` (the pipeline part) over the last ``latency_window`` calls;
  ``init_inference`` is not counted.
"""
from __future__ import annotations

import os
import time
import warnings
from collections import deque
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from dlc_runtime.backends.base import Backend, make_backend
from dlc_runtime.bundle import Bundle
from dlc_runtime.live_types import (DLCLiveError, DLCLiveWarning, LatencySummary, Processor,
                                    check_cropping, check_frame)
from dlc_runtime.pipelines.base import Pipeline, make_pipeline, pipeline_class
from dlc_runtime.pipelines.top_down import TopDownPipeline

#: DeepLabCut-live model types that name its own engines; the bundle decides what runs here.
ENGINE_MODEL_TYPES = ("base", "pytorch", "tensorflow", "onnx")
#: the top_down_config keys that have a meaning for a bundle (its graphs fix the crop size).
TOP_DOWN_KEYS = ("bbox_cutoff", "max_detections")


class DLCLive:
    """Live pose estimation with a bundle, frame by frame (see the module docstring).

    Args (DeepLabCut-live's, in its order):
        model_path: the bundle folder.
        model_type: DeepLabCut-live's engine name; "base", "pytorch", "tensorflow", "onnx" or
            None have no effect (the bundle says what runs), "tensorrt" selects the tensorrt
            backend, "lite" is refused.
        precision: the backend's precision (e.g. "FP16": the bundle's fp16 ONNX graph or torch
            artifact); None: the backend's default.
        tf_config: TensorFlow only; ignored with a warning.
        single_animal: return (K, 3), the first individual; False: (N, K, 3).
        device: "cpu" or "cuda[:N]"; None: "cuda" for the tensorrt backend, else "cpu".
        top_down_config: top-down bundles: ``bbox_cutoff`` (the detector score threshold,
            default the manifest's) and ``max_detections`` (individuals returned at most).
        top_down_dynamic: refused (use ``dynamic`` or a top-down bundle's detector).
        cropping: [x1, x2, y1, y2] in frame pixels, or None.
        dynamic: (on, likelihood threshold, margin px): crop each frame around the keypoints
            of the previous one whose likelihood is >= the threshold (all individuals).
        resize: scale factor applied after cropping (0.5 halves width and height), or None.
        convert2rgb: frames are BGR (OpenCV) and are converted; False: frames are RGB.
        processor: an object with ``process(pose, **kwargs)`` (see :class:`Processor`).
        display, pcutoff, display_radius, display_cmap: display only; no window is opened
            (a warning says so when display is asked for).

    Keyword-only (dlc_runtime's):
        backend: a backend name (default "onnxruntime") or a ready :class:`Backend` (not
            closed here).
        backend_options: extra options of the backend factory (e.g. ``intra_op_threads``).
        warmup: pipeline runs on the first frame in ``init_inference`` before its pose.
        latency_window: calls the latency summaries cover.
    """

    PARAMETERS = ("path", "cfg", "model_type", "precision", "cropping", "dynamic", "resize",
                  "processor", "backend", "device")

    def __init__(self, model_path: str | os.PathLike[str], model_type: str | None = None,
                 precision: str | None = None, tf_config: Any = None,
                 single_animal: bool = True, device: str | None = None,
                 top_down_config: dict[str, Any] | None = None,
                 top_down_dynamic: dict[str, Any] | None = None,
                 cropping: Sequence[int] | None = None,
                 dynamic: tuple[bool, float, float] = (False, 0.5, 10),
                 resize: float | None = None, convert2rgb: bool = True,
                 processor: Any = None, display: Any = False, pcutoff: float = 0.5,
                 display_radius: int = 3, display_cmap: str = "bmy", *,
                 backend: str | Backend | None = None,
                 backend_options: dict[str, Any] | None = None, warmup: int = 3,
                 latency_window: int = 1000) -> None:
        self.backend = self._pick_backend(model_type, backend)
        if tf_config is not None:
            warnings.warn("tf_config is TensorFlow's and is ignored by dlc_runtime.live",
                          DLCLiveWarning, stacklevel=2)
        if display is not False and display is not None:
            warnings.warn("display is not supported by dlc_runtime.live: no window is opened; "
                          "check keypoints on a video with `dlc label-video`",
                          DLCLiveWarning, stacklevel=2)
        if top_down_dynamic is not None:
            raise DLCLiveError("top_down_dynamic is not supported by dlc_runtime.live; use "
                               "dynamic=(True, threshold, margin) or a top-down bundle")
        if processor is not None and not callable(getattr(processor, "process", None)):
            raise DLCLiveError(f"processor {type(processor).__name__} has no process(pose, "
                               "**kwargs) method; subclass dlc_runtime.live.Processor")
        if resize is not None and not (isinstance(resize, (int, float)) and resize > 0):
            raise DLCLiveError(f"resize must be a positive number (0.5 halves the frame), got "
                               f"{resize!r}")
        if not (isinstance(dynamic, (tuple, list)) and len(dynamic) == 3):
            raise DLCLiveError(f"dynamic must be (on, likelihood threshold, margin), got "
                               f"{dynamic!r}")
        if warmup < 0 or latency_window < 1:
            raise DLCLiveError(f"warmup must be >= 0 and latency_window >= 1, got {warmup} and "
                               f"{latency_window}")
        self.top_down_config = dict(top_down_config or {})
        unknown = sorted(set(self.top_down_config) - set(TOP_DOWN_KEYS))
        if unknown:
            raise DLCLiveError(f"top_down_config {unknown[0]!r} is not supported by "
                               f"dlc_runtime.live (supported: {', '.join(TOP_DOWN_KEYS)}; the "
                               "bundle's graphs fix the crop size)")
        self.path = os.fspath(model_path)
        self.bundle = Bundle.load(model_path)  # a bad bundle fails here, before any frame
        self.model_type = model_type
        self.precision = precision
        # TensorRT runs on a GPU only; everything else defaults to the CPU.
        self.device = device or ("cuda" if self.backend == "tensorrt" else "cpu")
        self.single_animal = single_animal
        crop = check_cropping(cropping)
        self.cropping = list(crop) if crop else None
        self.dynamic = (bool(dynamic[0]), float(dynamic[1]), int(dynamic[2]))
        self.dynamic_cropping: list[int] | None = None
        self.resize = None if resize is None or resize == 1 else float(resize)
        self.convert2rgb = convert2rgb
        self.processor = processor
        self.pcutoff = pcutoff
        self.backend_options = dict(backend_options or {})
        self.warmup = warmup
        self.pose: Any = None
        self.unique_pose: np.ndarray | None = None
        self.is_initialized = False
        self._engine: Backend | None = None
        self._pipeline: Pipeline | None = None
        self._checked_size: tuple[int, int] | None = None
        self._total: deque[float] = deque(maxlen=latency_window)
        self._inference: deque[float] = deque(maxlen=latency_window)

    @staticmethod
    def _pick_backend(model_type: str | None, backend: str | Backend | None) -> str | Backend:
        if model_type is None or model_type.lower() in ENGINE_MODEL_TYPES:
            return backend if backend is not None else "onnxruntime"
        if model_type.lower() == "tensorrt":
            if backend not in (None, "tensorrt"):
                raise DLCLiveError(f"model_type='tensorrt' and backend={backend!r} disagree; "
                                   "pass one of them")
            return "tensorrt"
        if model_type.lower() in ("lite", "tflite"):
            raise DLCLiveError("model_type='lite' (TensorFlow Lite) is not supported; drop "
                               "model_type, the bundle runs on backend='onnxruntime'")
        raise DLCLiveError(f"unknown model_type {model_type!r}; drop it (the bundle decides) "
                           "or pass backend='onnxruntime', 'torch' or 'tensorrt'")

    # DeepLabCut-live's accessors ---------------------------------------------------------------
    @property
    def cfg(self) -> dict[str, Any] | None:
        """The training config shipped in the bundle (None when it has none)."""
        return self.bundle.pytorch_config()

    def read_config(self) -> dict[str, Any] | None:
        return self.cfg

    @property
    def parameterization(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.PARAMETERS}

    @property
    def latency(self) -> LatencySummary:
        """Whole ``get_pose`` calls (checks, crop, resize, colour, pipeline, processor)."""
        return LatencySummary.of(self._total)

    @property
    def pipeline_latency(self) -> LatencySummary:
        """The ``pipeline(frame[None])`` part of those calls (backend and host steps)."""
        return LatencySummary.of(self._inference)

    def reset_latency(self) -> None:
        self._total.clear()
        self._inference.clear()

    # Loading -----------------------------------------------------------------------------------
    def _open(self) -> None:
        if isinstance(self.backend, Backend):
            engine = self.backend
        else:
            options = dict(self.backend_options)
            if self.precision is not None:
                options["precision"] = str(self.precision).lower()
            graph = pipeline_class(self.bundle).backend_graph
            if graph != "pose":  # backends run "pose" unless told otherwise (top-down)
                options.setdefault("graph", graph)
            if self.backend == "openvino":  # one frame at a time: every core on it
                options.setdefault("mode", "latency")
            engine = make_backend(self.bundle, self.backend, self.device, **options)
        try:
            pipeline = make_pipeline(self.bundle, engine)
            if "bbox_cutoff" in self.top_down_config:
                if not isinstance(pipeline, TopDownPipeline):
                    raise DLCLiveError(f"top_down_config bbox_cutoff needs a top-down bundle "
                                       f"with a detector; {self.bundle.path} is "
                                       f"{self.bundle.task}")
                pipeline.threshold = float(self.top_down_config["bbox_cutoff"])
        except BaseException:
            if engine is not self.backend:
                engine.close()
            raise
        self._engine, self._pipeline = engine, pipeline

    def close(self) -> None:
        """Release the backends this object opened. Safe to call twice."""
        self.is_initialized = False
        pipeline, engine, self._pipeline, self._engine = self._pipeline, self._engine, None, None
        if pipeline is not None:
            pipeline.close()
        if engine is not None and engine is not self.backend:
            engine.close()

    def __enter__(self) -> DLCLive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Frames and poses --------------------------------------------------------------------------
    def init_inference(self, frame: np.ndarray | None = None, **kwargs: Any) -> Any:
        """Load the backend, run ``warmup`` times on ``frame``, and return its pose (processed
        like :meth:`get_pose`'s; not counted in the latency figures)."""
        check_frame(frame, "init_inference")
        if self._pipeline is None:
            self._open()
        self.dynamic_cropping = None
        rgb, _ = self._prepare(frame, "init_inference")
        for _ in range(self.warmup):
            self._pipeline(rgb[None])
        self.is_initialized = True
        return self._pose(frame, "init_inference", timed=False, **kwargs)

    def get_pose(self, frame: np.ndarray | None = None, **kwargs: Any) -> Any:
        """The pose of ``frame`` (see the module docstring); ``kwargs`` go to the processor."""
        if not self.is_initialized:
            raise DLCLiveError("get_pose before init_inference: call init_inference(frame) "
                               "first (it loads the model and warms it up)")
        return self._pose(frame, "get_pose", timed=True, **kwargs)

    def _window(self, width: int, height: int, call: str) -> tuple[int, int, int, int]:
        """The region of the frame the model sees: static crop, then the dynamic window."""
        x1, x2, y1, y2 = self.cropping or (0, width, 0, height)
        if x2 > width or y2 > height:
            raise DLCLiveError(f"{call}: cropping [x1, x2, y1, y2] = {self.cropping} lies "
                               f"outside the {width}x{height} frame; keep x2 <= {width} and "
                               f"y2 <= {height}")
        if self.dynamic_cropping is not None:
            dx1, dx2, dy1, dy2 = self.dynamic_cropping
            x1, x2, y1, y2 = max(x1, dx1), min(x2, dx2), max(y1, dy1), min(y2, dy2)
            if x2 <= x1 or y2 <= y1:  # the frame changed size under the window: start over
                self.dynamic_cropping = None
                return self._window(width, height, call)
        return x1, x2, y1, y2

    def _prepare(self, frame: np.ndarray, call: str
                 ) -> tuple[np.ndarray, tuple[float, float, int, int]]:
        """The RGB image the pipeline runs on, and (sx, sy, ox, oy) mapping its pixels back to
        the frame's: x_frame = x * sx + ox."""
        height, width = frame.shape[:2]
        x1, x2, y1, y2 = self._window(width, height, call)
        image = frame[y1:y2, x1:x2]
        w, h = x2 - x1, y2 - y1
        if self.resize is not None:
            w, h = int(w * self.resize), int(h * self.resize)
            if w < 1 or h < 1:
                raise DLCLiveError(f"{call}: resize={self.resize} turns the {x2 - x1}x{y2 - y1} "
                                   "image into nothing; use a larger factor or crop")
            image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
        if image.ndim == 2 or image.shape[2] == 1:
            image = cv2.cvtColor(image.reshape(h, w), cv2.COLOR_GRAY2RGB)
        elif self.convert2rgb:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        if (w, h) != self._checked_size:
            self._pipeline.check_frame_size(w, h, source=f"{call}: the {w}x{h} image "
                                            "(after cropping and resize)")
            self._checked_size = (w, h)
        return image, ((x2 - x1) / w, (y2 - y1) / h, x1, y1)

    def _pose(self, frame: np.ndarray, call: str, timed: bool, **kwargs: Any) -> Any:
        start = time.perf_counter()
        check_frame(frame, call)
        rgb, (sx, sy, ox, oy) = self._prepare(frame, call)
        before = time.perf_counter()
        result = self._pipeline(rgb[None])
        after = time.perf_counter()
        keypoints = result.keypoints[0].astype(np.float32)  # (N, K, 3), our own copy
        keypoints[..., 0] = keypoints[..., 0] * sx + ox
        keypoints[..., 1] = keypoints[..., 1] * sy + oy
        if result.unique_keypoints is not None:
            unique = result.unique_keypoints[0].astype(np.float32)
            unique[:, 0] = unique[:, 0] * sx + ox
            unique[:, 1] = unique[:, 1] * sy + oy
            self.unique_pose = unique
        if self.dynamic[0]:
            self._follow(keypoints, frame.shape[1], frame.shape[0])
        if self.single_animal:
            pose = keypoints[0]
        else:
            pose = keypoints[:self.top_down_config.get("max_detections")]
        if self.processor is not None:
            pose = self.processor.process(pose, **kwargs)
        self.pose = pose
        if timed:
            self._total.append(time.perf_counter() - start)
            self._inference.append(after - before)
        return pose

    def _follow(self, keypoints: np.ndarray, width: int, height: int) -> None:
        """Dynamic cropping: the next frame's window around this frame's confident keypoints
        (frame pixels, grown by the margin, clipped to the frame)."""
        _, threshold, margin = self.dynamic
        found = keypoints[(keypoints[..., 2] >= threshold)
                          & np.isfinite(keypoints[..., :2]).all(-1)]
        if not len(found):
            self.dynamic_cropping = None
            return
        x1 = max(0, int(np.floor(found[:, 0].min())) - margin)
        x2 = min(width, int(np.ceil(found[:, 0].max())) + 1 + margin)
        y1 = max(0, int(np.floor(found[:, 1].min())) - margin)
        y2 = min(height, int(np.ceil(found[:, 1].max())) + 1 + margin)
        self.dynamic_cropping = [x1, x2, y1, y2] if x2 > x1 and y2 > y1 else None


__all__ = ["DLCLive", "DLCLiveError", "DLCLiveWarning", "LatencySummary", "Processor"]
