"""Threaded video decoding with OpenCV into batches of uint8 RGB frames.

A decode thread (:class:`~dlc_runtime.decode_thread.DecodeThread`) reads frames with OpenCV and
pushes whole batches into a bounded queue; the consumer (inference) pulls them. OpenCV releases
the GIL while decoding, so decode and inference overlap, and the bounded queue keeps memory flat
whatever the video length.

Every ``stride``-th frame is read; the frames between are skipped with ``grab()`` (demuxed and
decoded, but never converted or copied). With ``skip_unreadable`` a frame the decoder cannot
read does not end the video: the iterator reopens the file and seeks past the damage (trying
further and further ahead, then narrowing down to the first frame that reads), and records the
frames it could not read in :attr:`VideoIterator.unreadable`; the consumer sees a gap in the
frame indices. A decoder that conceals damage (garbage pixels, no error) cannot be detected
here, nor can a container that silently drops frames it cannot parse.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from dlc_runtime.decode_thread import TRUNCATION_TOLERANCE, DecodeThread
from dlc_runtime.errors import VideoError

Batch = tuple[np.ndarray, np.ndarray]


class VideoIterator(DecodeThread):
    """Iterate over a video in batches ``(frame_indices, frames)``.

    ``frame_indices`` is (B,) int64, ``frames`` is (B, H, W, 3) uint8 RGB.

    Args:
        path: the video file.
        batch_size: frames per batch (the last batch may be smaller).
        prefetch: decoded batches kept ready in the queue (bounds memory).
        start: first frame index to read.
        stop: frame index to stop before (None = end of the video).
        allow_truncated: accept a video that ends before its metadata frame count.
        stride: read every ``stride``-th frame from ``start`` (indices stay the video's).
        skip_unreadable: go on past frames that cannot be read (module docstring) and never
            call the video truncated; the frames missing are listed in :attr:`unreadable`.
        seek: reach ``start`` by seeking (fast; frame-accurate for well-formed files). False
            reads every frame from the first one (slow, exact whatever the file).

    Attributes:
        unreadable: ``(first, stop)`` ranges of frame indices that could not be read (only with
            ``skip_unreadable``; a short tail within the metadata's usual error is not listed).

    Use as a context manager (or call :meth:`close`) so the decode thread stops even when the
    consumer breaks out early::

        with VideoIterator("m3v1.mp4", batch_size=16) as video:
            for idx, frames in video:
                ...
    """

    def __init__(self, path: str | os.PathLike[str], batch_size: int = 8, prefetch: int = 4,
                 start: int = 0, stop: int | None = None, allow_truncated: bool = False,
                 stride: int = 1, skip_unreadable: bool = False, seek: bool = True) -> None:
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        self._setup(path, batch_size, prefetch, start, stop, allow_truncated)
        self.stride = int(stride)
        self.skip_unreadable = skip_unreadable
        self.unreadable: list[tuple[int, int]] = []
        self._cap = self._open()
        self.fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        # Metadata only: the true count is known once decoding ends (see n_decoded).
        self.n_frames = max(int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0), 0)

        if self.start > 0 and self.expected_frames != 0:
            if seek:
                if not self._seek(self._cap, self.start):
                    self._cap.release()
                    raise VideoError(f"cannot decode video {self.path}: seeking to frame "
                                     f"{self.start} failed; re-encode the video or use start=0")
            else:
                for _ in range(self.start):
                    if not self._cap.grab():
                        break
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

    def _open(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise VideoError(f"cannot decode video {self.path}: OpenCV cannot open it (corrupt, "
                             "truncated or unsupported codec); re-encode it, e.g. "
                             "`ffmpeg -i in.mp4 -c:v libx264 out.mp4`")
        return cap

    @staticmethod
    def _seek(cap: cv2.VideoCapture, index: int) -> bool:
        cap.set(cv2.CAP_PROP_POS_FRAMES, index)
        return int(cap.get(cv2.CAP_PROP_POS_FRAMES)) == index

    # ----------------------------------------------------------------------------------------
    def _read_frame(self) -> np.ndarray | None:
        """The next selected BGR frame, or None where none can be read. Decode thread only."""
        if self._first is not None:
            frame, self._first = self._first, None
            return frame
        for _ in range(self.stride - 1):  # skipped frames are never converted or copied
            if not self._cap.grab():
                return None
        ok, frame = self._cap.read()
        return frame if ok else None

    def _produce(self) -> None:
        end, index = self.end, self.start
        while not self._stop_event.is_set():  # type: ignore[union-attr]
            n = self.batch_size if end is None else min(self.batch_size,
                                                         -(-(end - index) // self.stride))
            if n <= 0:
                return
            frames = np.empty((n, self.height, self.width, 3), dtype=np.uint8)
            indices = np.empty(n, dtype=np.int64)
            count, finished = 0, False
            while count < n:
                frame = self._read_frame()
                if frame is None:
                    index = self._skip_damage(index, end)
                    if index is None or (end is not None and index >= end):
                        finished = True
                        break
                    frame, self._first = self._first, None
                if frame.shape[:2] != (self.height, self.width):
                    raise VideoError(
                        f"cannot decode video {self.path}: frame {index} is "
                        f"{frame.shape[1]}x{frame.shape[0]}, expected "
                        f"{self.width}x{self.height} (variable resolution); re-encode it")
                # Convert straight into the batch buffer: no per-frame allocation.
                cv2.cvtColor(frame, cv2.COLOR_BGR2RGB, dst=frames[count])
                indices[count] = index
                count += 1
                index += self.stride
            if count:
                if not self._put((indices[:count], frames[:count])):
                    return
                self.n_decoded += count
            if finished:
                return

    def _skip_damage(self, index: int, end: int | None) -> int | None:
        """Frame ``index`` cannot be read: the next selected frame that can (the capture then
        stands after it, the frame in ``_first``), or None at the end of the video. Records
        what was skipped in :attr:`unreadable`."""
        if not self.skip_unreadable or end is None or index >= end - TRUNCATION_TOLERANCE:
            return None  # the end (a metadata count a frame or two high is usual)
        # Try 1, 2, 4... selected frames further on, then narrow down between the last failure
        # and the first success: damage is usually one stretch of the file.
        bad, good, step = index, None, 1
        while good is None:
            probe = index + step * self.stride
            if probe >= end:
                break
            if self._try_at(probe):
                good = probe
            else:
                bad, step = probe, step * 2
        if good is not None:
            while good - bad > self.stride:
                middle = bad + (good - bad) // self.stride // 2 * self.stride
                if self._try_at(middle):
                    good = middle
                else:
                    bad = middle
            if not self._try_at(good):  # leave the capture just after `good`
                good = None
        self.unreadable.append((index, end if good is None else good))
        return good

    def _try_at(self, index: int) -> bool:
        """Reopen the file at frame ``index`` and read it into ``_first``."""
        self._cap.release()
        self._cap = cv2.VideoCapture(str(self.path))
        if not self._cap.isOpened() or not self._seek(self._cap, index):
            return False
        ok, frame = self._cap.read()
        self._first = frame if ok and frame is not None else None
        return self._first is not None

    def _check_truncation(self) -> None:
        if not self.skip_unreadable:  # otherwise the missing frames are in `unreadable`
            super()._check_truncation()

    def _thread_exit(self) -> None:
        self._cap.release()

    def _release(self) -> None:
        cap = getattr(self, "_cap", None)
        if cap is not None:
            cap.release()


__all__ = ["VideoIterator", "TRUNCATION_TOLERANCE"]
