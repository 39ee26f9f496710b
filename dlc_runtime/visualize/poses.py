"""Reading a DeepLabCut result ``.h5`` for drawing and plotting, in chunks.

A result table has one row per analyzed frame (the index is the frame number) and columns
``(scorer[, individuals], bodyparts, coords)`` with coords ``x, y, likelihood``. Here each
(individual, bodypart) pair is a *point*; :class:`PoseTable` gives its names and reads the
values as float32 arrays of shape (rows, points, 3), a chunk at a time, so a labeled video of
a long recording never holds the whole table.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import numpy as np
import pandas as pd

from dlc_runtime.errors import DLCRuntimeError
from dlc_runtime.outputs import COORDS, H5_KEY

CHUNK_ROWS = 10_000


class VisualizeError(DLCRuntimeError):
    """A result file cannot be drawn or plotted (missing, unreadable, another video's)."""


class PoseTable:
    """An open result ``.h5``: its layout, and its rows in chunks.

    Args:
        path: the ``.h5`` written by ``dlc analyze`` or DeepLabCut.

    Attributes:
        scorer: the scorer level of the columns.
        individuals: one name per point ("" in a single-animal table).
        bodyparts: one name per point.
        multi_animal: the columns have an ``individuals`` level.
        n_rows, first_index, last_index: rows, and the first and last frame numbers.

    Raises:
        VisualizeError: the file is missing, not HDF5, or not a DeepLabCut result table.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise VisualizeError(f"{self.path} does not exist: analyze the video first "
                                 "(dlc analyze BUNDLE VIDEO) or pass the .h5 it wrote")
        try:
            self._store = pd.HDFStore(self.path, mode="r")
        except Exception as err:  # PyTables raises its own types for a file that is not HDF5
            raise VisualizeError(f"{self.path} cannot be read as HDF5 ({_first_line(err)}); "
                                 "pass the .h5 written by dlc analyze or DeepLabCut") from err
        try:
            self._read_layout()
        except BaseException:
            self._store.close()
            raise

    def _read_layout(self) -> None:
        if f"/{H5_KEY}" not in self._store.keys():
            raise VisualizeError(f"{self.path} has no '{H5_KEY}' table: it is not a DeepLabCut "
                                 "result file")
        storer = self._store.get_storer(H5_KEY)
        self._chunked = bool(getattr(storer, "is_table", False))
        head = self._select(0, 1)
        cols = head.columns
        names = list(cols.names)
        if names[-2:] != ["bodyparts", "coords"] or len(cols) % 3 or \
                [tuple(cols.get_level_values("coords")[i:i + 3]) for i in
                 range(0, len(cols), 3)] != [COORDS] * (len(cols) // 3):
            raise VisualizeError(f"{self.path}: columns {names} are not DeepLabCut's (scorer, "
                                 "[individuals,] bodyparts, coords x/y/likelihood)")
        self.scorer = str(cols.get_level_values(0)[0])
        self.multi_animal = "individuals" in names
        self.bodyparts = [str(b) for b in cols.get_level_values("bodyparts")[::3]]
        self.individuals = ([str(i) for i in cols.get_level_values("individuals")[::3]]
                            if self.multi_animal else [""] * len(self.bodyparts))
        # The frame numbers alone (8 bytes a row) tell the span and whether rows are in order.
        try:
            index = (self._store.select_column(H5_KEY, "index") if self._chunked
                     else self._select().index).to_numpy(dtype=np.int64)
        except Exception as err:
            raise VisualizeError(f"{self.path} cannot be read ({_first_line(err)}); the file "
                                 "is damaged, analyze the video again") from err
        if len(index) > 1 and not np.all(np.diff(index) > 0):
            raise VisualizeError(f"{self.path}: the rows are not in increasing frame order; "
                                 "analyze the video again")
        self.n_rows = len(index)
        self.first_index = int(index[0]) if len(index) else -1
        self.last_index = int(index[-1]) if len(index) else -1

    def _select(self, start: int | None = None, stop: int | None = None) -> pd.DataFrame:
        try:
            if self._chunked:
                return self._store.select(H5_KEY, start=start, stop=stop)
            return self._store.get(H5_KEY).iloc[start:stop]  # "fixed" format: read whole
        except VisualizeError:
            raise
        except Exception as err:
            raise VisualizeError(f"{self.path} cannot be read ({_first_line(err)}); the file "
                                 "is damaged, analyze the video again") from err

    @property
    def n_points(self) -> int:
        return len(self.bodyparts)

    @property
    def unique_bodyparts(self) -> list[str]:
        """Bodypart names in column order, each once."""
        return list(dict.fromkeys(self.bodyparts))

    @property
    def unique_individuals(self) -> list[str]:
        return list(dict.fromkeys(self.individuals))

    def chunks(self, chunk_rows: int = CHUNK_ROWS) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(frame_indices (n,), values (n, points, 3) float32)`` in file order."""
        for start in range(0, self.n_rows, chunk_rows):
            df = self._select(start, min(start + chunk_rows, self.n_rows))
            values = df.to_numpy(dtype=np.float32).reshape(len(df), self.n_points, 3)
            yield df.index.to_numpy(dtype=np.int64), values

    def read_all(self, points: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """All rows (of the ``points`` given, default all), read chunk by chunk as float32."""
        index, values = [], []
        for idx, vals in self.chunks():
            index.append(idx)
            values.append(vals if points is None else vals[:, points])
        k = self.n_points if points is None else len(points)
        if not index:
            return np.empty(0, np.int64), np.empty((0, k, 3), np.float32)
        return np.concatenate(index), np.concatenate(values)

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> PoseTable:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class RowCursor:
    """Walks a :class:`PoseTable` in step with a video: :meth:`at` gives frame ``i``'s row
    (points, 3) or None when the table has no row for it. Frames must be asked in increasing
    order (the table's rows are, :class:`PoseTable` checks it)."""

    def __init__(self, table: PoseTable, chunk_rows: int = CHUNK_ROWS) -> None:
        self._chunks = table.chunks(chunk_rows)
        self._index = np.empty(0, np.int64)
        self._values = np.empty((0, table.n_points, 3), np.float32)
        self._pos = 0

    def at(self, frame: int) -> np.ndarray | None:
        while True:
            while self._pos < len(self._index) and self._index[self._pos] < frame:
                self._pos += 1
            if self._pos < len(self._index):
                return self._values[self._pos] if self._index[self._pos] == frame else None
            try:
                self._index, self._values = next(self._chunks)
            except StopIteration:
                return None
            self._pos = 0


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


__all__ = ["VisualizeError", "PoseTable", "RowCursor", "CHUNK_ROWS"]
