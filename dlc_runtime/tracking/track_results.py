"""Tracking finished results again, without running the network (``dlc track``).

Three sources, each DeepLabCut's or ours:

- the analysis ``<video><scorer>.h5`` (multi-animal columns): its rows go through a
  :class:`~dlc_runtime.tracking.video_tracker.VideoTracker` in chunks, as during the analysis,
  so the result is the one ``analyze_video(track=...)`` writes;
- ``<video><scorer>_full.pickle``: every frame's predicted animals (and identity scores);
- ``<video><scorer>_el.pickle`` (``_bx``, ``_sk``): the tracklets are stitched again (another
  ``n_animals``, ``min_length``...), in the analysis ``.h5``'s rows when it is beside them.

Pickles are read with an unpickler that builds only plain containers, numpy arrays and
pandas indexes: a pickle naming anything else (a function to call) is refused, not executed.
"""
from __future__ import annotations

import io
import os
import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from dlc_runtime.errors import OutputError
from dlc_runtime.outputs import H5_KEY, UNIQUE_INDIVIDUAL
from dlc_runtime.tracking.el_format import TRACK_METHODS, read_tracklets_pickle
from dlc_runtime.tracking.options import TrackingOptions
from dlc_runtime.tracking.tracklets import Tracklet
from dlc_runtime.tracking.video_tracker import (TrackedVideo, TrackingOutputs, VideoTracker,
                                                write_tracking)

FULL_SUFFIX = "_full.pickle"
_CHUNK = 4096
_BUILTINS = {"dict", "list", "tuple", "set", "frozenset", "slice", "complex"}
# Submodules holding numpy's and pandas' array, index and dtype reconstructors (pandas moves
# them between versions, hence prefixes); the top-level packages only for their types.
_SUBMODULES = ("numpy.core.", "numpy._core.", "numpy.dtypes", "pandas.core.indexes.",
               "pandas.core.arrays.", "pandas.core.dtypes.", "pandas._libs.", "pandas.arrays")


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if module == "builtins" and name in _BUILTINS or module.startswith(_SUBMODULES):
            return super().find_class(module, name)
        if module in ("numpy", "pandas"):
            found = super().find_class(module, name)
            if isinstance(found, type):
                return found
        raise pickle.UnpicklingError(f"it names {module}.{name}, which a results file never "
                                     "holds")


def load_results_pickle(path: str | os.PathLike[str]) -> dict:
    """A DeepLabCut results pickle (``_full``, ``_el``, ``_assemblies``) as a dict."""
    path = Path(path)
    try:
        data = _PlainUnpickler(io.BytesIO(path.read_bytes())).load()
    except FileNotFoundError:
        raise OutputError(f"no file at {path}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
        raise OutputError(f"{path} is not a DeepLabCut results pickle: {err}") from None
    if not isinstance(data, dict):
        raise OutputError(f"{path} holds a {type(data).__name__}, not a results dict")
    return data


def _analysis_h5(path: Path) -> Path:
    """The analysis ``.h5`` a ``_full.pickle`` / ``_el.pickle`` belongs to (it may not exist)."""
    name = path.name
    for suffix in [FULL_SUFFIX] + [s + ".pickle" for s in TRACK_METHODS.values()]:
        if name.endswith(suffix):
            return path.with_name(name[: -len(suffix)] + ".h5")
    raise OutputError(f"{path}: expected an analysis .h5, a {FULL_SUFFIX} or an _el/_bx/_sk "
                      ".pickle")


def _h5_layout(path: Path) -> tuple[pd.MultiIndex, int]:
    with pd.HDFStore(path, mode="r") as store:
        if f"/{H5_KEY}" not in store.keys():
            raise OutputError(f"{path} has no '{H5_KEY}' table: not an analysis result")
        storer = store.get_storer(H5_KEY)
        n = int(storer.nrows) if storer.is_table else len(store[H5_KEY])
        columns = store.select(H5_KEY, start=0, stop=0).columns if storer.is_table \
            else store[H5_KEY].columns
    if columns.nlevels != 4:
        raise OutputError(f"{path} is a single-animal result (no individuals): there is "
                          "nothing to track")
    return columns, n


def _h5_chunks(path: Path, n_rows: int) -> Iterator[pd.DataFrame]:
    try:
        for start in range(0, n_rows, _CHUNK):
            yield pd.read_hdf(path, H5_KEY, start=start, stop=start + _CHUNK)
    except (TypeError, ValueError):  # a fixed-format file (older DeepLabCut): all at once
        yield pd.read_hdf(path, H5_KEY)


def names_from_columns(columns: pd.MultiIndex) -> tuple[str, list[str], list[str], list[str]]:
    """scorer, individuals, bodyparts, unique bodyparts of multi-animal result columns."""
    scorer = str(columns.get_level_values("scorer")[0])
    inds = list(dict.fromkeys(columns.get_level_values("individuals")))
    individuals = [i for i in inds if i != UNIQUE_INDIVIDUAL]
    bodyparts = list(dict.fromkeys(columns[columns.get_level_values("individuals") ==
                                           individuals[0]].get_level_values("bodyparts")))
    unique = list(dict.fromkeys(columns[columns.get_level_values("individuals") ==
                                        UNIQUE_INDIVIDUAL].get_level_values("bodyparts")))
    return scorer, individuals, bodyparts, unique


def track_h5(h5_path: str | os.PathLike[str], options: TrackingOptions,
             identity_slots: bool = False, save_as_csv: bool = False, stitch: bool = True
             ) -> TrackingOutputs:
    """Track a multi-animal analysis ``.h5`` and write its ``_el`` files beside it (the
    tracklets only with ``stitch=False``)."""
    h5_path = Path(h5_path)
    columns, n_rows = _h5_layout(h5_path)
    scorer, individuals, bodyparts, unique = names_from_columns(columns)
    tracker = VideoTracker(options, identity_slots)
    n_kp = len(individuals) * len(bodyparts) * 3
    for chunk in _h5_chunks(h5_path, n_rows):
        values = chunk.to_numpy(dtype=np.float64)
        kp = values[:, :n_kp].reshape(len(values), len(individuals), len(bodyparts), 3)
        u = values[:, n_kp:].reshape(len(values), len(unique), 3) if unique else None
        tracker.add(chunk.index.to_numpy(), kp, u)
    return write_tracking(tracker.finish(), h5_path, scorer, bodyparts, unique, individuals,
                          options, save_as_csv, stitch=stitch)


def read_full_pickle(path: str | os.PathLike[str], n_unique: int | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, list[str]]:
    """A ``_full.pickle``: frame indices (F,), animals (F, N, K, 3), unique bodyparts
    (F, U, 3) or None, and the bodypart names (K + U, from its metadata).

    Its entries list the K bodyparts' (N, 2) arrays, then the U unique bodyparts' (1, 2);
    ``n_unique`` says how many of the last are unique (None: the analysis ``.h5`` beside it
    tells, else none).
    """
    path = Path(path)
    data = load_results_pickle(path)
    meta = data.get("metadata", {})
    keys = sorted((k for k in data if isinstance(k, str) and k.startswith("frame")
                   and k[5:].isdigit()), key=lambda k: int(k[5:]))
    if not keys:
        raise OutputError(f"{path} holds no frame entries: not a _full.pickle")
    if n_unique is None:
        h5 = _analysis_h5(path)
        n_unique = len(names_from_columns(_h5_layout(h5)[0])[3]) if h5.is_file() else 0
    try:
        per_frame = [[np.concatenate([np.asarray(c, np.float64).reshape(-1, 2),
                                      np.asarray(s, np.float64).reshape(-1, 1)], axis=1)
                      for c, s in zip(data[key]["coordinates"][0], data[key]["confidence"])]
                     for key in keys]
    except (KeyError, IndexError, TypeError, ValueError) as err:
        raise OutputError(f"{path}: a frame entry is not DeepLabCut's (coordinates, "
                          f"confidence): {err}") from None
    n_parts = len(per_frame[0])
    k = n_parts - n_unique
    n = max(max((len(p) for p in parts[:k]), default=0) for parts in per_frame)
    animals = np.full((len(keys), n, k, 3), np.nan)
    unique = np.full((len(keys), n_unique, 3), np.nan) if n_unique else None
    for f, parts in enumerate(per_frame):
        for j in range(k):
            animals[f, : len(parts[j]), j] = parts[j]
        for j in range(n_unique):
            if len(parts[k + j]):
                unique[f, j] = parts[k + j][0]
    frames = np.array([int(key[5:]) for key in keys], dtype=np.int64)
    names = list(meta.get("all_joints_names") or [f"bodypart{i}" for i in range(n_parts)])
    return frames, animals, unique, names


def track_full_pickle(path: str | os.PathLike[str], options: TrackingOptions,
                      scorer: str | None = None, individuals: list[str] | None = None,
                      identity_slots: bool = False, save_as_csv: bool = False
                      ) -> TrackingOutputs:
    """Track a ``_full.pickle``'s animals; the ``_el`` files go beside it. The scorer and
    individuals default to those of the analysis ``.h5`` beside it, else to the scorer in the
    file name and ``ind1, ind2, ...``."""
    path = Path(path)
    h5 = _analysis_h5(path)
    if h5.is_file() and (scorer is None or individuals is None):
        found_scorer, found_individuals, _, _ = names_from_columns(_h5_layout(h5)[0])
        scorer, individuals = scorer or found_scorer, individuals or found_individuals
    frames, animals, unique, names = read_full_pickle(path)
    k = animals.shape[2]
    if not len(frames) or not animals.shape[1]:
        raise OutputError(f"{path} holds no predicted animal: nothing to track")
    tracker = VideoTracker(options, identity_slots)
    for s in range(0, len(frames), _CHUNK):
        tracker.add(frames[s:s + _CHUNK], animals[s:s + _CHUNK],
                    None if unique is None else unique[s:s + _CHUNK])
    individuals = individuals or [f"ind{i + 1}" for i in range(animals.shape[1])]
    return write_tracking(tracker.finish(), h5, scorer or scorer_of(path), names[:k], names[k:],
                          individuals, options, save_as_csv)


def scorer_of(path: Path) -> str:
    """The scorer in a result's file name: from DeepLabCut's ``DLC_`` prefix (DeepLabCut 3
    names; ``DLC`` alone for 2.x) up to the file's suffix."""
    stem = _analysis_h5(path).stem
    at = stem.rfind("DLC_")
    at = at if at >= 0 else stem.rfind("DLC")
    if at < 0:
        raise OutputError(f"{path.name}: no DeepLabCut scorer in the name and no analysis "
                          ".h5 beside it to take one from")
    return stem[at:]


def restitch(el_pickle: str | os.PathLike[str], options: TrackingOptions,
             individuals: list[str] | None = None, save_as_csv: bool = False
             ) -> TrackingOutputs:
    """Stitch an ``_el.pickle``'s tracklets again (``options.method`` names the file kind)."""
    el_pickle = Path(el_pickle)
    found = read_tracklets_pickle(el_pickle)
    if found.header is None:
        raise OutputError(f"{el_pickle} has no header: not a tracklets pickle")
    scorer = str(found.header.get_level_values("scorer")[0])
    names = list(dict.fromkeys(found.header.get_level_values("bodyparts")))
    k = found.tracklets[0].keypoints.shape[1] if found.tracklets else len(names)
    h5 = _analysis_h5(el_pickle)
    if h5.is_file():  # stitch in analysed rows, as the analysis did
        columns, _ = _h5_layout(h5)
        frames = pd.read_hdf(h5, H5_KEY, columns=[columns[0]]).index.to_numpy()
        individuals = individuals or names_from_columns(columns)[1]
    else:
        last = max((t.end for t in found.tracklets), default=-1)
        frames = np.arange(last + 1)
    row = {int(f): i for i, f in enumerate(frames)}

    def to_rows(t: Tracklet) -> Tracklet:
        keep = np.array([int(f) in row for f in t.frames], dtype=bool)
        t = t.take(keep)
        return Tracklet(t.id, [row[int(f)] for f in t.frames], t.keypoints, t.identity)

    single = to_rows(found.single) if found.single is not None else None
    tracked = TrackedVideo([to_rows(t) for t in found.tracklets], frames, single)
    n = options.n_animals or (len(individuals) if individuals else None)
    if n is None:
        raise OutputError(f"{el_pickle}: no analysis .h5 beside it names the individuals; "
                          "give the number of animals (--n-animals)")
    return write_tracking(tracked, h5, scorer, names[:k], names[k:], individuals or [],
                          options, save_as_csv, write_tracklets=False, tracklets_path=el_pickle)
