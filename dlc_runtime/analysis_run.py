"""Decoding and inference of one video into its checkpoint's rows (``analyze_video``'s loop).

Rows are appended in the order of the selected frames (``start, start + stride, ...``). A
selected frame that cannot be read (a damaged stretch, a video that ends before its announced
length) becomes a row of NaN: x, y and likelihood all NaN, pandas' missing value, as DeepLabCut
writes keypoints it does not have; the ranges are kept for ``_meta.pickle``. With
``strict=True`` the decoder's one-line :class:`~dlc_runtime.errors.VideoError` stops the run
instead.

A checkpoint is saved when :meth:`Checkpoint.due` says so and when decoding ends. Ctrl-C saves
one and raises :class:`~dlc_runtime.errors.AnalysisInterrupted`; any other error keeps the last
checkpoint saved (the rerun resumes from it) or, when there is none, removes the rows file.

A resumed run opens the video at the last frame decoded and checks that the frame it gets has
the pixels the checkpoint recorded: seeking is exact for well-formed files, but not for all. When
it is not, the CPU decoder reads from the first frame instead (exact, slower); NVDEC starts the
video again.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from dlc_runtime.backends.base import Backend, make_backend
from dlc_runtime.bundle import Bundle
from dlc_runtime.checkpoint import READ_ROWS, Checkpoint, State, frame_sha256
from dlc_runtime.decode_thread import TRUNCATION_TOLERANCE
from dlc_runtime.decoders import open_video
from dlc_runtime.errors import AnalysisInterrupted
from dlc_runtime.frames import to_host
from dlc_runtime.outputs import RowLayout
from dlc_runtime.pipelines.base import Pipeline, make_pipeline, pipeline_class, stream_poses
from dlc_runtime.selection import FrameSelection
from dlc_runtime.video import VideoIterator

Batches = Iterable[tuple[np.ndarray, Any]]


@dataclass
class RunOptions:
    """``analyze_video``'s arguments that the loop needs (see its docstring)."""

    batch_size: int = 8
    backend: str | Backend = "onnxruntime"
    device: str = "cpu"
    prefetch: int = 4
    backend_options: dict[str, Any] | None = None
    decoder: str = "auto"
    strict: bool = False
    allow_truncated: bool = False
    progress: bool = True
    ctd_tracking: Any = None  # CTDTrackingOptions: run a CTD bundle as CTD tracking


@dataclass
class RunStats:
    """What this call decoded: frames analyzed (NaN rows not counted) and seconds."""

    frames: int
    seconds: float


class _Tap:
    """Passes batches through, keeping the last few so a checkpoint can hash the frame it
    names (a reference only: no copy on the hot path)."""

    def __init__(self, batches: Batches, keep: int = 3) -> None:
        self.batches = batches
        self.recent: deque[tuple[int, Any]] = deque(maxlen=keep)

    def __iter__(self) -> Iterator[tuple[np.ndarray, Any]]:
        for indices, frames in self.batches:
            self.recent.append((int(indices[-1]), frames))
            yield indices, frames

    def sha(self, index: int) -> str | None:
        for last, frames in reversed(self.recent):
            if last == index:
                return frame_sha256(to_host(frames[-1:])[0])
        return None


def merge_ranges(ranges: Iterable[tuple[int, int]], stride: int = 1) -> list[tuple[int, int]]:
    """Half-open frame ranges, with neighbours (no selected frame between) joined."""
    merged: list[tuple[int, int]] = []
    for first, stop in sorted(ranges):
        if merged and first <= merged[-1][1] - 1 + stride:
            merged[-1] = (merged[-1][0], max(merged[-1][1], stop))
        else:
            merged.append((first, stop))
    return merged


def append_gap(ckpt: Checkpoint, first: int, stop: int, stride: int) -> int:
    """NaN rows for the selected frames in ``[first, stop)`` (in chunks: a truncated video can
    miss most of its frames). Returns the rows written."""
    grid = range(first, stop, stride)
    for start in range(0, len(grid), READ_ROWS):
        index = np.asarray(grid[start:start + READ_ROWS], dtype=np.int64)
        values = np.full((len(index), ckpt.dtype["values"].shape[0]), np.nan)
        ckpt.append(index, values, next_frame=int(index[-1]) + stride, last_decoded=None,
                    unreadable=[(int(index[0]), int(index[-1]) + 1)])
    return len(grid)


def append_batch(ckpt: Checkpoint, indices: np.ndarray, values: np.ndarray, stride: int) -> int:
    """The rows of a batch, with NaN rows for selected frames missing before or inside it.
    Returns the NaN rows written."""
    gaps = 0
    breaks = np.flatnonzero(np.diff(indices) != stride) + 1
    for run, vals in zip(np.split(indices, breaks), np.split(values, breaks)):
        gaps += append_gap(ckpt, ckpt.mark.next_frame, int(run[0]), stride)
        ckpt.append(run, vals, next_frame=int(run[-1]) + stride, last_decoded=int(run[-1]))
    return gaps


def run_video(bundle: Bundle, video_path: Path, selection: FrameSelection, ckpt: Checkpoint,
              state: State | None, layout: RowLayout, opts: RunOptions,
              say: Callable[[str], None]) -> RunStats:
    """Analyze the selected frames not yet in ``ckpt`` and save a finished checkpoint.

    Raises:
        AnalysisInterrupted: Ctrl-C (a checkpoint was saved first).
    """
    own_backend = not isinstance(opts.backend, Backend)
    engine: Backend | None = None
    pipeline: Pipeline | None = None
    video: Any = None
    tap: _Tap | None = None
    t0, frames = time.monotonic(), 0

    def sha(index: int) -> str | None:
        return tap.sha(index) if tap is not None else None

    try:
        options = dict(opts.backend_options or {})
        graph = pipeline_class(bundle).backend_graph
        if graph != "pose":  # backends run the "pose" graph unless told otherwise
            options.setdefault("graph", graph)
        engine = (make_backend(bundle, opts.backend, opts.device, **options)
                  if own_backend else opts.backend)  # type: ignore[assignment]
        pipeline = _make_pipeline(bundle, engine, opts, state)  # type: ignore[arg-type]
        ckpt.info.setdefault("backend", pipeline.backend_name)
        ckpt.info.setdefault("batch_size", opts.batch_size)
        video, batches = _open(video_path, selection, ckpt, state, pipeline, opts, say)
        pipeline.check_frame_size(video.width, video.height, source=f"video {video_path}")
        tap = _Tap(batches)
        end = _known_end(video, selection)
        with tqdm(total=selection.count(end), initial=ckpt.mark.rows, unit="frames",
                  disable=not opts.progress, desc=video_path.name) as bar:
            # One batch in flight beside the one read: on an asynchronous backend its upload
            # and the next decode overlap this one's compute.
            for indices, result in stream_poses(pipeline, tap):
                values = layout.values(result.keypoints, result.unique_keypoints, video_path)
                gaps = append_batch(ckpt, indices, values, selection.stride)
                carried = pipeline.state()  # the state these rows end in, for a resume
                if carried is not None:
                    ckpt.info["pipeline_state"] = carried
                frames += len(indices)
                bar.update(len(indices) + gaps)
                if ckpt.due():
                    ckpt.save(sha)
            # A video that ends early: its missing frames too (a count a frame or two high in
            # the metadata is usual and is not a missing frame).
            if not opts.strict and end is not None and \
                    ckpt.mark.next_frame < end - TRUNCATION_TOLERANCE:
                bar.update(append_gap(ckpt, ckpt.mark.next_frame, end, selection.stride))
        ckpt.info["seconds"] = ckpt.info.get("seconds", 0.0) + time.monotonic() - t0
        ckpt.info["stop"] = time.time()
        ckpt.save(sha, done=True)
    except KeyboardInterrupt:
        ckpt.info["seconds"] = ckpt.info.get("seconds", 0.0) + time.monotonic() - t0
        saved = ckpt.save(sha)
        raise AnalysisInterrupted(
            f"analysis of {video_path} interrupted at frame {saved.next_frame} ({saved.rows} "
            f"rows kept in {ckpt.state_path.name}); run the same command again to resume",
            video=video_path, frame=saved.next_frame, checkpoint=ckpt.state_path) from None
    except BaseException:
        if ckpt.saved is None:
            ckpt.discard()
        else:
            ckpt.close()
            say(f"{video_path}: the checkpoint at frame {ckpt.saved.next_frame} is kept; run "
                "the same command again to resume from it")
        raise
    finally:
        if video is not None:
            video.close()
        # A pipeline running several graphs (top-down) opened backends of its own.
        if pipeline is not None:
            pipeline.close()
        if own_backend and engine is not None:
            engine.close()
    return RunStats(frames, time.monotonic() - t0)


def _make_pipeline(bundle: Bundle, engine: Backend, opts: RunOptions,
                   state: State | None) -> Pipeline:
    """The bundle's pipeline, or CTD tracking's; a resumed run continues its carried state."""
    if opts.ctd_tracking is not None:
        from dlc_runtime.pipelines.ctd_tracking import CTDTrackingPipeline

        pipeline: Pipeline = CTDTrackingPipeline.from_options(bundle, engine,
                                                              options=opts.ctd_tracking)
    else:
        pipeline = make_pipeline(bundle, engine)
    carried = state.info.get("pipeline_state") if state is not None else None
    if carried is not None:
        pipeline.restore(carried)
    return pipeline


def _known_end(video: Any, selection: FrameSelection) -> int | None:
    """Where the selected frames end by the video's metadata (None: unknown). A ``stop`` past
    the end of a video without a frame count is not a promise of frames."""
    if video.n_frames <= 0:
        return None
    return video.n_frames if selection.stop is None else min(selection.stop, video.n_frames)


def _open(video_path: Path, selection: FrameSelection, ckpt: Checkpoint, state: State | None,
          pipeline: Pipeline, opts: RunOptions, say: Callable[[str], None]
          ) -> tuple[Any, Batches]:
    """The video opened where this run starts, and its batches from ``ckpt.mark.next_frame``
    on (frames before it, re-read to check the seek, are dropped)."""
    check = state is not None and state.rows > 0 and state.last_decoded is not None \
        and state.last_decoded_sha256 is not None
    first = state.last_decoded if check else ckpt.mark.next_frame  # type: ignore[union-attr]
    video, reason = open_video(
        video_path, decoder=opts.decoder, device=opts.device, batch_size=opts.batch_size,
        prefetch=opts.prefetch, start=first, stop=selection.stop,
        allow_truncated=opts.allow_truncated or not opts.strict,
        accepts_device_frames=pipeline.accepts_device_frames,
        cpu_options={"stride": selection.stride, "skip_unreadable": not opts.strict})
    kind = reason.split(" ", 1)[0]
    if state is not None and state.info.get("decoder_kind", kind) != kind:
        video.close()
        return _restart(video_path, selection, ckpt, pipeline, opts, say,
                        f"it was decoded with {state.info['decoder_kind']}, now with {kind}")
    batches = _selected(video, selection, first)
    if check:
        batches, same = _check_first(batches, state)  # type: ignore[arg-type]
        if not same and kind == "cpu":
            video.close()
            say(f"{video_path}: seeking to frame {first} does not land on the frame the "
                "checkpoint recorded; reading the video from its first frame instead")
            video = VideoIterator(video_path, batch_size=opts.batch_size, prefetch=opts.prefetch,
                                  start=first, stop=selection.stop,
                                  allow_truncated=opts.allow_truncated or not opts.strict,
                                  stride=selection.stride, skip_unreadable=not opts.strict,
                                  seek=False)
            reason = "cpu (read from the first frame: seeking in this video is not exact)"
            batches, same = _check_first(video, state)  # type: ignore[arg-type]
        if not same:
            video.close()
            return _restart(video_path, selection, ckpt, pipeline, opts, say,
                            f"frame {first} does not decode as it did")
    ckpt.info.setdefault("decoder", reason)
    ckpt.info.setdefault("decoder_kind", kind)
    _describe(ckpt, video)
    return video, _from_frame(batches, ckpt.mark.next_frame)


def _restart(video_path: Path, selection: FrameSelection, ckpt: Checkpoint, pipeline: Pipeline,
             opts: RunOptions, say: Callable[[str], None], why: str) -> tuple[Any, Batches]:
    say(f"{video_path}: not resuming the checkpoint ({why}); analyzing from the start")
    pipeline.reset()  # a carried state (CTD tracking's tracks) belongs to the dropped rows
    ckpt.discard()
    ckpt.start(None, selection.start)
    ckpt.info = {"start": time.time()}
    return _open(video_path, selection, ckpt, None, pipeline, opts, say)


def _selected(video: Any, selection: FrameSelection, first: int) -> Batches:
    """The video's batches of selected frames (OpenCV skips the others itself)."""
    if isinstance(video, VideoIterator) or selection.stride == 1:
        return video
    return _every(video, first, selection.stride)


def _every(batches: Batches, first: int, stride: int) -> Iterator[tuple[np.ndarray, Any]]:
    """Every ``stride``-th frame from ``first`` of a decoder that reads them all."""
    for indices, frames in batches:
        keep = np.flatnonzero((indices - first) % stride == 0)
        if len(keep) == len(indices):
            yield indices, frames
        elif len(keep):
            yield indices[keep], frames[keep.tolist()]


def _check_first(batches: Batches, state: State) -> tuple[Batches, bool]:
    """Whether the first frame decoded is the checkpoint's last one, pixel for pixel."""
    iterator = iter(batches)
    head = next(iterator, None)
    if head is None:
        return iterator, False
    indices, frames = head
    same = int(indices[0]) == state.last_decoded and \
        frame_sha256(to_host(frames[:1])[0]) == state.last_decoded_sha256
    return itertools.chain([head], iterator), same


def _from_frame(batches: Batches, next_frame: int) -> Iterator[tuple[np.ndarray, Any]]:
    """The batches without the frames before ``next_frame`` (already in the rows)."""
    for indices, frames in batches:
        if indices[0] < next_frame:
            keep = np.flatnonzero(indices >= next_frame)
            if not len(keep):
                continue
            indices, frames = indices[keep], frames[int(keep[0]):]
        yield indices, frames


def _describe(ckpt: Checkpoint, video: Any) -> None:
    """What the results record of the video (kept by the checkpoint for a resumed run)."""
    for key, value in (("fps", video.fps), ("width", video.width), ("height", video.height),
                       ("n_frames_metadata", video.n_frames)):
        ckpt.info.setdefault(key, value)


__all__ = ["RunOptions", "RunStats", "run_video", "merge_ranges", "append_batch", "append_gap"]
