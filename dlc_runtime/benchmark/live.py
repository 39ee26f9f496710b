"""``dlc benchmark --live``: batch-1, frame-by-frame latency, as DeepLabCut-live's benchmark
measures it.

One frame at a time, as a camera delivers them: the frame is read and converted to RGB in the
calling thread (no decode thread, no queue), then run alone through the pipeline
(``pipeline(frame[None])``), whose keypoints are on the host when it returns. Per frame:
- ``pipeline``: frame in hand to keypoints out (inference and the pipeline's host steps), the
  figure DeepLabCut-live times around ``get_pose``;
- ``inference``: the part of it spent in the backends (their ``run`` calls, or handing the
  frame to an asynchronous backend and waiting for its outputs);
- ``loop``: read + convert + pipeline, the whole per-frame loop.
The first ``warmup`` frames (model load, allocator growth, autotuning) are not counted. Frames/s
is the counted frames over the sum of their ``loop`` times.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from dlc_runtime.backends import make_backend
from dlc_runtime.benchmark.runner import BenchmarkReport, _options
from dlc_runtime.benchmark.stages import StageClock, TimedBackend
from dlc_runtime.bundle import Bundle
from dlc_runtime.errors import VideoError
from dlc_runtime.pipelines import make_pipeline

#: what is timed per frame (see the module docstring).
MEASURES = ("pipeline", "inference", "loop")


@dataclass
class LiveRow:
    """One backend/precision, frame by frame.

    Attributes:
        latency_ms: measure -> {p50, p90, p99, mean, max} in milliseconds per frame.
        samples_ms: measure -> each counted frame's milliseconds (for plots, re-analysis).
    """

    backend: str
    precision: str | None
    device: str
    backend_name: str
    frames: int
    warmup: int
    fps: float
    latency_ms: dict[str, dict[str, float]]
    samples_ms: dict[str, list[float]] = field(default_factory=dict)


def latency_summary(seconds: list[float] | np.ndarray) -> dict[str, float]:
    """{p50, p90, p99, mean, max} in ms of per-frame durations given in seconds."""
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"p50": round(float(p50), 4), "p90": round(float(p90), 4),
            "p99": round(float(p99), 4), "mean": round(float(ms.mean()), 4),
            "max": round(float(ms.max()), 4)}


def run_live(bundle: Bundle, video: str | Path, backend: str = "onnxruntime",
             device: str = "cpu", precision: str | None = None, frames: int = 300,
             warmup: int = 10, backend_options: dict[str, Any] | None = None) -> LiveRow:
    """Reads up to ``frames`` frames of ``video`` one at a time and times each (see the module
    docstring); the first ``warmup`` are not counted. A video shorter than ``frames`` is
    measured on the frames it has."""
    if warmup < 0 or frames <= warmup:
        raise VideoError(f"live benchmark: {frames} frames leave none counted after {warmup} "
                         "warm-up frames; ask for more frames")
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        cap.release()
        raise VideoError(f"cannot decode video {video}: OpenCV cannot open it; re-encode it, "
                         "e.g. `ffmpeg -i in.mp4 -c:v libx264 out.mp4`")
    clock = StageClock()
    times: dict[str, list[float]] = {m: [] for m in MEASURES}
    read, engine, pipeline = 0, None, None
    try:
        engine = TimedBackend(make_backend(bundle, backend, device,
                                           **_options(bundle, precision, backend_options)),
                              clock)
        pipeline = make_pipeline(bundle, engine)
        pipeline.check_frame_size(int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                                  int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                                  source=f"video {video}")
        while read < frames:
            start = time.perf_counter()
            ok, bgr = cap.read()
            if not ok:
                break
            frame = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            got = time.perf_counter()
            pipeline(frame[None])
            done = time.perf_counter()
            inference = clock.take_inference() + clock.take_upload()
            read += 1
            if read > warmup:
                times["pipeline"].append(done - got)
                times["inference"].append(inference)
                times["loop"].append(done - start)
        name = pipeline.backend_name
    finally:
        cap.release()
        if pipeline is not None:
            pipeline.close()
        if engine is not None:
            engine.close()
    if not times["loop"]:
        raise VideoError(f"{video}: {read} frames, not more than the {warmup} live warm-up "
                         "frames; use a longer video or fewer warm-up frames")
    return LiveRow(backend=backend, precision=precision, device=device, backend_name=name,
                   frames=len(times["loop"]), warmup=warmup,
                   fps=round(len(times["loop"]) / sum(times["loop"]), 2),
                   latency_ms={m: latency_summary(v) for m, v in times.items()},
                   samples_ms={m: [round(s * 1e3, 4) for s in v] for m, v in times.items()})


def add_live(report: BenchmarkReport, bundle: Bundle, video: str | Path, *,
             backends: tuple[str, ...] = ("onnxruntime",),
             precisions: tuple[str | None, ...] = (None,), device: str = "cpu",
             frames: int = 300, warmup: int = 10,
             backend_options: dict[str, Any] | None = None) -> BenchmarkReport:
    """Appends a :class:`LiveRow` per (backend, precision) to ``report.live``."""
    for backend in backends:
        for precision in precisions:
            report.live.append(run_live(bundle, video, backend, device, precision, frames,
                                        warmup, backend_options))
    return report
