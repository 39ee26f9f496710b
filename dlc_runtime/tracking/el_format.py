"""DeepLabCut 3's tracking files: ``<video><scorer>_el.pickle`` and ``_el.h5`` (``_bx``, ``_sk``).

The tracklets pickle is what DeepLabCut's ``convert_detections2tracklets``
(``pose_estimation_pytorch/apis/tracklets.py``) writes and its ``TrackletStitcher`` and
tracklet GUI read::

    {"header": MultiIndex (scorer, bodyparts, coords) over every bodypart, unique ones last,
     "single": {frame (int): (U, 3) array},                       # only with unique bodyparts
     tracker id (int): {"frame0042": (K, 4) x, y, likelihood, identity (-1: none), ...},
     ...}

with keys ``"frame" + str(i).zfill(ceil(log10(n_frames)))``. The stitched ``.h5`` is what its
``stitch_tracklets`` writes: key ``tracks``, table format, columns
``(scorer, individuals, bodyparts, coords)`` (individuals then ``single`` for unique
bodyparts), integer index from frame 0 to the last frame. Both files are written atomically:
a reader sees the previous file or the complete new one.

Identity here is one score vector per frame; the pickle stores, as DeepLabCut does, a label
per keypoint, so a round trip turns scores into votes (the most likely label per frame).
"""
from __future__ import annotations

import contextlib
import os
import pickle
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dlc_io import atomic_path
from dlc_runtime.errors import OutputError
from dlc_runtime.full_pickle import StreamedDict, dump_streamed, key_str_width
from dlc_runtime.outputs import COORDS, UNIQUE_INDIVIDUAL, make_columns
from dlc_runtime.tracking.stitch import StitchResult
from dlc_runtime.tracking.tracklets import Tracklet

TRACK_METHODS = {"ellipse": "_el", "box": "_bx", "skeleton": "_sk"}
STITCHED_KEY = "tracks"


def _suffix(track_method: str) -> str:
    try:
        return TRACK_METHODS[track_method]
    except KeyError:
        raise ValueError(f"unknown track method {track_method!r}: use one of "
                         f"{', '.join(TRACK_METHODS)}") from None


def tracklets_pickle_path(h5_path: str | os.PathLike[str], track_method: str = "ellipse") -> Path:
    """``<video><scorer>_el.pickle`` (``_bx``, ``_sk``) beside ``<video><scorer>.h5``."""
    h5_path = Path(h5_path)
    return h5_path.with_name(h5_path.stem + _suffix(track_method) + ".pickle")


def stitched_h5_path(h5_path: str | os.PathLike[str], track_method: str = "ellipse") -> Path:
    """``<video><scorer>_el.h5`` (``_bx``, ``_sk``): the stitched tracks."""
    h5_path = Path(h5_path)
    return h5_path.with_name(h5_path.stem + _suffix(track_method) + ".h5")


def tracklets_header(scorer: str, bodyparts: Sequence[str],
                     unique_bodyparts: Sequence[str] = ()) -> pd.MultiIndex:
    """The pickle's ``header``: (scorer, bodyparts, coords) over all bodyparts, unique last."""
    names = list(bodyparts) + list(unique_bodyparts)
    return pd.MultiIndex.from_product([[scorer], names, list(COORDS)],
                                      names=["scorer", "bodyparts", "coords"])


@dataclass
class TrackletsFile:
    """A read ``_el.pickle``: its header, the tracklets, and the unique bodyparts' poses."""

    header: pd.MultiIndex | None
    tracklets: list[Tracklet]
    single: Tracklet | None = None


def write_tracklets_pickle(path: str | os.PathLike[str], tracklets: Sequence[Tracklet],
                           scorer: str, bodyparts: Sequence[str],
                           unique_bodyparts: Sequence[str] = (), single: Tracklet | None = None,
                           n_frames: int | None = None,
                           frame_index: np.ndarray | None = None) -> Path:
    """Write tracklets in DeepLabCut's ``_el.pickle`` layout, atomically, streaming each
    tracklet's frames into the file (the whole dict is never built in memory).

    Args:
        path: the ``_el.pickle`` to write (see :func:`tracklets_pickle_path`).
        tracklets: the tracker's tracklets; their ids become the pickle's keys.
        scorer, bodyparts, unique_bodyparts: the names of the header.
        single: the unique bodyparts' poses (U keypoints), if the model has any.
        n_frames: the video's frame count (sets the key width); default one past the last
            frame of any tracklet.
        frame_index: maps the tracklets' frames (row numbers) to the video frame indices
            the file keys by; None: they are frame indices already.
    """
    k, u = len(bodyparts), len(unique_bodyparts)
    for t in tracklets:
        if t.keypoints.shape[1] != k:
            raise ValueError(f"{t!r} has {t.keypoints.shape[1]} keypoints where {k} bodyparts "
                             "were named")
    if (single is not None) != bool(u) or (single is not None and single.keypoints.shape[1] != u):
        raise ValueError("pass `single` exactly when there are unique bodyparts, with one "
                         "keypoint per unique bodypart")
    ids = [t.id for t in tracklets]
    if len(set(ids)) != len(ids) or {"header", "single"} & set(ids):
        raise ValueError("tracklet ids must be distinct and not 'header' or 'single': they "
                         "are the pickle's keys")

    def frames_of(t: Tracklet) -> np.ndarray:
        return t.frames if frame_index is None else frame_index[t.frames]

    ends = [int(frames_of(t)[-1]) for t in tracklets if len(t)]
    ends += [int(frames_of(single)[-1])] if single is not None and len(single) else []
    last = max(ends, default=-1)
    n_frames = last + 1 if n_frames is None else int(n_frames)
    if n_frames <= last:
        raise ValueError(f"n_frames={n_frames} but a tracklet reaches frame {last}")
    width = key_str_width(n_frames)

    def poses(t: Tracklet):
        labels = np.full(len(t), -1.0)
        if t.identity is not None:  # frames without any score keep -1
            scored = ~np.isnan(t.identity).all(axis=1)
            labels[scored] = np.nanargmax(t.identity[scored], axis=1)
        for f, kp, label in zip(frames_of(t), t.keypoints, labels):
            row = np.empty((k, 4))
            row[:, :3], row[:, 3] = kp, label
            yield "frame" + str(int(f)).zfill(width), row

    def items():
        yield "header", tracklets_header(scorer, bodyparts, unique_bodyparts)
        if single is not None:
            yield "single", StreamedDict(
                (int(f), np.asarray(kp, np.float64))
                for f, kp in zip(frames_of(single), single.keypoints))
        for t in tracklets:
            yield t.id, StreamedDict(poses(t))

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            dump_streamed(fh, items())
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err} (is the disk full?); "
                          "the previous file, if any, is unchanged") from err
    return path


def _frame_index(key) -> int:
    if isinstance(key, str):
        digits = re.findall(r"\d+", key)
        if not digits:
            raise ValueError(f"frame key {key!r} holds no frame number")
        return int(digits[0])
    return int(key)


def _as_rows(value) -> np.ndarray:
    """One pickled pose as (K, 4): DeepLabCut mixes (K, 4) detections with flat (3K,)
    x, y, likelihood rows where its tracker predicted the pose (no identity: -1)."""
    v = np.asarray(value, dtype=np.float64)
    if v.ndim == 1:
        v = v.reshape(-1, 3)
    if v.ndim != 2 or v.shape[1] not in (3, 4):
        raise OutputError(f"a tracklet pose of shape {np.shape(value)} is neither (K, 3), "
                          "(K, 4) nor flat (3K,); the file is not DeepLabCut's tracklets pickle")
    if v.shape[1] == 3:
        v = np.concatenate([v, np.full((len(v), 1), -1.0)], axis=1)
    return v


def read_tracklets_pickle(path: str | os.PathLike[str]) -> TrackletsFile:
    """Read an ``_el.pickle`` written here or by DeepLabCut (values (K, 3), (K, 4) or flat
    (3K,)). A fourth column of identity labels becomes per-frame identity scores: the share
    of keypoints voting for each individual."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = pickle.load(fh)
    except FileNotFoundError:
        raise OutputError(f"no tracklets file at {path}: run the analysis with tracking "
                          "first") from None
    except (pickle.UnpicklingError, EOFError) as err:
        raise OutputError(f"{path} is not a tracklets pickle ({err}); re-create it") from err
    if not isinstance(data, dict):
        raise OutputError(f"{path} holds a {type(data).__name__}, not DeepLabCut's tracklets "
                          "dict; re-create it")
    data = dict(data)
    header = data.pop("header", None)
    single_dict = data.pop("single", None)
    raw = []
    for tid, frames in data.items():
        if not frames:
            continue
        inds = np.array([_frame_index(key) for key in frames])
        arr = np.stack([_as_rows(v) for v in frames.values()])
        raw.append((tid, inds, arr))
    n_ids = 1 + max((int(np.nanmax(a[..., 3])) for _, _, a in raw
                     if np.any(a[..., 3] >= 0)), default=-1)
    tracklets = []
    for tid, inds, arr in raw:
        identity = None
        if n_ids > 0 and np.any(arr[..., 3] >= 0):
            lab = np.nan_to_num(arr[..., 3], nan=-1).astype(int)
            votes = (lab[..., None] == np.arange(n_ids)).sum(axis=1).astype(np.float64)
            with np.errstate(invalid="ignore"):
                identity = votes / votes.sum(axis=1, keepdims=True)
        tracklets.append(Tracklet(tid, inds, arr[..., :3], identity))
    single = None
    if single_dict:
        inds = np.array([_frame_index(key) for key in single_dict])
        arr = np.asarray([np.asarray(v, dtype=np.float64).reshape(-1, 3)
                          for v in single_dict.values()])
        single = Tracklet("single", inds, arr)
    return TrackletsFile(header=header, tracklets=tracklets, single=single)


def _check_tracks(tracks: Sequence[Tracklet | None], individuals: Sequence[str] | None,
                  bodyparts: Sequence[str], unique_bodyparts: Sequence[str],
                  single: Tracklet | None) -> list[str]:
    if individuals is None:
        individuals = [f"ind{i}" for i in range(1, len(tracks) + 1)]
    if len(individuals) != len(tracks):
        raise ValueError(f"{len(individuals)} individual names for {len(tracks)} tracks")
    if UNIQUE_INDIVIDUAL in individuals:
        raise ValueError(f"{UNIQUE_INDIVIDUAL!r} names the unique bodyparts' columns; "
                         "choose another individual name")
    if (single is not None) != bool(unique_bodyparts):
        raise ValueError("pass `single` exactly when there are unique bodyparts")
    for t in tracks:
        if t is not None and t.keypoints.shape[1] != len(bodyparts):
            raise ValueError(f"{t!r} has {t.keypoints.shape[1]} keypoints for "
                             f"{len(bodyparts)} bodyparts")
    return list(individuals)


def stitched_rows(tracks: Sequence[Tracklet | None], single: Tracklet | None, start: int,
                  stop: int, n_bodyparts: int, n_unique: int = 0) -> np.ndarray:
    """Rows ``start .. stop-1`` of the stitched table: (stop - start, (tracks x K + U) x 3)
    float64, NaN where a track has no pose (the tracks' frames are the row numbers)."""
    k3 = n_bodyparts * 3
    values = np.full((stop - start, len(tracks) * k3 + n_unique * 3), np.nan)
    parts = [(t, slice(i * k3, (i + 1) * k3)) for i, t in enumerate(tracks) if t is not None]
    if single is not None:
        parts.append((single, slice(len(tracks) * k3, None)))
    for t, cols in parts:
        lo, hi = np.searchsorted(t.frames, [start, stop])
        values[t.frames[lo:hi] - start, cols] = t.keypoints[lo:hi].reshape(hi - lo, -1)
    return values


def stitched_frame(result: StitchResult | Sequence[Tracklet | None], scorer: str,
                   bodyparts: Sequence[str], individuals: Sequence[str] | None = None,
                   unique_bodyparts: Sequence[str] = (), single: Tracklet | None = None,
                   n_frames: int | None = None) -> pd.DataFrame:
    """The stitched tracks as DeepLabCut's ``_el.h5`` table (all in memory; a long video's
    goes to disk in chunks with :func:`write_stitched_chunks`).

    Args:
        result: a :class:`StitchResult` or its ``tracks`` (None for an empty track).
        individuals: one name per track; default DeepLabCut's ``ind1, ind2, ...``.
        single: the unique bodyparts' poses, under the individual ``single``.
        n_frames: rows 0 .. n_frames-1; default up to the last tracked frame (DeepLabCut).
    """
    tracks = list(result.tracks if isinstance(result, StitchResult) else result)
    individuals = _check_tracks(tracks, individuals, bodyparts, unique_bodyparts, single)
    ends = [t.end for t in tracks if t is not None and len(t)]
    ends += [single.end] if single is not None and len(single) else []
    last = max(ends, default=-1)
    n_frames = last + 1 if n_frames is None else int(n_frames)
    if n_frames <= last:
        raise ValueError(f"n_frames={n_frames} but a track reaches frame {last}")
    values = stitched_rows(tracks, single, 0, n_frames, len(bodyparts), len(unique_bodyparts))
    columns = make_columns(scorer, bodyparts, individuals, unique_bodyparts, multi_animal=True)
    return pd.DataFrame(values, columns=columns, index=pd.RangeIndex(n_frames))


def write_stitched_h5(path: str | os.PathLike[str], frame: pd.DataFrame) -> Path:
    """Write a table from :func:`stitched_frame` (key ``tracks``, table format) atomically."""
    return write_stitched_chunks(path, [frame])


def write_stitched_chunks(path: str | os.PathLike[str], chunks: Iterable[pd.DataFrame],
                          csv_path: str | os.PathLike[str] | None = None) -> Path:
    """Append consecutive row blocks of the stitched table to ``path`` (key ``tracks``, table
    format) and, with ``csv_path``, to a ``.csv``; both files appear atomically when all the
    blocks are written."""
    path = Path(path)
    csv_path = Path(csv_path) if csv_path is not None else None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as stack:
            tmp = stack.enter_context(atomic_path(path))
            tmp_csv = stack.enter_context(atomic_path(csv_path)) if csv_path else None
            with pd.HDFStore(tmp, mode="w") as store:
                for i, chunk in enumerate(chunks):
                    store.append(STITCHED_KEY, chunk, format="table", index=False)
                    if tmp_csv is not None:
                        chunk.to_csv(tmp_csv, mode="w" if i == 0 else "a", header=i == 0)
                if f"/{STITCHED_KEY}" in store.keys():
                    store.create_table_index(STITCHED_KEY, optlevel=6, kind="medium")
    except Exception as err:  # PyTables raises its own types for OS errors
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise OutputError(f"cannot write {path}: {first} (is the disk full?); the previous "
                          "file, if any, is unchanged") from err
    return path


def read_stitched_h5(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a stitched ``_el.h5`` (written here or by DeepLabCut)."""
    path = Path(path)
    if not path.exists():
        raise OutputError(f"no stitched tracks at {path}: run stitching first")
    return pd.read_hdf(path, key=STITCHED_KEY)
