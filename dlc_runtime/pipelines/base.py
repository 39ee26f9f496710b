"""Pipeline interface and registry: one pipeline per bundle task.

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
PIPELINES: dict[str, PipelineFactory] = {}


def register_pipeline(task: str) -> Callable[[PipelineFactory], PipelineFactory]:
    """Decorator registering a pipeline class for a bundle ``task``."""

    def wrap(cls: PipelineFactory) -> PipelineFactory:
        PIPELINES[task] = cls
        return cls

    return wrap


def make_pipeline(bundle: Bundle, backend: Backend):  # -> pipeline instance
    """The pipeline for ``bundle.task`` running on ``backend``."""
    import dlc_runtime.pipelines  # noqa: F401  (registers the built-in pipelines)

    try:
        cls = PIPELINES[bundle.task]
    except KeyError:
        raise BundleError(f"{bundle.path}: task '{bundle.task}' is not supported by this "
                          f"dlc_runtime yet (supported: {', '.join(sorted(PIPELINES))}); "
                          "export a bottom-up model or upgrade dlc-deploy") from None
    return cls(bundle, backend)
