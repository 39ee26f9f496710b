"""One video's animals tracked into identities, streamed batch by batch, and written.

:class:`VideoTracker` takes each batch of (B, N, K, 3) animals as it comes off the backend
(``analyze_video`` calls it on the host while the next batch computes, and replays a resumed
checkpoint's rows through it); :meth:`VideoTracker.finish` ends the tracks, and
:func:`write_tracking` writes DeepLabCut's files: the tracklets ``<video><scorer>_el.pickle``
(``_bx``, ``_sk``) and, stitched into ``n_animals`` tracks, ``<video><scorer>_el.h5`` (key
``tracks``, one column block per individual, the analysis ``.h5``'s index) and its ``.csv``.

The tracker counts analysed rows, not video frames: with a stride, or frames that could not be
read (NaN rows), consecutive analysed frames are consecutive for the Kalman filter and for
stitching; the files keep the video's frame indices. The state is the live tracks and the
poses tracked so far (what stitching needs); the same rows give the same tracks, which is what
makes a resumed analysis track exactly as an uninterrupted one.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dlc_runtime.errors import TrackingError
from dlc_runtime.outputs import make_columns
from dlc_runtime.tracking.el_format import (stitched_h5_path, stitched_rows,
                                            tracklets_pickle_path, write_stitched_chunks,
                                            write_tracklets_pickle)
from dlc_runtime.tracking.options import TrackingOptions
from dlc_runtime.tracking.stitch import StitchResult, stitch_tracklets
from dlc_runtime.tracking.tracklet_store import Tracklets
from dlc_runtime.tracking.trackers import make_tracker
from dlc_runtime.tracking.tracklets import Tracklet

_WRITE_ROWS = 20_000  # stitched rows built and written at a time (memory stays bounded)


@dataclass
class TrackedVideo:
    """What a :class:`VideoTracker` followed, in row numbers.

    Attributes:
        tracklets: the tracker's tracklets; ``frames`` are row numbers.
        frames: (rows,) the video frame index of each row.
        single: unique bodyparts per row (``Tracklet`` of U keypoints), or None.
    """

    tracklets: list[Tracklet]
    frames: np.ndarray
    single: Tracklet | None = None


class VideoTracker:
    """Tracks a video's animals as batches arrive.

    Args:
        options: the tracker and stitching settings.
        identity_slots: the model has an identity head, so slot i of every frame is the
            individual it scored highest (the pipelines order animals so); the tracker then
            weighs its matches by that identity, and ``identity_only`` takes slots as tracks.
    """

    def __init__(self, options: TrackingOptions, identity_slots: bool = False) -> None:
        if options.identity_only and not identity_slots:
            raise TrackingError("identity_only needs a model with an identity head; this "
                                "bundle has none: track with a tracker instead")
        self.options = options
        self.identity_slots = identity_slots
        self.reset()

    def reset(self) -> None:
        """Forget everything tracked: the rows start again."""
        options = self.options
        self._store = Tracklets()
        self._tracker = None if options.identity_only else make_tracker(
            options.method, tracklets=self._store, **options.tracker_params())
        self._frames: list[np.ndarray] = []
        self._unique: list[np.ndarray] = []
        self._slots: list[np.ndarray] = []  # identity_only: the poses as they are
        self.rows = 0

    def add(self, frame_indices: np.ndarray, keypoints: np.ndarray,
            unique: np.ndarray | None = None) -> None:
        """One batch: (B,) video frame indices, (B, N, K, 3) animals (NaN: missing), and
        (B, U, 3) unique bodyparts or None."""
        kp = np.asarray(keypoints)
        b, n = kp.shape[:2]
        if len(frame_indices) != b:
            raise ValueError(f"{len(frame_indices)} frame indices for {b} frames of animals")
        rows = np.arange(self.rows, self.rows + b)
        if self._tracker is not None:
            identity = np.broadcast_to(np.eye(n), (b, n, n)) if self.identity_slots else None
            self._tracker.track_batch(kp, identity, frames=rows)
        else:
            self._slots.append(np.array(kp, dtype=np.float32))
        self._frames.append(np.asarray(frame_indices, dtype=np.int64))
        if unique is not None:
            self._unique.append(np.asarray(unique, dtype=np.float64).reshape(b, -1, 3))
        self.rows += b

    def finish(self) -> TrackedVideo:
        """End every track; what was tracked, in row numbers."""
        frames = np.concatenate(self._frames) if self._frames else np.zeros(0, np.int64)
        rows = np.arange(self.rows)
        if self._tracker is not None:
            self._tracker.finish()
            tracklets = self._store.pop_closed()
        else:
            slots = np.concatenate(self._slots) if self._slots else np.zeros((0, 0, 0, 3))
            tracklets = [Tracklet(i, rows, slots[:, i], np.broadcast_to(
                np.eye(slots.shape[1])[i], (len(rows), slots.shape[1])))
                for i in range(slots.shape[1])]
        single = Tracklet("single", rows, np.concatenate(self._unique)) if self._unique \
            else None
        return TrackedVideo(tracklets, frames, single)


@dataclass
class TrackingOutputs:
    """The files :func:`write_tracking` wrote, and what stitching found."""

    tracklets_pickle: Path
    tracks_h5: Path | None = None
    tracks_csv: Path | None = None
    n_tracklets: int = 0
    n_tracks: int = 0
    tracked_frames: int = 0
    error: str | None = None

    def summary(self) -> str:
        if self.error:
            return (f"tracking: {self.n_tracklets} tracklets -> {self.tracklets_pickle.name}; "
                    f"not stitched: {self.error}")
        return (f"tracking: {self.n_tracklets} tracklets stitched into {self.n_tracks} animals "
                f"-> {self.tracks_h5}")


def _stitch(tracked: TrackedVideo, n_tracks: int, options: TrackingOptions) -> StitchResult:
    if options.identity_only:
        tracks = [t.without_empty_frames() for t in tracked.tracklets[:n_tracks]]
        tracks = [t if len(t) else None for t in tracks]
        return StitchResult(tracks + [None] * (n_tracks - len(tracks)), [], [])
    try:
        return stitch_tracklets(tracked.tracklets, n_tracks, min_length=options.min_length,
                                split_tracklets=options.split_tracklets,
                                prestitch_residuals=options.prestitch_residuals,
                                max_gap=options.max_gap)
    except ValueError as err:
        raise TrackingError(str(err)) from None


def write_tracking(tracked: TrackedVideo, h5_path: str | os.PathLike[str], scorer: str,
                   bodyparts: list[str], unique_bodyparts: list[str], individuals: list[str],
                   options: TrackingOptions, save_as_csv: bool = False,
                   write_tracklets: bool = True, tracklets_path: Path | None = None,
                   stitch: bool = True) -> TrackingOutputs:
    """Write the tracklets, stitch them and write the tracks, beside ``h5_path``.

    The tracklets pickle is written even when stitching fails (too few long tracklets); then
    ``error`` says why in one line and no ``_el.h5`` is written. ``write_tracklets=False``
    stitches tracklets read from ``tracklets_path`` again without rewriting it. Each file is
    written atomically; ``stitch=False`` writes the tracklets only (DeepLabCut's
    ``convert_detections2tracklets``). Raises OutputError when a file cannot be written.
    """
    h5_path = Path(h5_path)
    n_tracks = int(options.n_animals or len(individuals))
    last = int(tracked.frames.max()) + 1 if len(tracked.frames) else 0
    kept = [t for t in tracked.tracklets if len(t)]
    pickle_path = tracklets_path or tracklets_pickle_path(h5_path, options.method)
    if write_tracklets:
        write_tracklets_pickle(pickle_path, kept, scorer, bodyparts, unique_bodyparts,
                               single=tracked.single, n_frames=last,
                               frame_index=tracked.frames)
    out = TrackingOutputs(pickle_path, n_tracklets=len(kept))
    if not stitch:
        return out
    try:
        result = _stitch(tracked, n_tracks, options)
    except TrackingError as err:
        out.error = str(err)
        return out
    names = options.names(individuals, n_tracks)
    columns = make_columns(scorer, bodyparts, names, unique_bodyparts, multi_animal=True)
    out.n_tracks = sum(t is not None for t in result.tracks)

    def chunks():
        for start in range(0, len(tracked.frames), _WRITE_ROWS):
            stop = min(start + _WRITE_ROWS, len(tracked.frames))
            values = stitched_rows(result.tracks, tracked.single, start, stop, len(bodyparts),
                                   len(unique_bodyparts))
            out.tracked_frames += int(np.isfinite(values).any(axis=1).sum())
            # the analysis .h5's index: the video's frame numbers
            yield pd.DataFrame(values, columns=columns, index=tracked.frames[start:stop])

    tracks_h5 = stitched_h5_path(h5_path, options.method)
    csv = tracks_h5.with_suffix(".csv") if save_as_csv else None
    out.tracks_h5 = write_stitched_chunks(tracks_h5, chunks(), csv)
    out.tracks_csv = csv
    return out
