"""Checkpoints of an analysis in progress, so that a crash, a ``kill -9`` or Ctrl-C loses at
most the work since the last one.

Beside the results, a video being analyzed has two files:

- ``<video><scorer>_checkpoint.rows``: the result rows, appended batch by batch to a plain
  binary file (per row: the frame index as int64, then the row's float64 values). An append-only
  file can be cut back to any row exactly, which HDF5 cannot promise after a process dies in the
  middle of a write; the ``.h5`` is written from these rows once the video is done, and
  verified as always (:class:`~dlc_runtime.outputs.H5Writer`).
- ``<video><scorer>_checkpoint.json``: written atomically after the rows file is flushed and
  fsynced. It names what the rows belong to (the bundle's manifest sha256; the video's size,
  modification time and the sha256 of its first MiB; the frame selection; backend, device and
  decoder) and how far they go: rows, their digest, the next frame to analyze, the last frame
  decoded and the sha256 of its pixels (a resumed run checks that seeking lands on that very
  frame), unreadable frames, and whether decoding is finished.

A run that finds a checkpoint whose identity matches and whose rows read back with the recorded
digest continues from it (rows past the checkpoint are cut off); otherwise it says why in one
line and starts again. The files are removed once the results are published.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dlc_io import atomic_write_text
from dlc_runtime.bundle import sha256_file
from dlc_runtime.errors import OutputError

STATE_VERSION = 1
#: bytes of the video hashed to recognise it (with its size and modification time).
VIDEO_HEAD_BYTES = 1 << 20
#: rows read at a time when verifying or converting the rows file.
READ_ROWS = 20_000
#: the environment variable of :func:`crash_point` (tests only).
CRASH_ENV = "DLC_RUNTIME_CRASH_AT"

_crash_counts: dict[str, int] = {}


def crash_point(name: str) -> None:
    """A test hook: ``DLC_RUNTIME_CRASH_AT=name`` (or ``name:N``, the N-th time) makes the
    process kill itself with SIGKILL here, as ``kill -9`` would, at a precise point."""
    wanted = os.environ.get(CRASH_ENV)
    if not wanted:
        return
    target, _, nth = wanted.rpartition(":")
    if not nth.isdigit():
        target, nth = wanted, "1"
    if target != name:
        return
    _crash_counts[name] = _crash_counts.get(name, 0) + 1
    if _crash_counts[name] >= int(nth):
        os.kill(os.getpid(), signal.SIGKILL)


def video_identity(path: Path) -> dict[str, Any]:
    """Size, modification time and the sha256 of the first MiB of a video."""
    stat = path.stat()
    with open(path, "rb") as fh:
        head = hashlib.sha256(fh.read(VIDEO_HEAD_BYTES)).hexdigest()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "head_sha256": head}


def identity(manifest: Path, video: Path, selection: dict[str, Any],
             run: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint's rows depend on: resuming with any of it changed would mix rows.

    Args:
        manifest: the bundle's ``manifest.yaml`` (it holds every graph's sha256).
        video: the video file.
        selection: the resolved frame selection (``start``, ``stop``, ``stride``).
        run: backend, device, decoder, backend options and the damaged-frame policy.
    """
    return {"bundle": {"manifest_sha256": sha256_file(manifest)},
            "video": video_identity(video),
            "selection": {k: selection[k] for k in ("start", "stop", "stride")},
            "run": json.loads(json.dumps(run, sort_keys=True, default=str))}


def frame_sha256(frame: np.ndarray) -> str:
    """The sha256 of one decoded frame's pixels (H, W, 3) uint8."""
    return hashlib.sha256(np.ascontiguousarray(frame).tobytes()).hexdigest()


@dataclass(frozen=True)
class Mark:
    """How far the rows file goes. Replaced whole after each batch (one attribute store), so a
    Ctrl-C between two statements never leaves its fields out of step."""

    rows: int
    next_frame: int
    last_decoded: int | None
    digest: Any  # a hashlib object over the rows file's bytes
    unreadable: tuple[tuple[int, int], ...] = ()


@dataclass
class State:
    """A checkpoint as read back."""

    identity: dict[str, Any]
    rows: int
    digest: str
    next_frame: int
    last_decoded: int | None
    last_decoded_sha256: str | None
    unreadable: list[tuple[int, int]]
    done: bool
    info: dict[str, Any] = field(default_factory=dict)


class Checkpoint:
    """The checkpoint of one video's analysis (module docstring).

    Args:
        state_path, rows_path: the two files.
        identity: what the rows belong to (sections ``bundle``, ``video``, ``selection``,
            ``run``, each a dict).
        n_values: float64 values per row.
        every_frames: rows between checkpoints (None: no frame rule).
        every_seconds: seconds between checkpoints (None: no time rule).

    Attributes:
        on_append: called with ``(frame_indices, values)`` of every batch of rows appended,
            so that a consumer (the tracker) sees exactly the rows the checkpoint holds.
    """

    def __init__(self, state_path: Path, rows_path: Path, identity: dict[str, Any],
                 n_values: int, every_frames: int | None = None,
                 every_seconds: float | None = 60.0) -> None:
        if every_frames is not None and every_frames < 1:
            raise ValueError(f"checkpoint_every must be >= 1 frame or None, got {every_frames}")
        if every_seconds is not None and every_seconds <= 0:
            raise ValueError(f"checkpoint_seconds must be > 0 or None, got {every_seconds}")
        self.state_path, self.rows_path = state_path, rows_path
        self.identity = identity
        self.dtype = np.dtype([("index", "<i8"), ("values", "<f8", (n_values,))])
        self.every_frames, self.every_seconds = every_frames, every_seconds
        self.info: dict[str, Any] = {}
        self.mark = Mark(0, 0, None, hashlib.blake2b(digest_size=16))
        self.saved: State | None = None  # the last checkpoint written or resumed from
        self._file: Any = None
        self._resume_digest: Any = None  # the verified rows' digest, set by load()
        self._saved_rows, self._saved_at = 0, time.monotonic()
        self.on_append: Callable[[np.ndarray, np.ndarray], None] | None = None

    # -- reading an earlier one ---------------------------------------------------------------
    def load(self) -> tuple[State | None, str | None]:
        """The checkpoint to resume from, or (None, why not) when there is one that cannot be
        used, or (None, None) when there is none."""
        try:
            data = json.loads(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None, None
        except (OSError, ValueError) as err:
            return None, f"its state file cannot be read ({err})"
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            return None, "it was written by another version of dlc-deploy"
        try:
            state = State(identity=data["identity"], rows=int(data["rows"]),
                          digest=str(data["digest"]), next_frame=int(data["next_frame"]),
                          last_decoded=data["last_decoded"],
                          last_decoded_sha256=data.get("last_decoded_sha256"),
                          unreadable=[(int(a), int(b)) for a, b in data["unreadable"]],
                          done=bool(data["done"]), info=dict(data.get("info") or {}))
        except (KeyError, TypeError, ValueError) as err:
            return None, f"its state file is incomplete ({err!r})"
        if not isinstance(state.identity, dict):
            return None, "its state file is incomplete (no identity)"
        changed = self._changed(state.identity)
        if changed:
            return None, changed
        return self._verify_rows(state)

    def _changed(self, old: dict[str, Any]) -> str | None:
        names = {"bundle": "the bundle", "video": "the video", "selection": "the frame selection",
                 "run": "the backend, device or decoding"}
        for section, what in names.items():
            before, now = old.get(section) or {}, self.identity.get(section) or {}
            keys = [k for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k)]
            if keys:
                diffs = ", ".join(f"{k} {_short(before.get(k))} -> {_short(now.get(k))}"
                                  for k in keys[:3])
                return f"{what} changed since it was made ({diffs})"
        return None

    def _verify_rows(self, state: State) -> tuple[State | None, str | None]:
        need = state.rows * self.dtype.itemsize
        try:
            size = self.rows_path.stat().st_size
        except OSError:
            return None, f"its rows file {self.rows_path.name} is missing"
        if size < need:
            return None, (f"its rows file holds {size // self.dtype.itemsize} of the "
                          f"{state.rows} rows it should")
        digest = hashlib.blake2b(digest_size=16)
        with open(self.rows_path, "rb") as fh:
            left = need
            while left:
                chunk = fh.read(min(left, READ_ROWS * self.dtype.itemsize))
                if not chunk:
                    break
                digest.update(chunk)
                left -= len(chunk)
        if left or digest.hexdigest() != state.digest:
            return None, "its rows file does not read back as checkpointed (damaged)"
        self._resume_digest = digest
        return state, None

    # -- writing ------------------------------------------------------------------------------
    def start(self, state: State | None, first_frame: int) -> None:
        """Open the rows file: continue ``state`` (cut back to its rows) or start afresh."""
        if state is None:
            # Unbuffered: a batch's rows reach the kernel as they are appended, so a killed
            # process loses nothing that was appended (only a power cut loses what was not
            # fsynced at the last checkpoint).
            self._file = _guard(lambda: open(self.rows_path, "wb", buffering=0), self.rows_path,
                                "create")
            self.mark = Mark(0, first_frame, None, hashlib.blake2b(digest_size=16))
            return

        def reopen():
            fh = open(self.rows_path, "r+b", buffering=0)
            fh.truncate(state.rows * self.dtype.itemsize)  # rows written after the checkpoint
            fh.seek(0, os.SEEK_END)
            return fh

        self._file = _guard(reopen, self.rows_path, "reopen")
        self.mark = Mark(state.rows, state.next_frame, state.last_decoded, self._resume_digest,
                         tuple(state.unreadable))
        self.info = dict(state.info)
        self.saved, self._saved_rows = state, state.rows

    def append(self, index: np.ndarray, values: np.ndarray, next_frame: int,
               last_decoded: int | None, unreadable: list[tuple[int, int]] = ()) -> None:
        """Append rows; ``next_frame`` is the frame after them, ``last_decoded`` the last one
        decoded (None: unchanged), ``unreadable`` ranges among them that could not be read."""
        rec = np.empty(len(index), self.dtype)
        rec["index"], rec["values"] = index, values
        data = rec.tobytes()
        mark = self.mark
        digest = mark.digest.copy()
        digest.update(data)
        _guard(lambda: _write_all(self._file, data), self.rows_path, "write")
        if self.on_append is not None:
            self.on_append(rec["index"], rec["values"])
        self.mark = Mark(mark.rows + len(index), next_frame,
                         mark.last_decoded if last_decoded is None else last_decoded, digest,
                         mark.unreadable + tuple(unreadable))
        crash_point("batch")

    def due(self) -> bool:
        """A checkpoint is due (by rows or by time)."""
        if self.every_frames is not None and \
                self.mark.rows - self._saved_rows >= self.every_frames:
            return True
        return self.every_seconds is not None and \
            time.monotonic() - self._saved_at >= self.every_seconds

    def save(self, frame_sha: Callable[[int], str | None] | None = None,
             done: bool = False) -> State:
        """Flush and fsync the rows file, then write the state file atomically.

        Args:
            frame_sha: the sha256 of a decoded frame's pixels by index (None when unknown).
            done: decoding is finished (a rerun goes straight to writing the results).
        """
        mark = self.mark
        sha = frame_sha(mark.last_decoded) if frame_sha and mark.last_decoded is not None \
            else None
        if self._file is not None:
            _guard(self._file.flush, self.rows_path, "write")
            _guard(lambda: os.fsync(self._file.fileno()), self.rows_path, "flush")
        state = State(self.identity, mark.rows, mark.digest.hexdigest(), mark.next_frame,
                      mark.last_decoded, sha, list(mark.unreadable), done, dict(self.info))
        body = {"version": STATE_VERSION, "identity": state.identity, "rows": state.rows,
                "row_bytes": self.dtype.itemsize, "digest": state.digest,
                "next_frame": state.next_frame, "last_decoded": state.last_decoded,
                "last_decoded_sha256": state.last_decoded_sha256,
                "unreadable": [list(r) for r in state.unreadable], "done": done,
                "info": state.info, "saved": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        text = json.dumps(body, indent=1, default=str) + "\n"
        _guard(lambda: atomic_write_text(self.state_path, text), self.state_path, "write")
        self.saved, self._saved_rows, self._saved_at = state, mark.rows, time.monotonic()
        crash_point("checkpoint")
        return state

    def rows(self, keep_open: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The checkpointed rows, in chunks ``(frame_indices, values)``; raises OutputError when
        the file no longer matches the digest. The rows file is closed for writing first
        unless ``keep_open`` (a resumed run reading its rows before appending more)."""
        state = self.saved
        assert state is not None, "save() or start() a checkpoint before reading it"
        if not keep_open:
            self.close()
        digest = hashlib.blake2b(digest_size=16)
        left = state.rows
        with open(self.rows_path, "rb") as fh:
            while left:
                chunk = fh.read(min(left, READ_ROWS) * self.dtype.itemsize)
                n = len(chunk) // self.dtype.itemsize
                if n == 0:
                    break
                digest.update(chunk[: n * self.dtype.itemsize])
                rec = np.frombuffer(chunk, self.dtype, count=n)
                yield rec["index"].copy(), rec["values"].copy()
                left -= n
        if left or digest.hexdigest() != state.digest:
            raise OutputError(f"{self.rows_path} changed on disk while the results were being "
                              "written from it (damaged disk?); nothing was written under the "
                              "final names: run the analysis again")

    def close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None

    @staticmethod
    def drop_published(state_path: Path, rows_path: Path, published_digest: str | None) -> None:
        """Remove a checkpoint whose rows were published (the run ended between the completion
        record, which keeps their digest, and the clean-up), and rows left without a state.
        Another checkpoint (an ``overwrite`` run that stopped) is kept for the next such run."""
        try:
            digest = json.loads(state_path.read_text(encoding="utf-8")).get("digest")
        except FileNotFoundError:
            digest = None
        except (OSError, ValueError, AttributeError):
            return  # not ours to judge: leave it to the run that resumes or drops it
        if digest is not None and digest != published_digest:
            return
        for path in (state_path, rows_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def discard(self) -> None:
        """Remove both files (the state first: rows without a state are ignored)."""
        self.close()
        for path in (self.state_path, self.rows_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _write_all(fh: Any, data: bytes) -> None:
    view = memoryview(data)
    while view:  # an unbuffered write may take part of the data
        view = view[fh.write(view):]


def _short(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text[:12] + "..." if len(text) > 15 and isinstance(value, str) else text


def _guard(action: Callable[[], Any], path: Path, doing: str) -> Any:
    try:
        return action()
    except OSError as err:
        advice = "; free some space and run the same command again: it resumes from the " \
            "last checkpoint" if err.errno == errno.ENOSPC else ""
        raise OutputError(f"cannot {doing} the checkpoint {path.name} in {path.parent}: "
                          f"{err.strerror or err}; nothing was written under the final "
                          f"names{advice}") from err


__all__ = ["Checkpoint", "State", "Mark", "crash_point", "video_identity", "frame_sha256",
           "CRASH_ENV", "STATE_VERSION"]
