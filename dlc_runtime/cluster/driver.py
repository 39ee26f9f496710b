"""Analyzing many videos on a Ray cluster: the driver (see docs/cluster.md).

:func:`analyze_videos_on_ray` connects to Ray (``address``; none: a local Ray on this machine),
starts one :class:`~dlc_runtime.cluster.worker.AnalysisWorker` actor per GPU (or per CPU slot of
``threads_per_worker`` cores), each loading the bundle once, cuts the videos into work items
(:mod:`dlc_runtime.cluster.plan`) and hands them to idle workers until all are done:

- a worker that dies (killed, out of memory, a machine lost) is replaced by a new actor and its
  item is given to the next idle worker, at most ``max_retries`` more times; the retry resumes
  from the item's last checkpoint when there is one;
- a video that cannot be analyzed (corrupt, unreadable, unwritable results) is one failed
  outcome with its reason, and the other videos go on; an error that concerns every video (the
  bundle, the backend) stops the run, as it does locally;
- one progress bar counts frames over the cluster (frames/s, videos done, ETA): the driver
  polls each busy worker for the rows its item's checkpoint holds.

Ray is imported here only, inside the functions: ``dlc_runtime`` installs and runs without it.
Every machine must see the bundle, the videos and the destination under the same paths (shared
storage), and the driver reads the videos' headers to plan the segments.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from dlc_runtime.bundle import Bundle
from dlc_runtime.cluster.plan import MIN_SEGMENT_FRAMES, plan_videos
from dlc_runtime.cluster.scheduler import Scheduler, VideoState
from dlc_runtime.cluster.summary import ClusterOutcome, ClusterSummary
from dlc_runtime.cluster.worker import AnalysisWorker
from dlc_runtime.errors import DLCRuntimeError
from dlc_runtime.inputs import InputProblem

#: the one line of a missing Ray.
RAY_MISSING = ('Ray is not installed, and analysis on a cluster needs it: '
               'pip install "dlc-deploy[cluster]"')


class ClusterError(DLCRuntimeError):
    """Ray is missing, or the cluster cannot run the workers asked for."""


def import_ray() -> Any:
    """The ``ray`` module, or a :class:`ClusterError` naming the extra to install."""
    # Ray's tqdm support replaces builtins.print in the driver process for good unless told not
    # to: a library must not change the caller's print.
    os.environ.setdefault("RAY_TQDM_PATCH_PRINT", "0")
    try:
        import ray
    except ImportError:
        raise ClusterError(RAY_MISSING) from None
    return ray


@dataclass(frozen=True)
class WorkerSpec:
    """How many workers, and what each one holds of the cluster."""

    count: int
    cpus: float
    gpus: float
    threads: int | None
    device: str


def worker_spec(resources: dict[str, float], device: str, workers: int | None,
                gpus_per_worker: float | None, threads_per_worker: int | None) -> WorkerSpec:
    """One worker per ``gpus_per_worker`` GPUs (default 1 on a CUDA device) or, on the CPU, per
    ``threads_per_worker`` cores (default 1); ``workers`` caps or sets the number.

    Raises:
        ClusterError: the cluster has no room for one worker, or for ``workers``.
    """
    gpus = float(gpus_per_worker if gpus_per_worker is not None
                 else (1 if device.startswith("cuda") else 0))
    threads = threads_per_worker or (1 if gpus == 0 else None)
    cpus = float(threads or 1)
    have_cpu, have_gpu = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    fits = int(have_gpu // gpus) if gpus else int(have_cpu // cpus)
    fits = min(fits, int(have_cpu // cpus)) if gpus else fits
    count = workers if workers is not None else fits
    if count < 1 or count > fits:
        need = f"{gpus:g} GPU and {cpus:g} CPU" if gpus else f"{cpus:g} CPU"
        raise ClusterError(f"the Ray cluster ({have_cpu:g} CPU, {have_gpu:g} GPU) has room for "
                           f"{fits} worker{'s' if fits != 1 else ''} of {need} each, not "
                           f"{max(count, 1)}; start more nodes (ray start --address ...) or "
                           "ask for fewer workers")
    # Ray shows each actor only its GPUs, as cuda:0...
    return WorkerSpec(count, cpus, gpus, threads, "cuda" if gpus and device.startswith("cuda")
                      else device)


def analyze_videos_on_ray(
    bundle: str | os.PathLike[str] | Bundle,
    videos: Sequence[str | os.PathLike[str]],
    dest_folder: str | os.PathLike[str] | None = None,
    *,
    address: str | None = None,
    workers: int | None = None,
    gpus_per_worker: float | None = None,
    threads_per_worker: int | None = None,
    max_retries: int = 2,
    min_segment_frames: int = MIN_SEGMENT_FRAMES,
    problems: Iterable[InputProblem] = (),
    progress: bool = True,
    on_outcome: Callable[[ClusterOutcome], None] | None = None,
    worker_env: dict[str, str] | None = None,
    backend: str = "onnxruntime",
    device: str = "cpu",
    backend_options: dict[str, Any] | None = None,
    **analyze_options: Any,
) -> ClusterSummary:
    """Analyze ``videos`` on a Ray cluster; the results are those of a local run.

    Args:
        bundle: the bundle folder (or a loaded :class:`Bundle`: its folder is what the workers
            load), on storage every machine sees.
        videos: the video files.
        dest_folder: where results go (default: beside each video).
        address: the Ray cluster (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``); None:
            an already initialized Ray, else a new local one on this machine.
        workers: how many workers (default: as many as the cluster has room for).
        gpus_per_worker: GPUs per worker (default 1 on a CUDA ``device``, else 0).
        threads_per_worker: CPU cores per worker, the backend's threads (default 1 on the CPU;
            on GPUs 1 core reserved and the backend's own thread default).
        max_retries: times an item is retried after the worker analyzing it died.
        min_segment_frames: the shortest segment when videos are cut (fewer videos than
            workers); a large value never cuts.
        problems: names that yielded no video: failed outcomes, first.
        progress: the aggregate progress bar.
        on_outcome: called with each video's outcome as soon as it is known.
        worker_env: environment variables each worker sets before it loads the bundle
            (variables read when a library is imported, such as CUDA's, belong in Ray's
            ``runtime_env`` of ``ray.init``).
        backend, device, backend_options, **analyze_options: as for
            :func:`~dlc_runtime.analyze.analyze_video` (``batch_size``, ``start``, ``stop``,
            ``stride``, ``save_as_csv``, ``overwrite``, ``resume``, ``strict``...).

    Returns:
        A :class:`ClusterSummary`: one outcome per problem and per video, in order.

    Raises:
        ClusterError: Ray is missing, or the cluster has no room for the workers.
        DLCRuntimeError: an error that concerns every video (the bundle, the backend).
    """
    ray = import_ray()
    loaded = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
    paths = [Path(v) for v in videos]
    dest = Path(dest_folder) if dest_folder is not None else None
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING)
    try:
        spec = worker_spec(ray.cluster_resources(), device, workers, gpus_per_worker,
                           threads_per_worker)
        tracking = analyze_options.get("track") or analyze_options.get("ctd_tracking")
        plans = plan_videos(paths, loaded.scorer, dest, spec.count,
                            start=analyze_options.get("start"),
                            stop=analyze_options.get("stop"),
                            stride=analyze_options.get("stride", 1),
                            overwrite=analyze_options.get("overwrite", False),
                            splittable=not tracking, min_segment_frames=min_segment_frames)
        # Ray sets OMP_NUM_THREADS to an actor's num_cpus itself. worker_env is set by the
        # worker: a runtime_env would start every worker through Ray's runtime-env agent.
        actor_class = ray.remote(AnalysisWorker).options(
            num_cpus=spec.cpus, num_gpus=spec.gpus, max_concurrency=2, max_restarts=0)

        def make_actor(name: str) -> Any:
            return actor_class.remote(name, str(loaded.path), backend, spec.device,
                                      backend_options, spec.threads, analyze_options,
                                      worker_env)

        problems = list(problems)
        summary = ClusterSummary(n_workers=spec.count)
        summary.outcomes = [ClusterOutcome(p.name, "failed", reason=p.reason, frames=0,
                                           attempts=0) for p in problems]
        summary.outcomes += [ClusterOutcome(str(p.video), "failed") for p in plans]
        tracked = [VideoState(len(problems) + i, plan, {item.key for item in plan.items},
                              ClusterOutcome(str(plan.video), "failed",
                                             segments=len(plan.items)))
                   for i, plan in enumerate(plans)]
        total = sum(item.frames for plan in plans for item in plan.items)
        # No more workers than items: a worker's start costs seconds and a model load.
        summary.n_workers = min(spec.count, max(1, sum(len(p.items) for p in plans)))
        run = Scheduler(ray, make_actor, tracked, max_retries, None, on_outcome, summary)
        with tqdm(total=total, unit="frames", desc="cluster", disable=not progress,
                  dynamic_ncols=True) as bar:
            bar.set_postfix_str(f"0/{len(plans)} videos, {summary.n_workers} workers")
            for outcome in summary.outcomes[:len(problems)]:
                if on_outcome is not None:
                    on_outcome(outcome)
            run.bar = bar
            run.go(summary.n_workers)
        summary.wall_seconds = time.monotonic() - run.t0
        return summary
    finally:
        if started:
            ray.shutdown()


__all__ = ["analyze_videos_on_ray", "ClusterError", "RAY_MISSING", "import_ray", "worker_spec",
           "WorkerSpec"]
