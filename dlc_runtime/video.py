"""Threaded video decoding into batches of uint8 RGB frames.

A decode thread reads frames with OpenCV and pushes whole batches into a bounded queue; the
consumer (inference) pulls them. OpenCV releases the GIL while decoding, so decode and inference
overlap, and the bounded queue keeps memory flat whatever the video length.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import cv2
import numpy as np

from dlc_runtime.errors import VideoError

#: mp4/avi frame counts in the container metadata are often off by one or two frames (edit lists,
#: B-frame delay); a shortfall this small is not called truncation.
TRUNCATION_TOLERANCE = 2

_END = object()  # sentinel: the decode thread finished normally

Batch = tuple[np.ndarray, np.ndarray]


class VideoIterator:
    """Iterate over a video in batches ``(frame_indices, frames)``.

    ``frame_indices`` is (B,) int64, ``frames`` is (B, H, W, 3) uint8 RGB.

    Args:
        path: the video file.
        batch_size: frames per batch (the last batch may be smaller).
        prefetch: decoded batches kept ready in the queue (bounds memory).
        start: first frame index to read.
        stop: frame index to stop before (None = end of the video).
        allow_truncated: accept a video that ends before its metadata frame count.

    Use as a context manager (or call :meth:`close`) so the decode thread stops even when the
    consumer breaks out early::

        with VideoIterator("m3v1.mp4", batch_size=16) as video:
            for idx, frames in video:
                ...
    """

    def __init__(self, path: str | os.PathLike[str], batch_size: int = 8, prefetch: int = 4,
                 start: int = 0, stop: int | None = None, allow_truncated: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if prefetch < 1:
            raise ValueError(f"prefetch must be >= 1, got {prefetch}")
        if start < 0 or (stop is not None and stop < start):
            raise ValueError(f"need 0 <= start <= stop, got start={start}, stop={stop}")
        self.path = Path(path)
        self.batch_size = int(batch_size)
        self.prefetch = int(prefetch)
        self.start = int(start)
        self.allow_truncated = allow_truncated
        self.n_decoded = 0  # frames delivered so far (updated by the decode thread)

        if self.path.is_dir():
            raise VideoError(f"{self.path} is a folder, not a video: pass the video files "
                             "(e.g. folder/*.mp4)")
        if not self.path.is_file():
            raise VideoError(f"cannot decode video {self.path}: file does not exist")
        self._cap = cv2.VideoCapture(str(self.path))
        if not self._cap.isOpened():
            self._cap.release()
            raise VideoError(f"cannot decode video {self.path}: OpenCV cannot open it (corrupt, "
                             "truncated or unsupported codec); re-encode it, e.g. "
                             "`ffmpeg -i in.mp4 -c:v libx264 out.mp4`")
        self.fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        # Metadata only: the true count is known once decoding ends (see n_decoded).
        self.n_frames = max(int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0), 0)
        self.stop = stop if stop is None else int(stop)

        if self.start > 0 and self.expected_frames != 0:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, self.start)
            if int(self._cap.get(cv2.CAP_PROP_POS_FRAMES)) != self.start:
                self._cap.release()
                raise VideoError(f"cannot decode video {self.path}: seeking to frame "
                                 f"{self.start} failed; re-encode the video or use start=0")
        # Read the first frame here, in the caller's thread, so that an undecodable video fails
        # at construction with a clear error and width/height come from real pixels.
        self._first: np.ndarray | None = None
        if self.expected_frames != 0:
            ok, frame = self._cap.read()
            if not ok or frame is None:
                self._cap.release()
                raise VideoError(f"cannot decode video {self.path}: the first frame (index "
                                 f"{self.start}) cannot be read; the file is corrupt or the "
                                 "codec is unsupported, re-encode it")
            self._first = frame
            self.height, self.width = int(frame.shape[0]), int(frame.shape[1])
        else:
            self.width = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH))
            self.height = int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT))

        self._queue: queue.Queue[object] = queue.Queue(maxsize=self.prefetch)
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._done = False

    # ----------------------------------------------------------------------------------------
    @property
    def expected_frames(self) -> int | None:
        """Frames this iterator should yield according to the metadata (None if unknown)."""
        if self.n_frames <= 0:
            return None  # no metadata count: read until the decoder says stop, check nothing
        end = self.n_frames if self.stop is None else min(self.stop, self.n_frames)
        return max(end - self.start, 0)

    def __len__(self) -> int:
        """Number of batches according to the metadata."""
        n = self.expected_frames or 0
        return -(-n // self.batch_size)

    def _read_frame(self) -> np.ndarray | None:
        """The next BGR frame, or None at the end. Runs in the decode thread."""
        if self._first is not None:
            frame, self._first = self._first, None
            return frame
        ok, frame = self._cap.read()
        return frame if ok else None

    def _put(self, item: object) -> bool:
        # Short timeouts so that close() is noticed even while the queue is full.
        while not self._stop_event.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _decode_loop(self) -> None:
        try:
            limit = self.stop - self.start if self.stop is not None else None
            index = self.start
            while not self._stop_event.is_set():
                n = self.batch_size if limit is None else min(self.batch_size,
                                                              limit - self.n_decoded)
                if n <= 0:
                    break
                frames = np.empty((n, self.height, self.width, 3), dtype=np.uint8)
                count = 0
                while count < n:
                    frame = self._read_frame()
                    if frame is None:
                        break
                    if frame.shape[:2] != (self.height, self.width):
                        raise VideoError(
                            f"cannot decode video {self.path}: frame {index + count} is "
                            f"{frame.shape[1]}x{frame.shape[0]}, expected "
                            f"{self.width}x{self.height} (variable resolution); re-encode it")
                    # Convert straight into the batch buffer: no per-frame allocation.
                    cv2.cvtColor(frame, cv2.COLOR_BGR2RGB, dst=frames[count])
                    count += 1
                if count:
                    indices = np.arange(index, index + count, dtype=np.int64)
                    if not self._put((indices, frames[:count])):
                        return
                    index += count
                    self.n_decoded += count
                if count < n:
                    break
            self._check_truncation()
            self._put(_END)
        except BaseException as exc:  # re-raised in the consumer
            self._put(exc)
        finally:
            self._cap.release()

    def _check_truncation(self) -> None:
        expected = self.expected_frames
        if self._stop_event.is_set() or expected is None or self.allow_truncated:
            return
        if self.n_decoded < expected - TRUNCATION_TOLERANCE:
            raise VideoError(
                f"video {self.path} is truncated: decoded {self.n_decoded} of {expected} frames; "
                "re-encode or re-copy it, or pass allow_truncated=True to keep the frames read")

    # ----------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Batch]:
        if self._thread is not None:
            raise RuntimeError("a VideoIterator can be iterated only once; create a new one")
        self._thread = threading.Thread(target=self._decode_loop, name=f"decode-{self.path.name}",
                                        daemon=True)
        self._thread.start()
        return self._batches()

    def _batches(self) -> Iterator[Batch]:
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
            if not self._done:
                self.close()

    def close(self) -> None:
        """Stop the decode thread and release the file. Safe to call at any time, twice."""
        self._stop_event.set()
        if self._thread is not None:
            # Drain so a producer blocked on a full queue can see the stop flag and exit.
            while self._thread.is_alive():
                try:
                    self._queue.get(timeout=0.05)
                except queue.Empty:
                    pass
            self._thread.join()
        else:
            self._cap.release()

    def __enter__(self) -> VideoIterator:
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


__all__ = ["VideoIterator", "TRUNCATION_TOLERANCE"]
