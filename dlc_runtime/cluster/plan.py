"""Work items of a cluster run: whole videos, or segments (frame ranges) of long ones.

A video is one item unless there are fewer videos to analyze than workers: then the videos are
cut into about ``workers`` segments in all, in proportion to their frames, none shorter than
``min_segment_frames``. Each segment is analyzed by :func:`~dlc_runtime.analyze.analyze_video`
(``start=``/``stop=``) into a private folder of its own,
``<dest>/<video stem><scorer>_segments/<start>-<stop>/``, with its own checkpoint and completion
record; a join item then writes the video's one result from them
(:mod:`dlc_runtime.cluster.join`) and removes the folder.

The cut is written to ``plan.json`` in that folder before any segment starts, and a rerun reuses
it whatever its number of workers: finished segments are then skipped, half-done ones resumed.
Nothing here imports Ray.
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlc_io import atomic_write_text
from dlc_runtime.errors import DLCRuntimeError
from dlc_runtime.outputs import ResultPaths
from dlc_runtime.selection import FrameSelection, Position, resolve_selection
from dlc_runtime.video import VideoIterator

#: the shortest segment cut by default: a segment costs a seek, a second small result and a
#: share of the join; below ~1000 frames a GPU finishes it in about a second anyway.
MIN_SEGMENT_FRAMES = 1000
PLAN_NAME = "plan.json"


@dataclass(frozen=True)
class WorkItem:
    """One unit of work for a worker.

    Attributes:
        key: unique in the run: the video's path, with ``[0:500]`` for a segment, `` join``
            for a join.
        video: the video file.
        kind: "video" (the whole selection), "segment" (``start``..``stop``) or "join".
        dest: where ``analyze_video`` writes: the run's destination (None: beside the video),
            for a segment its private folder.
        start, stop: a segment's frames (None for the other kinds: the run's own selection).
        frames: selected frames expected (0: unknown), for the progress bar.
        parts: a join's segment folders, in frame order.
    """

    key: str
    video: str
    kind: str
    dest: str | None
    start: int | None = None
    stop: int | None = None
    frames: int = 0
    parts: tuple[str, ...] = ()


@dataclass
class VideoPlan:
    """A video's items: one whole-video item, or its segments (the join comes once they are
    done, see :meth:`join_item`)."""

    video: Path
    dest: Path | None
    items: list[WorkItem]
    parts_folder: Path | None = None

    @property
    def segmented(self) -> bool:
        return self.parts_folder is not None

    def join_item(self) -> WorkItem:
        return WorkItem(f"{self.video} join", str(self.video), "join",
                        None if self.dest is None else str(self.dest),
                        parts=tuple(str(i.dest) for i in self.items))


def parts_folder(video: Path, scorer: str, dest: Path | None) -> Path:
    """The private folder of a video's segments (beside its results)."""
    final = ResultPaths.for_video(video, scorer, dest).h5
    return final.with_name(final.stem + "_segments")


def probe_selection(video: Path, start: Position, stop: Position, stride: int
                    ) -> tuple[FrameSelection, int]:
    """The video's selection, resolved as ``analyze_video`` resolves it, and its frame count by
    the metadata (0: unknown). Raises VideoError / SelectionError as it does."""
    probe = VideoIterator(video, batch_size=1, allow_truncated=True)
    probe.close()
    return resolve_selection(start, stop, stride, fps=probe.fps, n_frames=probe.n_frames,
                             video=video), probe.n_frames


def _selection(video: Path, start: Position, stop: Position, stride: int
               ) -> tuple[FrameSelection, int] | None:
    """:func:`probe_selection`, or None when the video does not open or the selection is bad
    (the item's worker then reports it, as a local run would)."""
    try:
        return probe_selection(video, start, stop, stride)
    except (DLCRuntimeError, OSError):
        return None


def _count(selection: FrameSelection, n_frames: int) -> int:
    """Selected frames by the metadata (0: unknown)."""
    return selection.count(n_frames if n_frames > 0 else None) or 0


def cut(selection: FrameSelection, n_frames: int, pieces: int) -> list[tuple[int, int | None]]:
    """``pieces`` frame ranges covering ``selection``, each starting on a selected frame (a
    multiple of the stride from its start); the last keeps the selection's own stop, so a
    video shorter than its metadata ends the same way as in one run."""
    count = _count(selection, n_frames)
    firsts = [selection.start + selection.stride * (i * count // pieces) for i in range(pieces)]
    return [(a, b) for a, b in zip(firsts, firsts[1:] + [selection.stop])]


def _read_plan(folder: Path, selection: dict[str, Any]) -> list[tuple[int, int | None]] | None:
    try:
        data = json.loads((folder / PLAN_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("selection") != selection:
        return None  # cut for another selection: cut again
    return [(int(a), None if b is None else int(b)) for a, b in data["segments"]]


def plan_videos(videos: Sequence[Path], scorer: str, dest: Path | None, workers: int, *,
                start: Position = None, stop: Position = None, stride: int = 1,
                overwrite: bool = False, splittable: bool = True,
                min_segment_frames: int = MIN_SEGMENT_FRAMES) -> list[VideoPlan]:
    """Each video's items (module docstring).

    Args:
        videos: the video files.
        scorer: the bundle's scorer (result names).
        dest: the destination folder (None: beside each video).
        workers: the number of workers to keep busy.
        start, stop, stride: the run's frame selection.
        overwrite: results already complete are analyzed again.
        splittable: False never cuts videos (tracking carries state from frame to frame).
        min_segment_frames: the shortest segment.
    """
    todo: dict[Path, tuple[FrameSelection, int]] = {}
    plans: dict[Path, VideoPlan] = {}
    analyzable = 0  # videos with work left (complete ones are only checked by a worker)
    for video in videos:
        paths = ResultPaths.for_video(video, scorer, dest)
        folder = parts_folder(video, scorer, dest)
        found = None if (paths.record.is_file() and not overwrite) else \
            _selection(video, start, stop, stride)
        if found is None and folder.is_dir() and (folder / PLAN_NAME).is_file() \
                and paths.record.is_file():
            shutil.rmtree(folder, ignore_errors=True)  # joined; the clean-up was cut short
        frames = _count(*found) if found else 0
        plans[video] = VideoPlan(video, dest, [WorkItem(str(video), str(video), "video",
                                                        None if dest is None else str(dest),
                                                        frames=frames)])
        if found is None:
            continue
        analyzable += 1
        earlier = _read_plan(folder, found[0].as_dict())
        if earlier is not None and splittable:
            plans[video] = _segmented(video, dest, folder, earlier, found[0].stride, found[1])
        elif not paths.checkpoint.exists():  # an earlier whole-video run resumes as one
            todo[video] = found
    total = sum(_count(*found) for found in todo.values())
    if not (splittable and analyzable < workers and total):
        return list(plans.values())
    for video, (selection, n_frames) in todo.items():
        count = _count(selection, n_frames)
        pieces = min(count // max(min_segment_frames, 1), round(workers * count / total))
        if pieces < 2:
            continue
        folder = parts_folder(video, scorer, dest)
        ranges = cut(selection, n_frames, pieces)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / PLAN_NAME, json.dumps(
            {"video": str(video), "selection": selection.as_dict(),
             "segments": [list(r) for r in ranges]}) + "\n")
        plans[video] = _segmented(video, dest, folder, ranges, selection.stride, n_frames)
    return list(plans.values())


def _segmented(video: Path, dest: Path | None, folder: Path,
               ranges: list[tuple[int, int | None]], stride: int, n_frames: int) -> VideoPlan:
    items = []
    for a, b in ranges:
        end = n_frames if b is None else b
        items.append(WorkItem(f"{video}[{a}:{'' if b is None else b}]", str(video),
                              "segment", str(folder / f"{a}-{'end' if b is None else b}"),
                              start=a, stop=b, frames=len(range(a, max(end, a), stride))))
    return VideoPlan(video, dest, items, folder)


__all__ = ["MIN_SEGMENT_FRAMES", "WorkItem", "VideoPlan", "plan_videos", "parts_folder", "cut",
           "probe_selection"]
