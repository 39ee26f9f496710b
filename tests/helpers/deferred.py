"""An asynchronous backend on the CPU: the inner backend runs only when the outputs are asked
for, as a GPU's results are only there once its stream is synchronized."""
from __future__ import annotations

import numpy as np

from dlc_runtime.backends.base import Backend, PendingOutputs


class DeferredBackend(Backend):
    """Runs ``inner`` only when the result is asked for; counts batches in flight."""

    accepts_device_frames = False

    def __init__(self, inner: Backend) -> None:
        self.inner, self.name = inner, f"deferred-{inner.name}"
        self.in_flight = self.most_in_flight = self.submitted = 0

    def run(self, images, **extra):
        return self.submit(images, **extra).result()

    def submit(self, images, **extra) -> PendingOutputs:
        frames = np.array(images, copy=True)  # what an upload would take at submit time
        self.in_flight += 1
        self.submitted += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)

        def wait():
            self.in_flight -= 1
            return self.inner.run(frames, **extra)

        return PendingOutputs(wait)

    def close(self) -> None:
        self.inner.close()
