"""The driver's scheduling loop: idle workers take the next item, dead workers are replaced and
their items retried, each video's outcome is reported once, the progress bar follows the rows.

Ray comes in as the module the driver imported (``ray``); this module does not import it.
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from dlc_runtime.cluster.plan import VideoPlan, WorkItem
from dlc_runtime.cluster.summary import ClusterOutcome, ClusterSummary
from dlc_runtime.cluster.worker import ItemResult
from dlc_runtime.errors import DLCRuntimeError

#: seconds between two polls of the workers' rows (and the longest wait for a result).
POLL_SECONDS = 0.5


@dataclass
class VideoState:
    """A video's progress through the run."""

    index: int
    plan: VideoPlan
    left: set[str]
    outcome: ClusterOutcome
    segment_seconds: float = 0.0
    finished: bool = False


@dataclass
class Slot:
    name: str
    actor: Any
    generation: int = 0
    busy: tuple[WorkItem, int, Any, float] | None = None  # item, attempt, ref, started
    rows: int = 0


@dataclass
class Scheduler:
    """One run's scheduling state (see the module docstring)."""

    ray: Any
    make_actor: Callable[[str], Any]
    videos: list[VideoState]
    max_retries: int
    bar: Any
    on_outcome: Callable[[ClusterOutcome], None] | None
    summary: ClusterSummary
    pending: deque = field(default_factory=deque)
    slots: list[Slot] = field(default_factory=list)
    by_key: dict[str, VideoState] = field(default_factory=dict)
    done_frames: int = 0
    t0: float = field(default_factory=time.monotonic)

    def go(self, n_workers: int) -> None:
        self.t0 = time.monotonic()
        for video in self.videos:
            for item in video.plan.items:
                self.pending.append((item, 0))
                self.by_key[item.key] = video
            self.by_key[video.plan.join_item().key] = video
        if not self.pending:  # nothing but names that yielded no video
            return
        self.slots = [Slot(f"w{i}", self.make_actor(f"w{i}")) for i in range(n_workers)]
        try:
            # Every worker loaded the bundle and made its backend: a bundle this machine
            # cannot run is one line now, and the clock measures analysis, not start-up.
            for _, error in self.ray.get([s.actor.ready.remote() for s in self.slots]):
                if error is not None:
                    raise error
            self.summary.startup_seconds = time.monotonic() - self.t0
            self.t0 = time.monotonic()
            self.bar.reset(total=self.bar.total)  # frames/s and ETA from here, not the start-up
            while self.pending or any(s.busy for s in self.slots):
                self._assign()
                busy = {s.busy[2]: s for s in self.slots if s.busy}
                ready, _ = self.ray.wait(list(busy), num_returns=1, timeout=POLL_SECONDS)
                if ready:  # every one that is done by now, not just the first
                    ready, _ = self.ray.wait(list(busy), num_returns=len(busy), timeout=0)
                for ref in ready:
                    self._finished(busy[ref])
                self._poll()
        finally:
            for slot in self.slots:
                self.ray.kill(slot.actor)

    def _assign(self) -> None:
        for slot in self.slots:
            if slot.busy is None and self.pending:
                item, attempt = self.pending.popleft()
                slot.busy = (item, attempt, slot.actor.run.remote(item, attempt),
                             time.monotonic())
                slot.rows = 0

    def _finished(self, slot: Slot) -> None:
        item, attempt, ref, _ = slot.busy  # type: ignore[misc]
        slot.busy, slot.rows = None, 0
        video = self.by_key[item.key]
        try:
            result: ItemResult = self.ray.get(ref)
        except (self.ray.exceptions.RayActorError, self.ray.exceptions.WorkerCrashedError,
                self.ray.exceptions.OutOfMemoryError) as err:
            self._replace(slot)
            if video.finished:  # failed already: nothing to retry for
                return
            retry = attempt < self.max_retries
            video.outcome.attempts = max(video.outcome.attempts, attempt + (2 if retry else 1))
            if retry:
                self.pending.appendleft((item, attempt + 1))  # the next idle worker takes it
            else:
                first = (str(err).strip().splitlines() or [type(err).__name__])[0]
                self._fail(video, item, f"{item.video}: the worker analyzing {item.key} died "
                                        f"{attempt + 1} times ({first})")
            return
        if result.status == "error":
            raise result.error if result.error is not None else DLCRuntimeError(result.reason)
        if result.status == "failed":
            self._fail(video, item, result.reason, result)
            return
        self._count(item, result)
        out = video.outcome
        out.workers.append(result.worker)
        out.seconds += result.seconds
        video.left.discard(item.key)
        if video.finished:
            return
        if item.kind == "segment":
            video.segment_seconds += result.result.seconds if result.result else 0.0
            if not video.left:
                self.pending.appendleft((video.plan.join_item(), 0))
            return
        joined = result.result
        if item.kind == "join" and joined is not None:  # the segments' time, not the join's 0
            frames_per_s = joined.n_frames / video.segment_seconds if video.segment_seconds \
                else 0.0
            joined = replace(joined, seconds=video.segment_seconds, fps=frames_per_s,
                             resumed_from=None)
        out.status, out.result = result.status, joined
        out.frames = joined.n_frames if joined else 0
        self._close(video)

    def _count(self, item: WorkItem, result: ItemResult) -> None:
        """Progress: an item's rows count once it is done (a skipped one leaves the total)."""
        if item.kind == "join":
            return
        frames = result.result.n_frames if result.status == "analyzed" and result.result else 0
        self.bar.total = max(self.bar.total + frames - item.frames, 0)
        self.done_frames += frames

    def _fail(self, video: VideoState, item: WorkItem, reason: str,
              result: ItemResult | None = None) -> None:
        self.bar.total = max(self.bar.total - item.frames, 0)
        if video.finished:
            return
        if result is not None:
            video.outcome.workers.append(result.worker)
            video.outcome.seconds += result.seconds
        # Its other items are of no use now; ones already running finish and are ignored.
        dropped = [(i, a) for i, a in self.pending if self.by_key[i.key] is video]
        for entry in dropped:
            self.pending.remove(entry)
            self.bar.total = max(self.bar.total - entry[0].frames, 0)
        video.outcome.status, video.outcome.reason = "failed", reason
        self._close(video)

    def _close(self, video: VideoState) -> None:
        video.finished = True
        self.summary.outcomes[video.index] = video.outcome
        if self.on_outcome is not None:
            self.on_outcome(video.outcome)
        done = sum(v.finished for v in self.videos)
        self.bar.set_postfix_str(f"{done}/{len(self.videos)} videos, {len(self.slots)} workers",
                                 refresh=False)
        self._show()

    def _replace(self, slot: Slot) -> None:
        self.ray.kill(slot.actor)
        slot.generation += 1
        slot.actor = self.make_actor(f"{slot.name}.{slot.generation}")
        self.summary.worker_deaths += 1

    def _poll(self) -> None:
        busy = {s.actor.progress.remote(): s for s in self.slots if s.busy}
        if not busy:
            return
        ready, _ = self.ray.wait(list(busy), num_returns=len(busy), timeout=POLL_SECONDS / 2)
        for ref in ready:
            slot = busy[ref]
            try:
                report = self.ray.get(ref)
            except self.ray.exceptions.RayError:
                continue  # a dying worker: its run() says so
            if report and slot.busy and report[0] == slot.busy[0].key:
                slot.rows = max(slot.rows, int(report[1]))
        self._show()

    def _show(self) -> None:
        now = self.done_frames + sum(s.rows for s in self.slots if s.busy)
        if now > self.bar.n:  # never backwards: a retried item counts from its checkpoint
            self.bar.update(now - self.bar.n)
        else:
            self.bar.refresh()


__all__ = ["Scheduler", "VideoState", "Slot", "POLL_SECONDS"]
