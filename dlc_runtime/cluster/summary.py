"""What a cluster run returns: one outcome per video, a table and a one-line summary.

The outcomes are :class:`~dlc_runtime.batch.VideoOutcome` s (what a local run of many videos
yields) with the cluster's facts added: the workers that analyzed the video, its frames and
seconds on them, and the attempts it took. :class:`ClusterSummary` is a
:class:`~dlc_runtime.batch.BatchSummary`, so its :meth:`line` and
:class:`~dlc_runtime.batch.VideosFailedError` read as a local run's.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from dlc_runtime.batch import BatchSummary, VideoOutcome


@dataclass
class ClusterOutcome(VideoOutcome):
    """One video of a cluster run.

    Attributes:
        frames: rows of its result (0 when it failed).
        seconds: time its items took on the workers (summed over segments and the join).
        workers: the workers that analyzed it (``<slot>@<host>``), in order.
        attempts: the most attempts one of its items took (1: no worker died on it).
        segments: the items it was cut into (1: whole).
    """

    frames: int = 0
    seconds: float = 0.0
    workers: list[str] = field(default_factory=list)
    attempts: int = 1
    segments: int = 1


@dataclass
class ClusterSummary(BatchSummary):
    """The outcomes (in the order of the videos given) and the run's totals.

    Attributes:
        n_workers: workers the run used.
        wall_seconds: the run's wall time, from all workers ready to the last result.
        startup_seconds: the time the workers took to start and load the bundle.
        worker_deaths: workers that died and were replaced.
    """

    n_workers: int = 0
    wall_seconds: float = 0.0
    startup_seconds: float = 0.0
    worker_deaths: int = 0

    @property
    def frames(self) -> int:
        """Frames analyzed in this run (skipped videos not counted)."""
        return sum(o.frames for o in self.outcomes
                   if isinstance(o, ClusterOutcome) and o.status == "analyzed")

    @property
    def fps(self) -> float:
        """Frames analyzed per second of wall time over the cluster."""
        return self.frames / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def table(self) -> str:
        """A fixed-width table: video, frames, seconds, worker, status (and why / notes)."""
        rows = [("video", "frames", "seconds", "worker", "status")]
        for o in self.outcomes:
            c = o if isinstance(o, ClusterOutcome) else ClusterOutcome(o.video, o.status)
            notes = []
            if c.segments > 1:
                notes.append(f"{c.segments} segments")
            if c.attempts > 1:
                notes.append(f"{c.attempts} attempts")
            if c.failed:
                notes.append(c.reason)
            status = c.status + (f" ({'; '.join(notes)})" if notes else "")
            rows.append((c.video, str(c.frames), f"{c.seconds:.1f}",
                         ",".join(dict.fromkeys(c.workers)) or "-", status))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = ["  ".join(r[i].ljust(widths[i]) if i != 1 and i != 2 else
                           r[i].rjust(widths[i]) for i in range(4)) + "  " + r[4]
                 for r in rows]
        lines.append(f"{self.frames} frames in {self.wall_seconds:.1f} s on {self.n_workers} "
                     f"workers: {self.fps:.1f} frames/s (workers started in "
                     f"{self.startup_seconds:.1f} s)"
                     + (f"; {self.worker_deaths} workers died and were replaced"
                        if self.worker_deaths else ""))
        return "\n".join(lines)


__all__ = ["ClusterOutcome", "ClusterSummary"]
