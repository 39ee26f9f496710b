"""``run_benchmark``: a bundle on a video, per backend, precision and batch size.

For each configuration, after ``warmup`` batches that are not counted:
- end to end: the analysis loop (decode thread, pipeline, ``.h5`` writer to a scratch file),
  frames/s over ``repeats`` runs (median and spread), with the per-stage latencies;
- engine only: the pose backend alone on one batch already in memory, frames/s;
- efficiency: end to end / engine only;
- peak host and device memory: the first of the ``repeats`` runs runs in a fresh process, whose
  peaks are the configuration's own (:mod:`dlc_runtime.benchmark.memory`); its frames/s counts
  as one of the runs;
- with ``compare_frames``: per backend and precision, how far its keypoints are from the fp32
  graph's on onnxruntime (:mod:`dlc_runtime.benchmark.agreement`), on the video's first frames.

``configs`` lists (backend, precision) pairs to run side by side (onnxruntime fp32 beside
openvino fp32/bf16/int8) instead of every backend at every precision.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from collections.abc import Iterator
from typing import Any, Callable

import numpy as np

from dlc_runtime.backends import make_backend
from dlc_runtime.benchmark.agreement import VersusFp32
from dlc_runtime.benchmark.machine import machine_info
from dlc_runtime.benchmark.memory import run_isolated
from dlc_runtime.benchmark.stages import StageClock, TimedBackend
from dlc_runtime.bundle import Bundle
from dlc_runtime.decoders import open_video
from dlc_runtime.errors import VideoError
from dlc_runtime.outputs import H5Writer
from dlc_runtime.pipelines import make_pipeline
from dlc_runtime.pipelines.base import pipeline_class, stream_poses
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
    #: resident peak (MiB) of a fresh process running one end-to-end run of this row.
    peak_rss_mb: float
    backend_name: str = ""
    #: that process's device peak (MiB) on a GPU, None on the CPU or where unreadable.
    peak_device_mb: float | None = None
    #: where ``peak_device_mb`` comes from: "torch", "nvml" or "nvidia-smi".
    device_memory_source: str | None = None
    #: which decoder read the video, and why ("nvdec (...)", "cpu (...)").
    decoder: str = ""
    #: keypoints vs the fp32 graph on onnxruntime (``compare_frames``):
    #: :meth:`dlc_runtime.benchmark.agreement.Agreement.to_dict`, None when not measured.
    vs_fp32: dict[str, Any] | None = None


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
    #: batch-1 frame-by-frame latency per backend and precision (``dlc benchmark --live``):
    #: :class:`dlc_runtime.benchmark.live.LiveRow` (that module imports this one).
    live: list[Any] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _options(bundle: Bundle, precision: str | None,
             extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The backend factory's options: ``extra`` (``dlc benchmark --backend-option``), the
    precision and the graph the pipeline hands its backend."""
    options: dict[str, Any] = dict(extra or {})
    if precision:
        options["precision"] = precision
    graph = pipeline_class(bundle).backend_graph
    if graph != "pose":
        options["graph"] = graph
    return options


def _timed(batches: Iterator[Any], waits: list[float]) -> Iterator[Any]:
    """``batches``, adding each wait for the next batch to ``waits[0]``."""
    iterator = iter(batches)
    while True:
        started = time.perf_counter()
        try:
            item = next(iterator)
        except StopIteration:
            return
        waits[0] += time.perf_counter() - started
        yield item


@dataclass
class EndToEnd:
    """One end-to-end run: frames/s after warm-up, frames counted, stage clock, what ran
    (backend name) and which decoder read the video and why."""

    fps: float
    counted: int
    clock: StageClock
    name: str
    decoder: str


def end_to_end(bundle: Bundle, video: Path, backend: str, device: str, precision: str | None,
               batch_size: int, warmup: int, max_frames: int | None,
               scratch: Path, decoder: str = "auto",
               backend_options: dict[str, Any] | None = None) -> EndToEnd:
    """One run of the analysis loop (:func:`~dlc_runtime.pipelines.base.stream_poses`, one
    batch in flight, as ``analyze_video`` runs it). The stages of a batch are what the loop
    spent between reading one batch's keypoints and the next's: waiting for decoded frames,
    handing them over, waiting for the backend, the pipeline's host steps, writing."""
    clock = StageClock()
    engine = TimedBackend(make_backend(bundle, backend, device,
                                       **_options(bundle, precision, backend_options)), clock)
    pipeline = make_pipeline(bundle, engine)
    frames_iter = None
    writer = H5Writer(scratch / "benchmark.h5", bundle.scorer, bundle.bodyparts,
                      bundle.individuals, bundle.unique_bodyparts, bundle.multi_animal)
    counted, start, waits = 0, None, [0.0]
    try:
        frames_iter, reason = open_video(
            video, decoder=decoder, device=device, batch_size=batch_size,
            accepts_device_frames=pipeline.accepts_device_frames)
        before = time.perf_counter()
        for i, (indices, result) in enumerate(stream_poses(pipeline, _timed(frames_iter, waits))):
            got = time.perf_counter()
            writer.append(indices, result.keypoints, result.unique_keypoints)
            written = time.perf_counter()
            decode, upload, inference = waits[0], clock.take_upload(), clock.take_inference()
            waits[0] = 0.0
            if i == warmup:
                start = before  # the clock starts as the first counted batch is awaited
            if i >= warmup:
                counted += len(indices)
                clock.add("decode", decode)
                if upload:
                    clock.add("upload", upload)
                clock.add("inference", inference)
                clock.add("host", max(got - before - decode - upload - inference, 0.0))
                clock.add("write", written - got)
            before = written
            if max_frames is not None and counted >= max_frames:
                break
        stop = time.perf_counter()
        name = pipeline.backend_name
    finally:
        writer.abort()
        if frames_iter is not None:
            frames_iter.close()
        pipeline.close()
        engine.close()
    if start is None or counted == 0:
        raise VideoError(f"{video}: fewer than {warmup + 1} batches of {batch_size} frames; "
                         "use a longer video or fewer warm-up batches")
    return EndToEnd(counted / (stop - start), counted, clock, name, reason)


def end_to_end_run(bundle: str, video: str, backend: str, device: str, precision: str | None,
                   batch_size: int, warmup: int, max_frames: int | None,
                   decoder: str = "auto",
                   backend_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """One :func:`end_to_end` run as JSON: what a fresh measurement process runs
    (:func:`dlc_runtime.benchmark.memory.run_isolated`)."""
    with tempfile.TemporaryDirectory(prefix="dlc-benchmark-") as scratch:
        run = end_to_end(Bundle.load(bundle), Path(video), backend, device, precision,
                         batch_size, warmup, max_frames, Path(scratch), decoder,
                         backend_options)
    return {"fps": run.fps, "counted": run.counted, "samples": dict(run.clock.samples),
            "name": run.name, "decoder": run.decoder}


def device_resident(frames: np.ndarray, engine: Any, device: str) -> Any:
    """``frames`` on the GPU when ``engine`` takes device batches and torch can put them there
    (so engine-only time has no upload in it), else ``frames``."""
    if not engine.accepts_device_frames or not device.startswith("cuda"):
        return frames
    try:
        import torch
    except ImportError:
        return frames
    return torch.from_numpy(frames).to(device)


def engine_only(bundle: Bundle, frames: np.ndarray, backend: str, device: str,
                precision: str | None, warmup: int, calls: int,
                backend_options: dict[str, Any] | None = None) -> float:
    """Frames/s of the pose backend alone on one batch already in memory, on the device where
    the backend takes device batches (one-input graphs; two-graph bundles time their first
    graph, the one the pipeline runs on every frame)."""
    with make_backend(bundle, backend, device,
                      **_options(bundle, precision, backend_options)) as engine:
        frames = device_resident(frames, engine, device)
        for _ in range(warmup):
            engine.run(frames)
        start = time.perf_counter()
        # Submitted back to back: an asynchronous backend keeps the device busy (it waits for
        # its oldest batch when its buffers are all in use); a synchronous one runs in turn.
        pending = [engine.submit(frames) for _ in range(calls)]
        for batch in pending:
            batch.result()
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
        pipeline.close()
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
                  on_row: Callable[[BenchmarkRow], None] | None = None,
                  decoder: str = "auto",
                  backend_options: dict[str, Any] | None = None,
                  configs: tuple[tuple[str, str | None], ...] | None = None,
                  compare_frames: int = 0) -> BenchmarkReport:
    """Benchmarks every (backend, precision, batch size); see the module docstring.
    ``decoder``: "auto", "cpu" or "nvdec" (:mod:`dlc_runtime.decoders`); ``backend_options``:
    further backend factory options for every configuration (e.g. ``cuda_graphs=False``);
    ``configs``: (backend, precision) pairs instead of ``backends`` x ``precisions``;
    ``compare_frames``: frames on which each pair's keypoints are compared with fp32's (0:
    not compared)."""
    bundle = bundle_path if isinstance(bundle_path, Bundle) else Bundle.load(bundle_path)
    video = Path(video)
    with VideoIterator(video, batch_size=1) as probe:
        size = (probe.height, probe.width)
    report = BenchmarkReport(str(bundle.path), str(video), size, machine=machine_info())
    pairs = configs or tuple((b, p) for b in backends for p in precisions)
    agreement = VersusFp32(bundle, video, compare_frames, backend_options, device) \
        if compare_frames else None
    with tempfile.TemporaryDirectory(prefix="dlc-benchmark-") as scratch:
        for backend, precision in pairs:
            vs_fp32 = agreement.measure(backend, precision) if agreement else None
            for batch in batch_sizes:
                memory = run_isolated("dlc_runtime.benchmark.runner:end_to_end_run", {
                    "bundle": str(bundle.path), "video": str(video), "backend": backend,
                    "device": device, "precision": precision, "batch_size": batch,
                    "warmup": warmup, "max_frames": max_frames, "decoder": decoder,
                    "backend_options": backend_options},
                    device)
                first = memory.result
                runs, clocks = [round(first["fps"], 2)], StageClock()
                counted, name = first["counted"], first["name"]
                for stage, values in first["samples"].items():
                    clocks.samples[stage].extend(values)
                for _ in range(repeats - 1):
                    run = end_to_end(bundle, video, backend, device, precision, batch,
                                     warmup, max_frames, Path(scratch), decoder,
                                     backend_options)
                    runs.append(round(run.fps, 2))
                    counted, name = run.counted, run.name
                    for stage, values in run.clock.samples.items():
                        clocks.samples[stage].extend(values)
                engine = engine_only(bundle, first_batch(video, batch), backend, device,
                                     precision, warmup, engine_calls, backend_options)
                median = float(np.median(runs))
                row = BenchmarkRow(backend=backend, precision=precision, batch_size=batch,
                                   device=device, frames=counted, fps_runs=runs,
                                   fps_median=round(median, 2),
                                   engine_fps=round(engine, 2),
                                   efficiency=round(median / engine, 3),
                                   stages_ms=clocks.summary(),
                                   peak_rss_mb=memory.peak_rss_mb, backend_name=name,
                                   peak_device_mb=memory.peak_device_mb,
                                   device_memory_source=memory.device_source,
                                   decoder=first["decoder"], vs_fp32=vs_fp32)
                report.rows.append(row)
                if on_row is not None:
                    on_row(row)
    return report
