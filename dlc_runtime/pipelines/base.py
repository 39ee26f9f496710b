"""Pipeline interface and registry: one pipeline per bundle task (and decoder, where it matters).

A pipeline turns a batch of uint8 RGB frames into keypoints in frame coordinates:
``preprocess -> inference (backend) -> postprocess`` (rtmlib's shape), behind the
:class:`Pipeline` base class. It is stateless across calls, which is also the extension point for
the planned live single-frame API: a live caller wraps one frame as a batch of one,
``pipeline(frame[None])``, and reads ``keypoints[0]``. Stateful host steps (tracking) will sit
after the pipeline, not inside it.

:meth:`Pipeline.submit` starts a batch and returns a :class:`PendingPose`; with an asynchronous
backend (torch on CUDA) the next batch is submitted before this one's keypoints are read, which
:func:`stream_poses` does for a whole video.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from dlc_runtime.errors import BundleError
from dlc_runtime.frames import Frames

if TYPE_CHECKING:
    from dlc_runtime.backends.base import Backend
    from dlc_runtime.bundle import Bundle


@dataclass
class PoseResult:
    """Keypoints of a batch of frames.

    Attributes:
        keypoints: (B, N, K, 3) float32: x, y in frame pixels, likelihood.
        unique_keypoints: (B, U, 3) float32, or None when the bundle has no unique bodyparts.
    """

    keypoints: np.ndarray
    unique_keypoints: np.ndarray | None = None


class PendingPose:
    """The keypoints of a submitted batch; :meth:`result` waits for them (once).

    Args:
        wait: returns the result (waiting for the device, then the host steps).
        in_flight: the device is still computing (an asynchronous backend); False when only
            host steps are left.
    """

    def __init__(self, wait: Callable[[], PoseResult], in_flight: bool = True) -> None:
        self._wait: Callable[[], PoseResult] | None = wait
        self._result: PoseResult | None = None
        self.in_flight = in_flight

    @classmethod
    def ready(cls, result: PoseResult) -> PendingPose:
        return cls(lambda: result, in_flight=False)

    def result(self) -> PoseResult:
        if self._wait is not None:
            self._result, self._wait = self._wait(), None
        return self._result  # type: ignore[return-value]


def concat_results(parts: list[PoseResult]) -> PoseResult:
    """One result of consecutive batches' results."""
    unique = [p.unique_keypoints for p in parts]
    return PoseResult(keypoints=np.concatenate([p.keypoints for p in parts]),
                      unique_keypoints=None if unique[0] is None else np.concatenate(unique))


class Pipeline:
    """Base of the pipelines: frames in, :class:`PoseResult` out.

    Subclasses implement :meth:`submit` (``preprocess -> inference -> postprocess``, the
    inference started and its postprocess deferred to ``PendingPose.result`` where the backend
    is asynchronous) and may override the rest.
    """

    #: the manifest graph run by the backend a pipeline is handed (top-down: its detector).
    backend_graph = "pose"

    def submit(self, frames: Frames) -> PendingPose:
        """Start a (B, H, W, 3) uint8 RGB batch of any size B >= 1."""
        raise NotImplementedError

    def __call__(self, frames: Frames) -> PoseResult:
        """Keypoints of a (B, H, W, 3) uint8 RGB batch of any size B >= 1."""
        return self.submit(frames).result()

    @property
    def accepts_device_frames(self) -> bool:
        """Takes device batches (:mod:`dlc_runtime.frames`) without copying them down."""
        return False

    @property
    def backend_name(self) -> str:
        """What ran, for the result metadata."""
        backend = getattr(self, "backend", None)
        return backend.name if backend is not None else "none"

    def check_frame_size(self, width: int, height: int, source: str = "video") -> None:
        """Refuse a frame size the graphs cannot take (default: any size)."""

    def state(self) -> dict | None:
        """What a pipeline carries from one batch to the next (None: nothing, the usual case;
        CTD tracking's tracks), saved with the analysis checkpoints as JSON."""
        return None

    def restore(self, state: dict) -> None:
        """Continue from a :meth:`state` (a resumed analysis)."""

    def reset(self) -> None:
        """Forget any carried state: the next batch starts a new video."""

    def close(self) -> None:
        """Close the backends the pipeline opened itself (not the one it was handed)."""


def stream_poses(pipeline: Pipeline, batches: Iterable[tuple[np.ndarray, Frames]],
                 depth: int = 1) -> Iterator[tuple[np.ndarray, PoseResult]]:
    """``(indices, result)`` per batch of ``batches``, in order, with up to ``depth`` batches
    submitted ahead of the one being read: on an asynchronous backend their upload and the
    next decode overlap its compute. A batch whose graph already ran (a synchronous backend)
    is read at once, in order, so its host steps follow its own inference."""
    in_flight: deque[tuple[np.ndarray, PendingPose]] = deque()
    for indices, frames in batches:
        in_flight.append((indices, pipeline.submit(frames)))
        while in_flight and (len(in_flight) > depth or not in_flight[0][1].in_flight):
            done, pending = in_flight.popleft()
            yield done, pending.result()
    while in_flight:
        done, pending = in_flight.popleft()
        yield done, pending.result()


PipelineFactory = Callable[["Bundle", "Backend"], Pipeline]
#: task -> pipeline, or "task/decoder type" -> pipeline for decoders needing their own host steps.
PIPELINES: dict[str, PipelineFactory] = {}


def pipeline_key(task: str, decoder: str | None = None) -> str:
    return f"{task}/{decoder}" if decoder else task


def register_pipeline(task: str, decoder: str | None = None
                      ) -> Callable[[PipelineFactory], PipelineFactory]:
    """Decorator registering a pipeline class for a bundle ``task``.

    Args:
        task: the manifest's ``task``.
        decoder: the manifest's ``decoder.type`` when the pipeline is specific to it (e.g.
            ``paf``, whose assembly runs on the host); None for the task's default pipeline.
    """

    def wrap(cls: PipelineFactory) -> PipelineFactory:
        PIPELINES[pipeline_key(task, decoder)] = cls
        return cls

    return wrap


def pipeline_class(bundle: Bundle) -> PipelineFactory:
    """The pipeline class for ``bundle.task`` (and its decoder type, when one is registered).

    A class may set ``backend_graph``: the manifest graph that the backend it is handed runs
    (``"pose"`` when unset; the top-down pipeline's is its detector).
    """
    # The built-in pipelines are registered by the package's __init__, which Python runs
    # before any of its modules (this one included) can be imported.
    decoder = (bundle.manifest.decoder or {}).get("type")
    cls = PIPELINES.get(pipeline_key(bundle.task, decoder)) or PIPELINES.get(bundle.task)
    if cls is None:
        raise BundleError(f"{bundle.path}: task '{bundle.task}' is not supported by this "
                          f"dlc_runtime yet (supported: {', '.join(sorted(PIPELINES))}); "
                          "re-export the bundle or upgrade dlc-deploy")
    return cls


def make_pipeline(bundle: Bundle, backend: Backend) -> Pipeline:
    """The pipeline for ``bundle``, running on ``backend``."""
    return pipeline_class(bundle)(bundle, backend)
