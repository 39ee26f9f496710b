"""``run_benchmark``: a bundle on a video, per backend, precision and batch size.

For each configuration, after ``warmup`` batches that are not counted:
- end to end: the analysis loop (decode thread, pipeline, ``.h5`` writer to a scratch file),
  frames/s over ``repeats`` runs (median and spread), with the per-stage latencies;
- engine only: the pose backend alone on one batch already in memory, frames/s;
- efficiency: end to end / engine only;
- peak host memory: the process's resident peak so far (it only grows: read it per row in run
  order).
"""
from __future__ import annotations

import resource
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from dlc_runtime.backends import make_backend
from dlc_runtime.benchmark.machine import machine_info
from dlc_runtime.benchmark.stages import StageClock, TimedBackend
from dlc_runtime.bundle import Bundle
from dlc_runtime.errors import VideoError
from dlc_runtime.outputs import H5Writer
from dlc_runtime.pipelines import make_pipeline
from dlc_runtime.pipelines.base import pipeline_class
from dlc_runtime.video import VideoIterator


@dataclass
class BenchmarkRow:
    backend: str
    precision: str | None
    batch_size: int
    device: str
    frames: int
    fps_runs: list[float]
    fps_median: float
    engine_fps: float
    efficiency: float
    stages_ms: dict[str, dict[str, float]]
    peak_rss_mb: float
    backend_name: str = ""


@dataclass
class BenchmarkReport:
    bundle: str
    video: str
    video_size: tuple[int, int]  # (height, width)
    rows: list[BenchmarkRow] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)
    #: the DeepLabCut-style pipeline on the same weights (``dlc benchmark --baseline``):
    #: {"fps", "batch_size", "speedup", "max_px_vs_bundle", "frames_compared"}.
    baseline: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def peak_rss_mb() -> float:
    """The process's peak resident memory so far (MiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def _options(bundle: Bundle, precision: str | None) -> dict[str, Any]:
    options: dict[str, Any] = {"precision": precision} if precision else {}
    graph = getattr(pipeline_class(bundle), "backend_graph", "pose")
    if graph != "pose":
        options["graph"] = graph
    return options


def end_to_end(bundle: Bundle, video: Path, backend: str, device: str, precision: str | None,
               batch_size: int, warmup: int, max_frames: int | None,
               scratch: Path) -> tuple[float, int, StageClock, str]:
    """One run of the analysis loop: (frames/s after warm-up, frames counted, stage clock,
    what ran)."""
    clock = StageClock()
    engine = TimedBackend(make_backend(bundle, backend, device, **_options(bundle, precision)),
                          clock)
    pipeline = make_pipeline(bundle, engine)
    frames_iter = VideoIterator(video, batch_size=batch_size)
    writer = H5Writer(scratch / "benchmark.h5", bundle.scorer, bundle.bodyparts,
                      bundle.individuals, bundle.unique_bodyparts, bundle.multi_animal)
    counted, start = 0, None
    try:
        before = time.perf_counter()
        for i, (indices, frames) in enumerate(frames_iter):
            got = time.perf_counter()
            result = pipeline(frames)
            computed = time.perf_counter()
            writer.append(indices, result.keypoints, result.unique_keypoints)
            written = time.perf_counter()
            inference = clock.take_inference()
            if i == warmup:
                start = before  # the clock starts as the first counted batch is awaited
            if i >= warmup:
                counted += len(indices)
                clock.add("decode", got - before)
                clock.add("inference", inference)
                clock.add("host", computed - got - inference)
                clock.add("write", written - computed)
            before = written
            if max_frames is not None and counted >= max_frames:
                break
        stop = time.perf_counter()
        name = getattr(pipeline, "backend_name", engine.name)
    finally:
        writer.abort()
        frames_iter.close()
        close = getattr(pipeline, "close", None)
        if close is not None:
            close()
        engine.close()
    if start is None or counted == 0:
        raise VideoError(f"{video}: fewer than {warmup + 1} batches of {batch_size} frames; "
                         "use a longer video or fewer warm-up batches")
    return counted / (stop - start), counted, clock, name


def engine_only(bundle: Bundle, frames: np.ndarray, backend: str, device: str,
                precision: str | None, warmup: int, calls: int) -> float:
    """Frames/s of the pose backend alone on one batch already in memory (one-input graphs;
    two-graph bundles time their first graph, the one the pipeline runs on every frame)."""
    with make_backend(bundle, backend, device, **_options(bundle, precision)) as engine:
        for _ in range(warmup):
            engine.run(frames)
        start = time.perf_counter()
        for _ in range(calls):
            engine.run(frames)
        return calls * len(frames) / (time.perf_counter() - start)


def bundle_keypoints(bundle: Bundle, video: Path, n_frames: int, backend: str = "onnxruntime",
                     device: str = "cpu", batch_size: int = 8) -> np.ndarray:
    """The pipeline's keypoints (N, M, K, 3) of the first ``n_frames`` frames."""
    engine = make_backend(bundle, backend, device, **_options(bundle, None))
    pipeline = make_pipeline(bundle, engine)
    out = []
    try:
        with VideoIterator(video, batch_size=batch_size) as frames:
            for _, batch in frames:
                out.append(pipeline(batch).keypoints)
                if sum(len(k) for k in out) >= n_frames:
                    break
    finally:
        close = getattr(pipeline, "close", None)
        if close is not None:
            close()
        engine.close()
    return np.concatenate(out)[:n_frames]


def first_batch(video: Path, batch_size: int) -> np.ndarray:
    with VideoIterator(video, batch_size=batch_size) as frames:
        return next(iter(frames))[1]


def run_benchmark(bundle_path: str | Path | Bundle, video: str | Path, *,
                  backends: tuple[str, ...] = ("onnxruntime",),
                  precisions: tuple[str | None, ...] = (None,),
                  batch_sizes: tuple[int, ...] = (1, 8), device: str = "cpu", repeats: int = 3,
                  warmup: int = 2, max_frames: int | None = None, engine_calls: int = 10,
                  on_row: Callable[[BenchmarkRow], None] | None = None) -> BenchmarkReport:
    """Benchmarks every (backend, precision, batch size); see the module docstring."""
    bundle = bundle_path if isinstance(bundle_path, Bundle) else Bundle.load(bundle_path)
    video = Path(video)
    with VideoIterator(video, batch_size=1) as probe:
        size = (probe.height, probe.width)
    report = BenchmarkReport(str(bundle.path), str(video), size, machine=machine_info())
    with tempfile.TemporaryDirectory(prefix="dlc-benchmark-") as scratch:
        for backend in backends:
            for precision in precisions:
                for batch in batch_sizes:
                    runs, clocks, name, counted = [], StageClock(), "", 0
                    for _ in range(repeats):
                        fps, counted, clock, name = end_to_end(
                            bundle, video, backend, device, precision, batch, warmup,
                            max_frames, Path(scratch))
                        runs.append(round(fps, 2))
                        for stage, values in clock.samples.items():
                            clocks.samples[stage].extend(values)
                    engine = engine_only(bundle, first_batch(video, batch), backend, device,
                                         precision, warmup, engine_calls)
                    median = float(np.median(runs))
                    row = BenchmarkRow(backend=backend, precision=precision, batch_size=batch,
                                       device=device, frames=counted, fps_runs=runs,
                                       fps_median=round(median, 2),
                                       engine_fps=round(engine, 2),
                                       efficiency=round(median / engine, 3),
                                       stages_ms=clocks.summary(), peak_rss_mb=peak_rss_mb(),
                                       backend_name=name)
                    report.rows.append(row)
                    if on_row is not None:
                        on_row(row)
    return report
