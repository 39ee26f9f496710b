"""Where a streaming tracker puts what it tracked: open tracklets, closed ones, unique bodyparts.

A tracklet is open while its track lives and closed when the tracker drops it (``max_age``
passed) or the video ends; closed tracklets are handed out once by ``pop_closed`` so that a
writer can flush them, which keeps memory to the live tracks plus what was not yet taken.
An open tracklet's poses grow in one float32 buffer (doubled when full), not one array per
frame: a long video's tracks cost their values and little else.
"""
from __future__ import annotations

import numpy as np

from dlc_runtime.tracking.tracklets import Tracklet


class _Growing:
    """Rows appended to one array, doubling its capacity when full."""

    __slots__ = ("data", "n")

    def __init__(self, row_shape: tuple[int, ...], dtype) -> None:
        self.data = np.empty((16, *row_shape), dtype=dtype)
        self.n = 0

    def append(self, row) -> None:
        if self.n == len(self.data):
            self.data = np.concatenate([self.data, np.empty_like(self.data)])
        self.data[self.n] = row
        self.n += 1

    def values(self) -> np.ndarray:
        return self.data[: self.n].copy()


class Tracklets:
    """Poses per tracker id, filled frame by frame.

    Attributes:
        single: frame -> (K_unique, 3) unique bodyparts, passed through untracked (DeepLabCut's
            ``"single"`` tracklet); ``pop_single`` empties it.
    """

    def __init__(self) -> None:
        self._open: dict[int, tuple[_Growing, _Growing, _Growing | None]] = {}
        self._closed: list[Tracklet] = []
        self.single: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        """Tracklets held (open and not yet popped closed ones)."""
        return len(self._open) + len(self._closed)

    @property
    def open_ids(self) -> list[int]:
        return list(self._open)

    def add(self, frame: int, track_id: int, keypoints: np.ndarray,
            identity: np.ndarray | None = None) -> None:
        """Record ``track_id``'s (K, 3) pose, and its identity scores if any, at ``frame``
        (a track gets identity scores in every frame or in none)."""
        entry = self._open.get(int(track_id))
        if entry is None:
            entry = (_Growing((), np.int64), _Growing(np.shape(keypoints), np.float32),
                     None if identity is None else _Growing(np.shape(identity), np.float32))
            self._open[int(track_id)] = entry
        frames, poses, ids = entry
        frames.append(int(frame))
        poses.append(keypoints)
        if ids is not None:
            ids.append(identity)

    def close(self, track_id: int) -> None:
        """The track ended: its tracklet moves to the closed ones (no-op if it has no pose)."""
        entry = self._open.pop(int(track_id), None)
        if entry is None:
            return
        frames, poses, ids = entry
        self._closed.append(Tracklet(int(track_id), frames.values(), poses.values(),
                                     None if ids is None else ids.values()))

    def close_all(self) -> None:
        for track_id in list(self._open):
            self.close(track_id)

    def pop_closed(self) -> list[Tracklet]:
        """Closed tracklets not handed out before, in the order they closed."""
        out, self._closed = self._closed, []
        return out

    def pop_single(self) -> dict[int, np.ndarray]:
        out, self.single = self.single, {}
        return out
