"""A backend that gets a Ctrl-C part-way through a video (for the resume tests)."""
from __future__ import annotations

import numpy as np

from dlc_runtime import Backend


class CtrlCBackend(Backend):
    """Wraps a real backend; its ``at``-th batch raises KeyboardInterrupt, as Ctrl-C would
    during inference."""

    name = "onnxruntime"

    def __init__(self, inner: Backend, at: int) -> None:
        self.inner, self.at, self.calls = inner, at, 0

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return self.inner.run(images)
