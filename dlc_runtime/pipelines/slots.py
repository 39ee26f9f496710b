"""Shared shape of the two-graph pipelines (top-down, conditional top-down).

Both run a first graph that finds individuals (a detector; a bottom-up conditions bundle), keep
up to M of them per frame on the host, and hand the frames and those M slots to a pose graph
that returns (B, M, K, 3) keypoints in frame pixels. What differs is how the slots are found
(:meth:`SlotPipeline.inference`); the backends they own, batch splitting and the writing of empty
slots are the same and live here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from dlc_runtime.errors import BackendError, BundleError
from dlc_runtime.frames import Frames, to_host
from dlc_runtime.pipelines.base import PendingPose, Pipeline, PoseResult, concat_results

if TYPE_CHECKING:
    from dlc_runtime.backends.base import Backend
    from dlc_runtime.bundle import Bundle


class SlotPipeline(Pipeline):
    """Base of pipelines whose pose graph fills ``decoder.max_individuals`` slots per frame.

    Subclasses set :attr:`backend_graph` and :attr:`task`, and implement :meth:`_open` (open the
    backends from the one handed in, registering each one they create with :meth:`_own`) and
    :meth:`inference` (frames -> (keypoints (B, M, K, 3), filled-slot mask (B, M))).

    Args:
        bundle: a loaded bundle of :attr:`task`.
        backend: the backend running :attr:`backend_graph` (what ``analyze_video`` makes); the
            others are opened from it (``Backend.open_graph``: same kind, device and options)
            and closed by :meth:`close`. None: all run on onnxruntime on ``device``.
        device: used only when ``backend`` is None.
    """

    backend_graph = "pose"
    task = ""
    #: Graphs the bundle must list.
    graphs: tuple[str, ...] = ("pose",)

    def __init__(self, bundle: Bundle, backend: Backend | None = None,
                 device: str = "cpu") -> None:
        where = str(bundle.path)
        name = type(self).__name__
        if bundle.task != self.task:
            raise BundleError(f"{where}: {name} needs a {self.task} bundle, got '{bundle.task}'")
        for graph in self.graphs:
            if graph not in bundle.manifest.graphs:
                raise BundleError(f"{where}: a {self.task} bundle needs a '{graph}' graph; "
                                  "re-export the bundle")
        self.bundle = bundle
        self.m = int(bundle.manifest.decoder.get("max_individuals", len(bundle.individuals)))
        self.n_bodyparts = len(bundle.bodyparts)
        self.batch = bundle.input.batch
        self._owned: list[Backend] = []
        try:
            if backend is None:
                from dlc_runtime.backends.base import make_backend

                backend = self._own(make_backend(bundle, "onnxruntime", device,
                                                 graph=self.backend_graph))
            self._open(backend)
        except BaseException:
            self.close()  # e.g. no artifact of this kind for the pose graph: free the others
            raise

    def _own(self, backend: Backend) -> Backend:
        """Registers a backend this pipeline opened (closed by :meth:`close`)."""
        self._owned.append(backend)
        return backend

    def _open(self, backend: Backend) -> None:
        raise NotImplementedError

    def inference(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def check_frame_size(self, width: int, height: int, source: str = "video") -> None:
        """Both graphs take any frame size unless a subclass says otherwise."""

    def preprocess(self, frames: Frames) -> np.ndarray:
        # Host steps sit between the two graphs (box or condition selection): host frames.
        return np.ascontiguousarray(to_host(frames), dtype=np.uint8)

    def postprocess(self, keypoints: np.ndarray, valid: np.ndarray) -> PoseResult:
        """Empty slots become NaN with likelihood 0 (DeepLabCut's missing individual); with
        fewer slots than individuals the rest stay empty."""
        if keypoints.ndim != 4 or keypoints.shape[1:] != (self.m, self.n_bodyparts, 3):
            raise BackendError(f"pose graph of {self.bundle.path} returned keypoints of shape "
                               f"{keypoints.shape}, expected (B, {self.m}, {self.n_bodyparts}, "
                               "3); re-export it")
        kp = keypoints.astype(np.float32, copy=True)
        kp[~valid] = (np.nan, np.nan, 0.0)
        n = len(self.bundle.individuals)
        if self.m < n:
            pad = np.full((len(kp), n - self.m, self.n_bodyparts, 3), np.nan, np.float32)
            pad[..., 2] = 0.0
            kp = np.concatenate([kp, pad], axis=1)
        return PoseResult(keypoints=kp[:, :n])

    def submit(self, frames: Frames) -> PendingPose:
        """Keypoints (B, N, K, 3) of a (B, H, W, 3) uint8 RGB batch (split at the bundle's
        largest batch). Runs now: the host selects slots between the two graphs."""
        if len(frames) > self.batch.max:
            return PendingPose.ready(concat_results(
                [self.submit(frames[i: i + self.batch.max]).result()
                 for i in range(0, len(frames), self.batch.max)]))
        return PendingPose.ready(self.postprocess(*self.inference(self.preprocess(frames))))

    def close(self) -> None:
        """Closes the backends this pipeline opened (not the one it was handed). Idempotent."""
        while self._owned:
            self._owned.pop().close()
