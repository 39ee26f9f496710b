"""Where the time goes: per-batch stage timings and a backend that times its own runs.

Stages of one batch, as the analysis loop sees them: ``decode`` (waiting for the decode thread's
next batch), ``upload`` (handing the batch to an asynchronous backend: the copy into its pinned
buffer and the queued upload; synchronous backends have none), ``inference`` (the backends'
``run`` calls, or waiting for an asynchronous backend's outputs; every graph of the bundle),
``host`` (the pipeline's own steps around them: box or condition selection, PAF assembly,
identity order), ``write`` (appending to the ``.h5``).
"""
from __future__ import annotations

import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import numpy as np

from dlc_runtime.backends.base import Backend, PendingOutputs

if TYPE_CHECKING:
    from dlc_runtime.bundle import Bundle

STAGES = ("decode", "upload", "inference", "host", "write")


class StageClock:
    """Per-batch durations (seconds) by stage."""

    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = defaultdict(list)
        self.pending_inference = 0.0
        self.pending_upload = 0.0

    def add(self, stage: str, seconds: float) -> None:
        self.samples[stage].append(float(seconds))

    def take_inference(self) -> float:
        """The inference time accumulated since the last call (all backends of a batch)."""
        seconds, self.pending_inference = self.pending_inference, 0.0
        return seconds

    def take_upload(self) -> float:
        """The time spent handing batches to asynchronous backends since the last call."""
        seconds, self.pending_upload = self.pending_upload, 0.0
        return seconds

    def summary(self) -> dict[str, dict[str, float]]:
        """stage -> {p50, p90, p99, mean} in milliseconds per batch."""
        out = {}
        for stage in STAGES:
            values = np.asarray(self.samples.get(stage, ()), dtype=np.float64) * 1e3
            if len(values):
                p50, p90, p99 = np.percentile(values, [50, 90, 99])
                out[stage] = {"p50": round(float(p50), 3), "p90": round(float(p90), 3),
                              "p99": round(float(p99), 3),
                              "mean": round(float(values.mean()), 3)}
        return out


class TimedBackend(Backend):
    """``inner`` with each ``run`` timed into ``clock``; graphs it opens are timed too."""

    def __init__(self, inner: Backend, clock: StageClock) -> None:
        self.inner, self.clock = inner, clock
        self.name = inner.name
        self.made_with = inner.made_with
        self.graph_options = inner.graph_options
        self.accepts_device_frames = inner.accepts_device_frames

    def run(self, images: np.ndarray, **extra_inputs: np.ndarray) -> dict[str, np.ndarray]:
        return self.submit(images, **extra_inputs).result()

    def submit(self, images: np.ndarray, **extra_inputs: np.ndarray) -> PendingOutputs:
        start = time.perf_counter()
        pending = self.inner.submit(images, **extra_inputs)
        spent = time.perf_counter() - start
        if pending.done:  # a synchronous backend: it ran the graph
            self.clock.pending_inference += spent
            return pending
        self.clock.pending_upload += spent

        def wait() -> dict[str, np.ndarray]:
            waited = time.perf_counter()
            try:
                return pending.result()
            finally:
                self.clock.pending_inference += time.perf_counter() - waited

        return PendingOutputs(wait)

    def open_graph(self, bundle: Bundle, graph: str) -> Backend:
        return TimedBackend(self.inner.open_graph(bundle, graph), self.clock)

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> Any:  # backend-specific attributes (input names...)
        return getattr(self.inner, name)
