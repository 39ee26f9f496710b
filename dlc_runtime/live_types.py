"""The live API's value types and input checks (:mod:`dlc_runtime.live` re-exports the public
ones): its errors, the ``Processor`` base class, latency summaries, frame and crop checks."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dlc_runtime.errors import DLCRuntimeError


class DLCLiveError(DLCRuntimeError):
    """A live call cannot proceed: a bad frame, crop or option, or a call out of order."""


class DLCLiveWarning(UserWarning):
    """A DeepLabCut-live option that has no effect here."""


class Processor:
    """Base of pose processors (DeepLabCut-live's interface): :meth:`process` gets each pose
    and the keyword arguments of ``get_pose`` and returns the pose to hand back; :meth:`save`
    writes whatever the processor recorded. Subclass it and override both."""

    def __init__(self, **kwargs: Any) -> None:
        pass

    def process(self, pose: np.ndarray, **kwargs: Any) -> Any:
        return pose

    def save(self, file: str = "") -> int:
        return 0


@dataclass(frozen=True)
class LatencySummary:
    """Per-call durations over a window of calls, in milliseconds (NaN when no call yet).

    Attributes:
        calls: calls in the window; last_ms: the latest call's; p50_ms, p99_ms, mean_ms, max_ms.
    """

    calls: int
    last_ms: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> LatencySummary:
        if not seconds:
            nan = float("nan")
            return cls(0, nan, nan, nan, nan, nan)
        ms = np.asarray(seconds, dtype=np.float64) * 1e3
        p50, p99 = np.percentile(ms, [50, 99])
        return cls(len(ms), float(ms[-1]), float(p50), float(p99), float(ms.mean()),
                   float(ms.max()))


def check_cropping(cropping: Sequence[int] | None) -> tuple[int, int, int, int] | None:
    if cropping is None:
        return None
    try:
        x1, x2, y1, y2 = (int(v) for v in cropping)
    except (TypeError, ValueError):
        raise DLCLiveError(f"cropping must be four integers [x1, x2, y1, y2], got "
                           f"{cropping!r}") from None
    if not (0 <= x1 < x2 and 0 <= y1 < y2):
        raise DLCLiveError(f"cropping [x1, x2, y1, y2] = {[x1, x2, y1, y2]} is empty or "
                           "negative; it needs 0 <= x1 < x2 and 0 <= y1 < y2 (pixels)")
    return x1, x2, y1, y2


def check_frame(frame: Any, call: str) -> None:
    if frame is None:
        raise DLCLiveError(f"{call} needs a frame: pass the camera image as a numpy array")
    if not isinstance(frame, np.ndarray):
        raise DLCLiveError(f"{call}: the frame is a {type(frame).__name__}, not a numpy array; "
                           "pass the image as np.ndarray (H, W, 3) uint8")
    if frame.dtype != np.uint8:
        raise DLCLiveError(f"{call}: the frame is {frame.dtype}, not uint8; convert it first, "
                           "e.g. np.clip(frame * 255, 0, 255).astype(np.uint8) for floats in "
                           "[0, 1]")
    if not (frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] in (1, 3))) \
            or 0 in frame.shape:
        raise DLCLiveError(f"{call}: the frame has shape {frame.shape}; expected (H, W, 3) "
                           "colour or (H, W) grey")
