"""DeepLabCut-compatible result files: ``.h5``, ``.csv`` and ``_meta.pickle``.

Naming follows DeepLabCut 3: ``<video stem><scorer>.h5`` in the destination folder, key
``df_with_missing``, columns ``(scorer, bodyparts, coords)`` for single-animal bundles or
``(scorer, individuals, bodyparts, coords)`` for multi-animal ones (unique bodyparts under the
individual ``single``), coords ``x, y, likelihood``, integer index = frame number.

Results stream to an HDF5 table in ``<name>.h5.part`` batch by batch (memory stays flat however
long the video; ``analyze_video`` streams them from its checkpoint's rows file).
:meth:`H5Writer.finish` then reads the whole table back and compares it with what was
appended: HDF5 can lose writes on a full disk without raising, and a file that pandas reads
happily but whose last frames are zeros is worse than no file. Publishing the files under their
final names, the completion record last, is :mod:`dlc_runtime.results`' job.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dlc_io import CommitOnSuccess, fsync_file, part_path
from dlc_runtime.errors import OutputError

H5_KEY = "df_with_missing"
COORDS = ("x", "y", "likelihood")
UNIQUE_INDIVIDUAL = "single"
READ_BACK_ROWS = 50_000  # rows per chunk when verifying a written table


@dataclass(frozen=True)
class ResultPaths:
    """Where the results of one video go; ``record`` is the completion record (written last),
    ``checkpoint`` and ``checkpoint_rows`` exist only while the video is being analyzed."""

    h5: Path
    csv: Path
    meta: Path
    record: Path

    @classmethod
    def for_video(cls, video_path: str | os.PathLike[str], scorer: str,
                  dest_folder: str | os.PathLike[str] | None = None) -> ResultPaths:
        """DeepLabCut naming: ``<dest>/<video stem><scorer>{.h5,.csv,_meta.pickle}``, plus
        ``_complete.json``."""
        video_path = Path(video_path)
        folder = Path(dest_folder) if dest_folder is not None else video_path.parent
        prefix = video_path.stem + scorer
        return cls(h5=folder / f"{prefix}.h5", csv=folder / f"{prefix}.csv",
                   meta=folder / f"{prefix}_meta.pickle",
                   record=folder / f"{prefix}_complete.json")

    @property
    def checkpoint(self) -> Path:
        """The checkpoint's state file while the video is being analyzed
        (:mod:`dlc_runtime.checkpoint`)."""
        return self.h5.with_name(self.h5.stem + "_checkpoint.json")

    @property
    def checkpoint_rows(self) -> Path:
        """The checkpoint's rows file."""
        return self.h5.with_name(self.h5.stem + "_checkpoint.rows")


def make_columns(scorer: str, bodyparts: Sequence[str], individuals: Sequence[str] = ("animal",),
                 unique_bodyparts: Sequence[str] = (), multi_animal: bool = False) -> pd.MultiIndex:
    """The DeepLabCut column MultiIndex for these names."""
    if not multi_animal:
        if unique_bodyparts:
            raise ValueError("unique bodyparts need the multi-animal layout (multi_animal=True)")
        return pd.MultiIndex.from_product([[scorer], list(bodyparts), list(COORDS)],
                                          names=["scorer", "bodyparts", "coords"])
    names = ["scorer", "individuals", "bodyparts", "coords"]
    cols = pd.MultiIndex.from_product([[scorer], list(individuals), list(bodyparts),
                                       list(COORDS)], names=names)
    if unique_bodyparts:
        unique = pd.MultiIndex.from_product([[scorer], [UNIQUE_INDIVIDUAL],
                                             list(unique_bodyparts), list(COORDS)], names=names)
        cols = cols.append(unique)
    return cols


class _Digest:
    """A running hash of frame indices and float64 values, independent of how rows are batched."""

    def __init__(self) -> None:
        self.index = hashlib.blake2b(digest_size=16)
        self.values = hashlib.blake2b(digest_size=16)

    def update(self, index: np.ndarray, values: np.ndarray) -> None:
        self.index.update(np.ascontiguousarray(index, dtype=np.int64).tobytes())
        self.values.update(np.ascontiguousarray(values, dtype=np.float64).tobytes())

    def same(self, other: _Digest) -> bool:
        return (self.index.digest(), self.values.digest()) == \
            (other.index.digest(), other.values.digest())


class RowLayout:
    """How keypoints become the float64 values of one result row (the column order of
    :func:`make_columns`).

    Args:
        scorer, bodyparts, individuals, unique_bodyparts, multi_animal: the column layout.
    """

    def __init__(self, scorer: str, bodyparts: Sequence[str],
                 individuals: Sequence[str] = ("animal",), unique_bodyparts: Sequence[str] = (),
                 multi_animal: bool = False) -> None:
        self.columns = make_columns(scorer, bodyparts, individuals, unique_bodyparts, multi_animal)
        self.n_individuals = len(individuals) if multi_animal else 1
        self.n_bodyparts = len(bodyparts)
        self.n_unique = len(unique_bodyparts)

    @property
    def n_values(self) -> int:
        return len(self.columns)

    def values(self, keypoints: np.ndarray, unique_keypoints: np.ndarray | None = None,
               where: object = "results") -> np.ndarray:
        """(B, n_values) float64 rows of a batch.

        Args:
            keypoints: (B, N, K, 3) x, y, likelihood; individuals beyond the layout's are
                dropped (as DeepLabCut does).
            unique_keypoints: (B, U, 3) or (B, 1, U, 3) when the layout has unique bodyparts.
            where: named in the error messages.
        """
        kp = np.asarray(keypoints)
        b = kp.shape[0] if kp.ndim else 0
        if kp.ndim != 4 or kp.shape[2:] != (self.n_bodyparts, 3) \
                or kp.shape[1] < self.n_individuals:
            raise ValueError(f"keypoints must be (B={b}, N>={self.n_individuals}, "
                             f"K={self.n_bodyparts}, 3), got {kp.shape}")
        # float64 like DeepLabCut's files, so downstream tools see the dtype they expect.
        parts = [kp[:, : self.n_individuals].reshape(b, -1).astype(np.float64)]
        if self.n_unique:
            if unique_keypoints is None:
                raise ValueError(f"{where}: the layout has {self.n_unique} unique bodyparts "
                                 "but no unique_keypoints were given")
            u = np.asarray(unique_keypoints).reshape(b, -1)
            if u.shape[1] != self.n_unique * 3:
                raise ValueError(f"unique_keypoints must hold {self.n_unique} x 3 values per "
                                 f"frame, got {np.asarray(unique_keypoints).shape}")
            parts.append(u.astype(np.float64))
        return np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]

    def keypoints(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The inverse of :meth:`values`: (B, N, K, 3) keypoints and (B, U, 3) unique
        keypoints (None without unique bodyparts) of (B, n_values) rows."""
        rows = np.asarray(values)
        split = self.n_individuals * self.n_bodyparts * 3
        keypoints = rows[:, :split].reshape(len(rows), self.n_individuals, self.n_bodyparts, 3)
        unique = rows[:, split:].reshape(len(rows), self.n_unique, 3) if self.n_unique else None
        return keypoints, unique


class H5Writer(CommitOnSuccess):
    """Append keypoints batch by batch to ``<path>.part``; :meth:`finish` verifies it.

    Args:
        path: the final ``.h5`` path (this writer only ever writes ``<path>.part``).
        scorer, bodyparts, individuals, unique_bodyparts, multi_animal: the column layout
            (see :func:`make_columns`).

    Used as a context manager it commits (finishes, then renames onto ``path``) on success and
    removes the ``.part`` file on error; callers publishing several files together call
    :meth:`finish` and rename it themselves. Every write failure is an :class:`OutputError`
    and leaves no file under ``path``.
    """

    def __init__(self, path: str | os.PathLike[str], scorer: str, bodyparts: Sequence[str],
                 individuals: Sequence[str] = ("animal",), unique_bodyparts: Sequence[str] = (),
                 multi_animal: bool = False) -> None:
        self.path = Path(path)
        self.part = part_path(self.path)
        self.layout = RowLayout(scorer, bodyparts, individuals, unique_bodyparts, multi_animal)
        self.columns = self.layout.columns
        self.n_rows = 0
        self._digest = _Digest()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # mode="w" also discards a stale .part left by a crashed earlier run.
        self._store: pd.HDFStore | None = self._guard(lambda: pd.HDFStore(self.part, mode="w"),
                                                      "create")
        self._finished = False

    def _guard(self, action, doing: str):
        """Runs ``action``; any failure of the file layer becomes one OutputError line."""
        try:
            return action()
        except OutputError:
            raise
        except Exception as err:  # PyTables raises its own types (HDF5ExtError...) for OSErrors
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise OutputError(f"cannot {doing} {self.part}: {first} (is the disk full?); "
                              f"nothing was written under {self.path.name}") from err

    def append(self, frame_indices: np.ndarray, keypoints: np.ndarray,
               unique_keypoints: np.ndarray | None = None) -> None:
        """Append one batch.

        Args:
            frame_indices: (B,) frame numbers (the h5 index).
            keypoints, unique_keypoints: as for :meth:`RowLayout.values`.
        """
        if len(frame_indices) != np.shape(keypoints)[0]:
            raise ValueError(f"{len(frame_indices)} frame indices for "
                             f"{np.shape(keypoints)[0]} frames of keypoints")
        self.append_rows(frame_indices, self.layout.values(keypoints, unique_keypoints,
                                                           self.path))

    def append_rows(self, frame_indices: np.ndarray, values: np.ndarray) -> None:
        """Append rows already laid out: (B,) frame numbers and (B, columns) float64 values."""
        if self._store is None:
            raise RuntimeError(f"{self.path}: writer already closed")
        index = np.asarray(frame_indices, dtype=np.int64)
        values = np.asarray(values, dtype=np.float64)
        df = pd.DataFrame(values, columns=self.columns, index=index)
        # index=False: building the table index once in finish() is much cheaper than per batch.
        store = self._store
        self._guard(lambda: store.append(H5_KEY, df, format="table", index=False), "write")
        self._digest.update(index, values)
        self.n_rows += len(index)

    def finish(self) -> Path:
        """Close the table, flush it to disk and check that it reads back exactly as appended.

        Returns:
            The verified ``.part`` file (not yet under the final name).

        Raises:
            OutputError: a write failed, or rows or values differ from what was appended.
        """
        if self._finished:
            return self.part
        if self._store is None:
            raise RuntimeError(f"{self.path}: writer was aborted")
        store = self._store

        def close() -> None:
            if self.n_rows == 0:
                # An empty result is written too (DLC does), as an empty frame with the columns.
                store.put(H5_KEY, pd.DataFrame(columns=self.columns, dtype=np.float64),
                          format="table")
            else:
                store.create_table_index(H5_KEY)
            store.close()

        self._guard(close, "finish")
        self._store = None
        self._guard(lambda: fsync_file(self.part), "flush")
        self._guard(self._verify, "read back")
        self._finished = True
        return self.part

    def _verify(self) -> None:
        read = _Digest()
        with pd.HDFStore(self.part, mode="r") as store:
            nrows = int(store.get_storer(H5_KEY).nrows or 0)
            if nrows != self.n_rows:
                raise OutputError(f"{self.part} holds {nrows} rows where {self.n_rows} were "
                                  f"written (is the disk full?); nothing was written under "
                                  f"{self.path.name}")
            if nrows:
                for chunk in store.select(H5_KEY, chunksize=READ_BACK_ROWS):
                    read.update(chunk.index.to_numpy(), chunk.to_numpy(dtype=np.float64))
        if nrows and not read.same(self._digest):
            raise OutputError(f"{self.part} does not read back as written: values differ (is "
                              f"the disk full?); nothing was written under {self.path.name}")

    def commit(self) -> Path:
        """:meth:`finish`, then atomically move the table onto the final path."""
        os.replace(self.finish(), self.path)
        return self.path

    def abort(self) -> None:
        """Drop the partial result; the final path (and any previous result there) is untouched."""
        if self._store is not None:
            with contextlib.suppress(Exception):
                self._store.close()
            self._store = None
        with contextlib.suppress(FileNotFoundError):
            self.part.unlink()



def write_csv_from_h5(h5_path: str | os.PathLike[str], csv_path: str | os.PathLike[str],
                      chunksize: int = 10_000) -> Path:
    """Write the DeepLabCut ``.csv`` of a result ``.h5`` to ``csv_path``, in chunks.

    The output is byte-identical to ``pd.read_hdf(h5).to_csv(csv)`` (three header rows then one
    row per frame) without ever holding the whole table in memory. ``csv_path`` is written as
    given: callers publish it (see :mod:`dlc_runtime.results`).
    """
    csv_path = Path(csv_path)
    with pd.HDFStore(h5_path, mode="r") as store:
        nrows = store.get_storer(H5_KEY).nrows or 0
        if nrows == 0:
            store.select(H5_KEY).to_csv(csv_path)
        else:
            with open(csv_path, "w", newline="") as fh:
                for i, chunk in enumerate(store.select(H5_KEY, chunksize=chunksize)):
                    chunk.to_csv(fh, header=(i == 0))
    return csv_path


def write_meta_pickle(path: str | os.PathLike[str], data: dict[str, Any]) -> Path:
    """Write ``{"data": data}`` (DeepLabCut's ``_meta.pickle`` layout) to ``path``."""
    with open(path, "wb") as fh:
        pickle.dump({"data": data}, fh, protocol=pickle.HIGHEST_PROTOCOL)
    return Path(path)


def build_meta(*, start: float, stop: float, scorer: str, fps: float, batch_size: int,
               width: int, height: int, nframes: int, bodyparts: Sequence[str],
               unique_bodyparts: Sequence[str], individuals: Sequence[str],
               pytorch_config: dict[str, Any] | None = None, iteration: int | None = None,
               train_fraction: float | None = None,
               extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``data`` dict of ``_meta.pickle`` with DeepLabCut 3's keys.

    DeepLabCut 3 (``pose_estimation_pytorch/apis/analyze_videos.py``) stores
    ``frame_dimensions`` as ``(w, h)`` and ``cropping_parameters`` as ``[0, w, 0, h]`` when not
    cropping; we match it. (DeepLabCut 2's TensorFlow code stored ``(h, w)``.)
    """
    data: dict[str, Any] = {
        "start": start,
        "stop": stop,
        "run_duration": stop - start,
        "Scorer": scorer,
        "pytorch-config": pytorch_config,
        "fps": fps,
        "batch_size": batch_size,
        "frame_dimensions": (width, height),
        "nframes": nframes,
        # Unknown unless the exporter recorded them in the manifest's `source`.
        "iteration (active-learning)": iteration,
        "training set fraction": train_fraction,
        "cropping": False,
        "cropping_parameters": [0, width, 0, height],
        "bodyparts": list(bodyparts),
        "unique_bodyparts": list(unique_bodyparts),
        "individuals": list(individuals),
    }
    if extra:
        data.update(extra)
    return data


__all__ = ["H5_KEY", "COORDS", "ResultPaths", "make_columns", "RowLayout", "H5Writer",
           "write_csv_from_h5", "write_meta_pickle", "build_meta"]
