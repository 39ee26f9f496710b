"""Which frames of a video to analyze: ``start``, ``stop`` and ``stride``.

``start`` and ``stop`` are each a frame index or a time:

- an ``int`` (or a string of digits, as a command line passes it): a frame index;
- a ``float``, or a string with a unit or colons: a time from the video's start, in seconds
  (``90.0``, ``"90s"``, ``"90.5s"``), minutes and seconds (``"1:30"``) or hours, minutes and
  seconds (``"1:02:03.5"``).

A time becomes the first frame whose timestamp ``index / fps`` is at or after it, so
``start="1:00", stop="2:00"`` is the minute of frames from 60 s up to (not including) 120 s.
``stop`` is exclusive, as in ``range``; ``stride`` N keeps every N-th frame from ``start``. Rows
of the results keep the video's own frame indices.
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass
from typing import Any, Union

from dlc_runtime.errors import SelectionError

Position = Union[int, float, str, None]

_SECONDS = re.compile(r"^(\d+(?:\.\d*)?)\s*s$")
_CLOCK = re.compile(r"^(?:(\d+):)?(\d+):(\d+(?:\.\d*)?)$")
#: a time is rounded to the frame it names within this fraction of a frame (float noise).
_EPSILON = 1e-6


@dataclass(frozen=True)
class FrameSelection:
    """Frames ``start, start + stride, ...`` before ``stop`` (None: to the end).

    Attributes:
        start, stop, stride: frame indices (resolved).
        asked: the ``start`` / ``stop`` values as given (times stay readable in the records).
    """

    start: int = 0
    stop: int | None = None
    stride: int = 1
    asked: tuple[Any, Any] = (None, None)

    @property
    def is_full(self) -> bool:
        return self.start == 0 and self.stop is None and self.stride == 1

    def count(self, end: int | None) -> int | None:
        """Frames selected in a video whose frames end at ``end`` (None: unknown)."""
        last = self.stop if end is None else (end if self.stop is None else min(end, self.stop))
        if last is None:
            return None
        return -(-max(last - self.start, 0) // self.stride)

    def as_dict(self) -> dict[str, Any]:
        """What the records keep (``_meta.pickle``, the checkpoint)."""
        return {"start": self.start, "stop": self.stop, "stride": self.stride,
                "start_asked": self.asked[0], "stop_asked": self.asked[1]}


def to_frame(value: Position, fps: float, what: str, video: object) -> int | None:
    """The frame index ``value`` names (module docstring); None stays None."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise SelectionError(f"{what}={value!r} is not a frame index or a time")
    if isinstance(value, numbers.Integral):
        index = int(value)
        if index < 0:
            raise SelectionError(f"{what}={index}: a frame index cannot be negative")
        return index
    if isinstance(value, numbers.Real):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return int(text)
        seconds = _parse_time(text, what)
    else:
        raise SelectionError(f"{what}={value!r} is not a frame index or a time")
    if not math.isfinite(seconds) or seconds < 0:
        raise SelectionError(f"{what}={value!r}: a time must be a finite number of seconds >= 0")
    if fps <= 0:
        raise SelectionError(f"{what}={value!r} is a time, but video {video} does not state its "
                             "frame rate; give a frame index instead")
    return math.ceil(seconds * fps - _EPSILON)


def _parse_time(text: str, what: str) -> float:
    match = _SECONDS.match(text)
    if match:
        return float(match.group(1))
    match = _CLOCK.match(text)
    if match:
        hours, minutes, seconds = match.groups()
        if float(seconds) >= 60 or (hours is not None and int(minutes) >= 60):
            raise SelectionError(f"{what}={text!r}: minutes and seconds must be below 60")
        return int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds)
    raise SelectionError(f"{what}={text!r} is not a frame index or a time; use e.g. 1200 "
                         "(frame), \"90s\", \"1:30\" or \"1:02:03.5\"")


def resolve_selection(start: Position = None, stop: Position = None, stride: int = 1, *,
                      fps: float, n_frames: int, video: object) -> FrameSelection:
    """The :class:`FrameSelection` of these arguments for a video.

    Args:
        start, stop: frame indices or times (module docstring); None: the first / past the last.
        stride: keep every ``stride``-th frame (an int >= 1).
        fps, n_frames: the video's frame rate and metadata frame count (0: unknown).
        video: named in the error messages.

    Raises:
        SelectionError: malformed values, ``stop <= start``, or a start past the video's end.
    """
    if isinstance(stride, bool) or not isinstance(stride, numbers.Integral) or stride < 1:
        if isinstance(stride, str) and stride.strip().isdigit() and int(stride) >= 1:
            stride = int(stride)
        else:
            raise SelectionError(f"stride={stride!r}: give a whole number of frames >= 1")
    first = to_frame(start, fps, "start", video)
    last = to_frame(stop, fps, "stop", video)
    first = 0 if first is None else first
    if last is not None and last <= first:
        raise SelectionError(f"stop={stop!r} (frame {last}) is not after start={start!r} (frame "
                             f"{first}): no frame selected")
    if n_frames > 0 and first >= n_frames:
        raise SelectionError(f"start={start!r} (frame {first}) is past the end of video {video} "
                             f"({n_frames} frames)")
    return FrameSelection(first, last, int(stride), (start, stop))


__all__ = ["FrameSelection", "Position", "to_frame", "resolve_selection"]
