"""The decode thread shared by the video iterators: batches pushed into a bounded queue.

A subclass decodes in :meth:`DecodeThread._produce` (run in a daemon thread) and hands each batch
``(frame_indices, frames)`` to :meth:`DecodeThread._put`; the consumer iterates over the
iterator. The bounded queue keeps memory flat whatever the video length, and decoding overlaps
the consumer's work. This base owns what every iterator must get right the same way: stopping
the thread when the consumer leaves early (short queue timeouts, draining on close), handing a
decode error to the consumer, iterating once, and the truncation check.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from dlc_runtime.errors import VideoError

#: mp4/avi frame counts in the container metadata are often off by one or two frames (edit lists,
#: B-frame delay); a shortfall this small is not called truncation.
TRUNCATION_TOLERANCE = 2

_END = object()  # sentinel: the decode thread finished normally


class DecodeThread:
    """Base of the threaded video iterators (see the module docstring).

    Subclasses call :meth:`_setup` first in ``__init__``, set ``n_frames`` (the container's
    count, 0 when unknown), and implement :meth:`_produce`; :meth:`_release` frees the decoder.

    Attributes:
        path, batch_size, prefetch, start, stop, stride, allow_truncated: as given.
        n_decoded: frames delivered so far (updated by the decode thread).
        n_frames: the container's frame count (metadata only; 0 when unknown).
    """

    #: the decode thread's name prefix (tests look threads up by it).
    thread_prefix = "decode"
    n_frames = 0
    stride = 1
    _thread: threading.Thread | None = None
    _stop_event: threading.Event | None = None
    _queue: queue.Queue[object] | None = None

    def _setup(self, path: str | os.PathLike[str], batch_size: int, prefetch: int, start: int,
               stop: int | None, allow_truncated: bool) -> None:
        """Check and keep the common arguments; refuse a folder or a missing file."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if prefetch < 1:
            raise ValueError(f"prefetch must be >= 1, got {prefetch}")
        if start < 0 or (stop is not None and stop < start):
            raise ValueError(f"need 0 <= start <= stop, got start={start}, stop={stop}")
        self.path = Path(path)
        self.batch_size, self.prefetch = int(batch_size), int(prefetch)
        self.start = int(start)
        self.stop = stop if stop is None else int(stop)
        self.allow_truncated = allow_truncated
        self.n_decoded = 0
        self._done = False
        self._queue = queue.Queue(maxsize=self.prefetch)
        self._stop_event = threading.Event()
        if self.path.is_dir():
            raise VideoError(f"{self.path} is a folder, not a video: pass the video files "
                             "(e.g. folder/*.mp4)")
        if not self.path.is_file():
            raise VideoError(f"cannot decode video {self.path}: file does not exist")

    # ----------------------------------------------------------------------------------------
    @property
    def end(self) -> int | None:
        """The frame index to stop before, from ``stop`` and the metadata (None if unknown)."""
        if self.n_frames <= 0:
            return self.stop
        return self.n_frames if self.stop is None else min(self.stop, self.n_frames)

    @property
    def expected_frames(self) -> int | None:
        """Frames this iterator should yield according to the metadata (None if unknown)."""
        if self.n_frames <= 0:
            return None  # no metadata count: read until the decoder says stop, check nothing
        span = max(self.end - self.start, 0)  # type: ignore[operator]
        return -(-span // self.stride)

    def __len__(self) -> int:
        """Number of batches according to the metadata."""
        n = self.expected_frames or 0
        return -(-n // self.batch_size)

    # ----------------------------------------------------------------------------------------
    def _produce(self) -> None:
        """Decode and :meth:`_put` every batch; return at the end of the video, or as soon as
        :meth:`_put` returns False (the consumer closed the iterator)."""
        raise NotImplementedError

    def _release(self) -> None:
        """Free the decoder (called by :meth:`close`, once the thread has ended)."""

    def _thread_exit(self) -> None:
        """Called in the decode thread as it ends, whatever the reason."""

    def _put(self, item: object) -> bool:
        # Short timeouts so that close() is noticed even while the queue is full.
        assert self._queue is not None and self._stop_event is not None
        while not self._stop_event.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            self._produce()
            self._check_truncation()
            self._put(_END)
        except BaseException as exc:  # re-raised in the consumer
            self._put(exc)
        finally:
            self._thread_exit()

    def _check_truncation(self) -> None:
        expected = self.expected_frames
        if self._stop_event.is_set() or expected is None or self.allow_truncated:  # type: ignore
            return
        if self.n_decoded < expected - TRUNCATION_TOLERANCE:
            raise VideoError(
                f"video {self.path} is truncated: decoded {self.n_decoded} of {expected} frames; "
                "re-encode or re-copy it, or pass allow_truncated=True to keep the frames read")

    # ----------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        if self._thread is not None:
            raise RuntimeError(f"a {type(self).__name__} can be iterated only once; create a "
                               "new one")
        self._check_iterable()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"{self.thread_prefix}-{self.path.name}")
        self._thread.start()
        return self._batches()

    def _check_iterable(self) -> None:
        """Raise when this iterator cannot start decoding (e.g. already closed)."""

    def _batches(self) -> Iterator[tuple[Any, Any]]:
        assert self._queue is not None
        try:
            while True:
                item = self._queue.get()
                if item is _END:
                    self._done = True
                    return
                if isinstance(item, BaseException):
                    self._done = True
                    raise item
                yield item  # type: ignore[misc]
        finally:
            # Also at the normal end: the decoder is released here, in the consumer's thread,
            # not left to interpreter shutdown (where OpenCV's FFmpeg threads abort the
            # process: "terminate called without an active exception").
            self.close()

    def close(self) -> None:
        """Stop the decode thread and release the decoder. Safe to call at any time, twice
        (also on an iterator whose ``__init__`` failed part-way)."""
        if self._stop_event is not None:
            self._stop_event.set()
        if self._thread is not None:
            # Drain so a producer blocked on a full queue can see the stop flag and exit.
            while self._thread.is_alive():
                try:
                    self._queue.get(timeout=0.05)  # type: ignore[union-attr]
                except queue.Empty:
                    pass
            self._thread.join()
        self._release()

    def __enter__(self) -> DecodeThread:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        # Last resort; explicit close()/with is the supported way.
        try:
            self.close()
        except Exception:
            pass


__all__ = ["DecodeThread", "TRUNCATION_TOLERANCE"]
