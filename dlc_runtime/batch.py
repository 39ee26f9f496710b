"""Many videos with one bundle: loaded once, one backend for all, going on past a bad video.

:class:`VideoAnalyzer` holds the loaded :class:`~dlc_runtime.bundle.Bundle` (its graphs hashed
once) and one backend, created when the first video needs it and reused by every
:func:`~dlc_runtime.analyze.analyze_video` call after it. :func:`analyze_many` runs it over a list
of videos, one progress bar per video (``analyze_video``'s) under a total, and yields one
:class:`VideoOutcome` per video: a corrupt, missing or unwritable video is reported and the next
one analyzed. Errors that concern every video (the bundle, the backend, the device) still stop the
run, and so does Ctrl-C (``KeyboardInterrupt`` is never caught here).
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
from tqdm.auto import tqdm

from dlc_runtime.analysis_result import AnalysisResult
from dlc_runtime.analyze import analyze_video
from dlc_runtime.backends.base import Backend, make_backend
from dlc_runtime.bundle import Bundle
from dlc_runtime.errors import DLCRuntimeError, OutputError, VideoError
from dlc_runtime.inputs import InputProblem, check_output_folder
from dlc_runtime.outputs import ResultPaths
from dlc_runtime.pipelines.base import pipeline_class

#: Errors that concern one video only: it is reported and the run goes on.
PER_VIDEO_ERRORS: tuple[type[Exception], ...] = (VideoError, OutputError)


class VideosFailedError(DLCRuntimeError):
    """Some videos of a run could not be analyzed; the others were. ``summary`` has them all."""

    def __init__(self, summary: BatchSummary) -> None:
        super().__init__(summary.line())
        self.summary = summary


def _opens(video: Path) -> bool:
    """The file is there and OpenCV opens its container (frames are analyze_video's to judge)."""
    if not video.is_file():
        return False
    capture = cv2.VideoCapture(str(video))
    try:
        return bool(capture.isOpened())
    finally:
        capture.release()


def one_line(err: BaseException) -> str:
    """An error's message on one line (whitespace folded)."""
    return " ".join(str(err).split()) or type(err).__name__


class VideoAnalyzer:
    """Analyze videos one after the other with one bundle and one backend.

    Args:
        bundle: a bundle folder or a loaded :class:`Bundle`.
        backend: a backend name or a ready :class:`Backend` (then not closed here).
        device: "cpu" or "cuda[:N]".
        backend_options: keyword arguments for the backend factory.
        **analyze_options: passed to every :func:`analyze_video` call (``batch_size``,
            ``save_as_csv``, ``overwrite``, ``allow_truncated``, ``decoder``, ``progress``...).

    Use it as a context manager, or call :meth:`close`.
    """

    def __init__(self, bundle: str | os.PathLike[str] | Bundle,
                 backend: str | Backend = "onnxruntime", device: str = "cpu",
                 backend_options: dict[str, Any] | None = None, **analyze_options: Any) -> None:
        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
        self.device = device
        self.backend_options = dict(backend_options or {})
        self.analyze_options = analyze_options
        self._backend_name = backend if isinstance(backend, str) else backend.name
        self._backend: Backend | None = backend if isinstance(backend, Backend) else None
        self._own_backend = not isinstance(backend, Backend)

    @property
    def scorer(self) -> str:
        return self.bundle.scorer

    def backend(self) -> Backend:
        """The shared backend, created on first use (the graph its pipeline hands it)."""
        if self._backend is None:
            options = dict(self.backend_options)
            graph = pipeline_class(self.bundle).backend_graph
            if graph != "pose":
                options.setdefault("graph", graph)
            self._backend = make_backend(self.bundle, self._backend_name, self.device,
                                         **options)
        return self._backend

    def analyze(self, video: str | os.PathLike[str],
                dest_folder: str | os.PathLike[str] | None = None) -> AnalysisResult:
        """:func:`analyze_video` on the shared backend; raises as it does."""
        video = Path(video)
        overwrite = bool(self.analyze_options.get("overwrite", False))
        paths = ResultPaths.for_video(video, self.bundle.scorer, dest_folder)
        engine: str | Backend
        if not overwrite and paths.record.is_file():
            # Probably complete: analyze_video checks and skips it without a backend (or, if
            # the record turns out stale, analyzes it with one of its own).
            engine = self._backend or self._backend_name
        else:
            check_output_folder(paths.h5.parent, "--dest" if dest_folder is not None
                                else "the video's folder")
            if self._backend is None and not _opens(video):
                # analyze_video opens the video before making a backend: it says what is wrong
                # in milliseconds, before a model loads onto a device.
                engine = self._backend_name
            else:
                engine = self.backend()
        return analyze_video(self.bundle, video, dest_folder=dest_folder, backend=engine,
                             device=self.device, backend_options=self.backend_options,
                             **self.analyze_options)

    def close(self) -> None:
        """Close the backend if this analyzer created it. Idempotent."""
        if self._own_backend and self._backend is not None:
            backend, self._backend = self._backend, None
            backend.close()

    def __enter__(self) -> VideoAnalyzer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class VideoOutcome:
    """What happened to one video (or to a name that yielded none)."""

    video: str
    status: str  # "analyzed" | "skipped" | "failed"
    result: AnalysisResult | None = None
    reason: str = ""
    #: the error a failed video raised (None for a name that yielded no video).
    error: BaseException | None = None

    @property
    def failed(self) -> bool:
        return self.status == "failed"


@dataclass
class BatchSummary:
    """The outcomes of a run, and its one-line summary."""

    outcomes: list[VideoOutcome] = field(default_factory=list)

    def of(self, status: str) -> list[VideoOutcome]:
        return [o for o in self.outcomes if o.status == status]

    @property
    def failed(self) -> list[VideoOutcome]:
        return self.of("failed")

    def line(self) -> str:
        """``3 videos: 1 analyzed, 1 skipped (already analyzed), 1 failed: <video>: <why>``."""
        n = len(self.outcomes)
        text = (f"{n} video{'s' if n != 1 else ''}: {len(self.of('analyzed'))} analyzed, "
                f"{len(self.of('skipped'))} skipped (already analyzed), "
                f"{len(self.failed)} failed")
        if self.failed:
            text += ": " + "; ".join(o.reason for o in self.failed)
        return text


def analyze_many(analyzer: VideoAnalyzer, videos: Iterable[str | os.PathLike[str]],
                 dest_folder: str | os.PathLike[str] | None = None,
                 problems: Iterable[InputProblem] = (), progress: bool = True
                 ) -> Iterator[VideoOutcome]:
    """Analyze ``videos`` in order, yielding each one's outcome as it is known.

    Args:
        analyzer: the bundle and backend (see :class:`VideoAnalyzer`).
        videos: the video files.
        dest_folder: where results go (default: beside each video); the caller checks it
            first (:func:`~dlc_runtime.inputs.check_output_folder`): a bad ``--dest`` concerns
            every video.
        problems: names that yielded no video (missing, no match): reported first, as failed.
        progress: a total bar over the videos (the per-video bars are ``analyze_video``'s).

    A video failing with a :data:`PER_VIDEO_ERRORS` error becomes a failed outcome; any other
    error, and ``KeyboardInterrupt``, ends the run (the analyzer's backend is left to its owner
    to close).
    """
    videos = [Path(v) for v in videos]
    problems = list(problems)
    total = tqdm(total=len(videos) + len(problems), unit="video", desc="all videos",
                 disable=not progress or len(videos) + len(problems) < 2, position=0,
                 leave=True)
    try:
        for problem in problems:
            total.update(1)
            yield VideoOutcome(problem.name, "failed", reason=problem.reason)
        for video in videos:
            try:
                result = analyzer.analyze(video, dest_folder)
                outcome = VideoOutcome(str(video), "skipped" if result.skipped else "analyzed",
                                       result)
            except PER_VIDEO_ERRORS as err:
                reason = one_line(err)
                if video.name not in reason:
                    reason = f"{video}: {reason}"
                outcome = VideoOutcome(str(video), "failed", reason=reason, error=err)
            total.update(1)
            yield outcome
    finally:
        total.close()


__all__ = ["PER_VIDEO_ERRORS", "VideosFailedError", "VideoAnalyzer", "VideoOutcome",
           "BatchSummary", "analyze_many", "one_line"]
