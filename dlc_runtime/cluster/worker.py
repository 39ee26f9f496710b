"""The cluster's worker: one per GPU (or per CPU slot), the bundle and backend loaded once.

:class:`AnalysisWorker` is a plain class; the driver (:mod:`dlc_runtime.cluster.driver`) makes
it a Ray actor. It analyzes :class:`~dlc_runtime.cluster.plan.WorkItem` s one at a time with
the same :class:`~dlc_runtime.batch.VideoAnalyzer` and
:func:`~dlc_runtime.analyze.analyze_video` as a local run, on the backend it made once, so its
results, checkpoints and resumes are a local run's. It never raises for a video: the outcome
comes back as an :class:`ItemResult` (a corrupt video is ``failed`` with its one-line reason; an
error that concerns every video, such as a bundle the machine cannot run, is ``error`` and
stops the run). Only the death of its process (killed, out of memory, a lost machine) reaches
the driver as a Ray error, and the driver retries the item elsewhere.
"""
from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlc_runtime.analysis_result import AnalysisResult
from dlc_runtime.batch import PER_VIDEO_ERRORS, VideoAnalyzer, one_line
from dlc_runtime.bundle import Bundle
from dlc_runtime.checkpoint import CRASH_ENV
from dlc_runtime.cluster.join import remove_parts, run_identity, write_joined_checkpoint
from dlc_runtime.cluster.plan import WorkItem
from dlc_runtime.errors import DLCRuntimeError
from dlc_runtime.outputs import ResultPaths, RowLayout


@dataclass
class ItemResult:
    """What a worker reports for one item.

    Attributes:
        key: the item's key.
        status: "analyzed", "skipped" (complete before), "failed" (this video cannot be
            analyzed: ``reason``) or "error" (``error`` concerns every video: the run stops).
        result: the ``analyze_video`` result (analyzed / skipped).
        reason: one line.
        error: the exception of an "error".
        seconds: wall time of the item on the worker.
        worker: ``<slot>@<host>``.
    """

    key: str
    status: str
    result: AnalysisResult | None = None
    reason: str = ""
    error: BaseException | None = None
    seconds: float = 0.0
    worker: str = ""


class AnalysisWorker:
    """Loads the bundle and makes the backend once, then analyzes items.

    Args:
        name: the worker's slot name (``w0``...); the host name is added.
        bundle_path: the bundle folder (read from every machine: shared storage).
        backend, device, backend_options: as for ``analyze_video``.
        threads: CPU threads of the backend (onnxruntime's ``intra_op_threads``; None: its
            default). Not part of the checkpoints' identity: threads do not change results.
        analyze_options: the other ``analyze_video`` arguments of the run (``batch_size``,
            ``start``, ``stop``, ``stride``, ``save_as_csv``, ``overwrite``, ``resume``...).
        env: environment variables to set in this process first (e.g. a test's crash point,
            :data:`~dlc_runtime.checkpoint.CRASH_ENV`).
    """

    def __init__(self, name: str, bundle_path: str, backend: str = "onnxruntime",
                 device: str = "cpu", backend_options: dict[str, Any] | None = None,
                 threads: int | None = None,
                 analyze_options: dict[str, Any] | None = None,
                 env: dict[str, str] | None = None) -> None:
        os.environ.update(env or {})
        self.name = f"{name}@{socket.gethostname()}"
        self.device = device
        self.backend_options = dict(backend_options or {})
        self.options = dict(analyze_options or {}, progress=False)
        self.error: BaseException | None = None
        self._current: tuple[str, Path] | None = None
        try:
            self.bundle = Bundle.load(bundle_path)
            made_with = dict(self.backend_options)
            if threads and backend == "onnxruntime":
                made_with.setdefault("intra_op_threads", int(threads))
            self.engine = VideoAnalyzer(self.bundle, backend, device,
                                        backend_options=made_with).backend()
            layout = RowLayout(self.bundle.scorer, self.bundle.bodyparts,
                               self.bundle.individuals, self.bundle.unique_bodyparts,
                               self.bundle.multi_animal)
            self._row_bytes = 8 * (1 + layout.n_values)  # the checkpoint's rows: index + values
        except DLCRuntimeError as err:  # reported by ready() and run(): one line, not a trace
            self.error = err

    def ready(self) -> tuple[str, BaseException | None]:
        """The worker's name, and the error that keeps it from working (None: ready)."""
        return self.name, self.error

    def progress(self) -> tuple[str, int] | None:
        """The item being analyzed and its rows so far (the checkpoint's rows file grows by
        one record per row, unbuffered), or None when idle. Runs beside :meth:`run` (the
        actor has two threads)."""
        current = self._current
        if current is None:
            return None
        key, rows = current
        try:
            return key, rows.stat().st_size // self._row_bytes
        except OSError:
            return key, 0

    def run(self, item: WorkItem, attempt: int = 0) -> ItemResult:
        """Analyze one item; never raises for a video (module docstring)."""
        if attempt > 0:
            # A crash point (tests) fires on an item's first attempt only, so the retry shows
            # the recovery instead of dying the same way.
            os.environ.pop(CRASH_ENV, None)
        if self.error is not None:
            return ItemResult(item.key, "error", reason=one_line(self.error), error=self.error,
                              worker=self.name)
        t0 = time.monotonic()
        try:
            result = self._analyze(item)
        except PER_VIDEO_ERRORS as err:
            reason = one_line(err)
            if Path(item.video).name not in reason:
                reason = f"{item.video}: {reason}"
            return ItemResult(item.key, "failed", reason=reason, worker=self.name,
                              seconds=time.monotonic() - t0)
        except DLCRuntimeError as err:
            return ItemResult(item.key, "error", reason=one_line(err), error=err,
                              worker=self.name, seconds=time.monotonic() - t0)
        finally:
            self._current = None
        return ItemResult(item.key, "skipped" if result.skipped else "analyzed", result,
                          seconds=time.monotonic() - t0, worker=self.name)

    def _analyze(self, item: WorkItem) -> AnalysisResult:
        options = dict(self.options)
        if item.kind == "segment":
            options.update(start=item.start, stop=item.stop)
        elif item.kind == "join":
            run = run_identity(self.engine.name, self.device, options.get("decoder", "auto"),
                               self.backend_options, options.get("strict", False),
                               options.get("allow_truncated", False))
            write_joined_checkpoint(self.bundle, item.video, item.dest, item.parts, run,
                                    options.get("start"), options.get("stop"),
                                    options.get("stride", 1))
            options["resume"] = True  # the joined rows are that checkpoint
        if item.kind != "join":
            rows = ResultPaths.for_video(item.video, self.bundle.scorer, item.dest)
            self._current = (item.key, rows.checkpoint_rows)
        analyzer = VideoAnalyzer(self.bundle, backend=self.engine, device=self.device,
                                 backend_options=self.backend_options, **options)
        result = analyzer.analyze(item.video, item.dest)
        if item.kind == "join":
            remove_parts(Path(item.parts[0]).parent)
        return result


__all__ = ["AnalysisWorker", "ItemResult"]
