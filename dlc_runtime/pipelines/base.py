"""Pipeline interface and registry: one pipeline per bundle task (and decoder, where it matters).

A pipeline turns a batch of uint8 RGB frames into keypoints in frame coordinates:
``preprocess -> inference (backend) -> postprocess`` (rtmlib's shape). It is stateless across
calls, which is also the extension point for the planned live single-frame API: a live caller
wraps one frame as a batch of one, ``pipeline(frame[None])``, and reads ``keypoints[0]``.
Stateful host steps (tracking) will sit after the pipeline, not inside it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from dlc_runtime.errors import BundleError

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


PipelineFactory = Callable[["Bundle", "Backend"], Callable[[np.ndarray], PoseResult]]
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


def make_pipeline(bundle: Bundle, backend: Backend):  # -> pipeline instance
    """The pipeline for ``bundle``, running on ``backend``."""
    return pipeline_class(bundle)(bundle, backend)
