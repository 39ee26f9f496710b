"""``dlc analyze --cluster ray``: the same analysis over the workers of a Ray cluster.

The options are added to ``dlc analyze`` by :func:`cluster_options`; :func:`cluster_runner`
returns what runs the videos (the local loop when no cluster is asked for), after checking that
Ray is installed: without it, one ``Error:`` line names ``pip install "dlc-deploy[cluster]"``.
The output reads as a local run's: one line per video as it finishes, then the table of
:meth:`~dlc_runtime.cluster.ClusterSummary.table` and the summary line; a failed video makes
the exit code 1 after the others are written. See docs/cluster.md.
"""
from __future__ import annotations

import sys
from collections.abc import Callable

import click

from dlc_cli.errors import in_cli_words


def cluster_options(command):
    """The cluster options of ``dlc analyze``."""
    for decorator in reversed([
        click.option("--cluster", type=click.Choice(["ray"]), default=None,
                     help="Analyze on a Ray cluster: one worker per GPU (or CPU slot), long "
                          "videos cut into segments when there are fewer videos than workers "
                          "(pip install 'dlc-deploy[cluster]'; docs/cluster.md)."),
        click.option("--address", default=None, metavar="ADDR",
                     help="With --cluster: the Ray cluster (auto, host:6379, "
                          "ray://host:10001); default: a local Ray on this machine."),
        click.option("--workers", type=click.IntRange(min=1), default=None,
                     help="With --cluster: number of workers (default: one per GPU, or per "
                          "--threads-per-worker CPU cores with --device cpu)."),
        click.option("--gpus-per-worker", type=click.FloatRange(min=0), default=None,
                     help="With --cluster: GPUs per worker (default 1 with --device cuda, "
                          "else 0)."),
        click.option("--threads-per-worker", type=click.IntRange(min=1), default=None,
                     help="With --cluster: CPU cores (backend threads) per worker (default 1 "
                          "on the CPU)."),
    ]):
        command = decorator(command)
    return command


def cluster_runner(cluster: str | None, address: str | None = None, workers: int | None = None,
                   gpus_per_worker: float | None = None,
                   threads_per_worker: int | None = None,
                   local: Callable[..., None] | None = None) -> Callable[..., None]:
    """What analyzes the videos: ``local`` without ``cluster``, else a Ray run with these
    settings, called as ``local`` is: ``(bundle, videos, problems, dest, progress,
    **settings)``. Checks first that Ray imports (a one-line ClusterError otherwise)."""
    if cluster is None:
        if any(v is not None for v in (address, workers, gpus_per_worker, threads_per_worker)):
            raise click.UsageError("--address, --workers, --gpus-per-worker and "
                                   "--threads-per-worker need --cluster ray")
        assert local is not None
        return local
    from dlc_runtime.cluster import import_ray

    import_ray()

    def run(bundle, videos, problems, dest, progress: bool, **settings) -> None:
        _analyze_on_ray(bundle, videos, problems, dest, progress, address=address,
                        workers=workers, gpus_per_worker=gpus_per_worker,
                        threads_per_worker=threads_per_worker, **settings)

    return run


def _analyze_on_ray(bundle, videos, problems, dest, progress: bool, **settings) -> None:
    """Runs the videos on Ray, printing each video's line as it finishes, then the table and
    the summary; a failed video: the summary as the one ``Error:`` line (exit code 1)."""
    from tqdm.auto import tqdm

    from dlc_runtime.batch import VideosFailedError
    from dlc_runtime.cluster import analyze_videos_on_ray

    def say(line: str) -> None:
        tqdm.write(in_cli_words(line), file=sys.stdout)  # above the progress bar

    def show(outcome) -> None:
        say(outcome.result.summary() if outcome.result is not None
            else f"failed: {outcome.reason}")

    try:
        summary = analyze_videos_on_ray(bundle, videos, dest, problems=problems,
                                        progress=progress, on_outcome=show, **settings)
    except KeyboardInterrupt:  # the workers are stopped; their checkpoints stay
        raise KeyboardInterrupt("stopped by Ctrl-C; rerun the same command to continue "
                                "(complete results are skipped, the others resume from their "
                                "checkpoints)") from None
    say(summary.table())
    if summary.failed:
        raise VideosFailedError(summary)
    say(summary.line())


__all__ = ["cluster_options", "cluster_runner"]
