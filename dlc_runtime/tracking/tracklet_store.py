"""Where a streaming tracker puts what it tracked: open tracklets, closed ones, unique bodyparts.

A tracklet is open while its track lives and closed when the tracker drops it (``max_age``
passed) or the video ends; closed tracklets are handed out once by ``pop_closed`` so that a
writer can flush them, which keeps memory to the live tracks plus what was not yet taken.
"""
from __future__ import annotations

import numpy as np

from dlc_runtime.tracking.tracklets import Tracklet


class Tracklets:
    """Poses per tracker id, filled frame by frame.

    Attributes:
        single: frame -> (K_unique, 3) unique bodyparts, passed through untracked (DeepLabCut's
            ``"single"`` tracklet); ``pop_single`` empties it.
    """

    def __init__(self) -> None:
        self._open: dict[int, tuple[list[int], list[np.ndarray], list[np.ndarray]]] = {}
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
        """Record ``track_id``'s (K, 3) pose, and its identity scores if any, at ``frame``."""
        frames, poses, ids = self._open.setdefault(int(track_id), ([], [], []))
        frames.append(int(frame))
        poses.append(np.array(keypoints, dtype=np.float64))
        if identity is not None:
            ids.append(np.array(identity, dtype=np.float64))

    def close(self, track_id: int) -> None:
        """The track ended: its tracklet moves to the closed ones (no-op if it has no pose)."""
        entry = self._open.pop(int(track_id), None)
        if entry is None:
            return
        frames, poses, ids = entry
        identity = np.stack(ids) if ids and len(ids) == len(frames) else None
        self._closed.append(Tracklet(int(track_id), frames, np.stack(poses), identity))

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
