"""Bottom-up pose pipeline: whole frames in, keypoints out, decoding done inside the graph.

Serves single-animal heatmap bundles and multi-animal bundles whose graph returns finished
animals (DEKR): their padded slots (x = y = -1, score 0) become NaN, DeepLabCut's "not found",
and an ``identity_scores`` output, when present, orders the animals by identity on the host.
PAF bundles, whose animals are assembled on the host, use ``bottom_up_paf.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from dlc_runtime.errors import BackendError, BundleError, VideoError
from dlc_runtime.frames import Frames, frame_count, on_device, to_host
from dlc_runtime.pipelines.base import (PendingPose, Pipeline, PoseResult, concat_results,
                                        register_pipeline)
from dlc_runtime.postprocess.identity import reorder_by_identity

if TYPE_CHECKING:
    from dlc_runtime.backends.base import Backend
    from dlc_runtime.bundle import Bundle

KEYPOINTS = "keypoints"
UNIQUE_KEYPOINTS = "unique_keypoints"
IDENTITY_SCORES = "identity_scores"


@register_pipeline("bottom_up")
class BottomUpPipeline(Pipeline):
    """Runs the pose graph of a bottom-up bundle on batches of frames.

    Args:
        bundle: a loaded ``bottom_up`` bundle.
        backend: the backend running its ``pose`` graph.
    """

    #: graph outputs this pipeline reads (the manifest must list them).
    required_outputs: tuple[str, ...] = (KEYPOINTS,)

    def __init__(self, bundle: Bundle, backend: Backend | None) -> None:
        where = f"{bundle.path}"
        if bundle.task != "bottom_up":
            raise BundleError(f"{where}: {type(self).__name__} needs a bottom_up bundle, got "
                              f"'{bundle.task}'")
        graph = bundle.graph("pose")
        for name in self.required_outputs:
            if graph.output(name) is None:
                raise BundleError(f"{where}: the pose graph has no '{name}' output (outputs: "
                                  f"{[o.name for o in graph.outputs]}); re-export the bundle")
        self.bundle = bundle
        self.backend = backend
        self.batch = bundle.input.batch
        self.n_bodyparts = len(bundle.bodyparts)
        self.n_individuals = len(bundle.individuals) if bundle.multi_animal else 1
        self.want_unique = bool(bundle.unique_bodyparts)
        self.has_identity = graph.output(IDENTITY_SCORES) is not None
        if self.want_unique and graph.output(UNIQUE_KEYPOINTS) is None:
            raise BundleError(f"{where}: the manifest lists unique bodyparts but the pose graph "
                              f"has no '{UNIQUE_KEYPOINTS}' output; re-export the bundle")

    def check_frame_size(self, width: int, height: int, source: str = "video") -> None:
        """Refuse frames a fixed-size graph cannot take (dynamic graphs take any size)."""
        spec = self.bundle.input
        if spec.dynamic_size:
            return
        if (spec.width, spec.height) != (width, height):
            raise VideoError(f"{source} is {width}x{height} but bundle {self.bundle.path} was "
                             f"exported for {spec.width}x{spec.height} frames; re-export with a "
                             "dynamic input size or resize the video")

    @property
    def accepts_device_frames(self) -> bool:
        return self.backend is not None and self.backend.accepts_device_frames

    # preprocess -> inference -> postprocess --------------------------------------------------
    def preprocess(self, frames: Frames) -> tuple[Frames, int]:
        """Pad a batch up to the graph's minimum batch size (static-batch engines need it).

        Cast, normalisation and resizing happen inside the graph: only uint8 crosses over. A
        device batch stays where it is (padding one, rare, goes through the host).
        """
        n = frame_count(frames)
        if on_device(frames) and n >= self.batch.min:
            return frames, n
        frames = np.ascontiguousarray(to_host(frames), dtype=np.uint8)
        if n < self.batch.min:
            pad = np.repeat(frames[-1:], self.batch.min - n, axis=0)
            frames = np.concatenate([frames, pad])
        return frames, n

    def inference(self, images: Frames) -> dict[str, np.ndarray]:
        return self._backend().run(images)

    def _backend(self) -> Backend:
        if self.backend is None:
            raise BackendError(f"{type(self).__name__} was built without a backend (host steps "
                               "only): pass one to run graphs")
        return self.backend

    def postprocess(self, outputs: dict[str, np.ndarray], n_valid: int) -> PoseResult:
        """Graph outputs (numpy) -> keypoints of the ``n_valid`` first frames.

        Also called by the exporter on the eager model's outputs for its parity check, so the
        host steps checked there are these.
        """
        kp = outputs.get(KEYPOINTS)
        if kp is None or kp.ndim != 4 or kp.shape[2:] != (self.n_bodyparts, 3) \
                or kp.shape[1] < self.n_individuals:
            shape = None if kp is None else kp.shape
            raise BackendError(f"pose graph of {self.bundle.path} returned keypoints of shape "
                               f"{shape}, expected (B, N>={self.n_individuals}, "
                               f"{self.n_bodyparts}, 3); re-export it")
        kp = kp[:n_valid].astype(np.float32, copy=True)
        if self.bundle.multi_animal:
            padded = (kp[..., 0] == -1) & (kp[..., 1] == -1) & (kp[..., 2] <= 0)
            kp[padded, :2] = np.nan
            if self.has_identity and IDENTITY_SCORES in outputs:
                kp = reorder_by_identity(kp, outputs[IDENTITY_SCORES][:n_valid])
        return PoseResult(keypoints=kp, unique_keypoints=self._unique(outputs, n_valid))

    def _unique(self, outputs: dict[str, np.ndarray], n_valid: int) -> np.ndarray | None:
        unique = outputs.get(UNIQUE_KEYPOINTS) if self.want_unique else None
        return None if unique is None else unique[:n_valid].astype(np.float32, copy=False)

    def submit(self, frames: Frames) -> PendingPose:
        """Start a (B, H, W, 3) uint8 RGB batch of any size B >= 1 (split at the bundle's
        largest batch: the caller's batch size is a throughput knob, not a contract)."""
        n = frame_count(frames)
        if n > self.batch.max:
            parts = [self.submit(frames[i: i + self.batch.max])
                     for i in range(0, n, self.batch.max)]
            return PendingPose(lambda: concat_results([p.result() for p in parts]),
                               in_flight=any(p.in_flight for p in parts))
        images, n_valid = self.preprocess(frames)
        pending = self._backend().submit(images)
        return PendingPose(lambda: self.postprocess(pending.result(), n_valid),
                           in_flight=not pending.done)
