"""What :func:`~dlc_runtime.analyze.analyze_video` returns: the files and what happened."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from dlc_runtime.tracking.video_tracker import TrackingOutputs


@dataclass
class AnalysisResult:
    """What :func:`analyze_video` produced. Usable as a path (``os.fspath`` gives the .h5).

    Attributes:
        h5_path: the result ``.h5``.
        n_frames: rows written (or in the complete result found when skipped).
        seconds: wall time of decode + inference in this call (0 when skipped).
        fps: frames analyzed per second in this call (0 when skipped).
        skipped: True when a complete earlier result was kept (``overwrite=False``).
        csv_path, meta_path: the other files, when they exist.
        added: outputs a skipped video's result lacked and got now (".csv", "_meta.pickle").
        video: the video analyzed.
        replaced_unrecorded: an ``.h5`` without a completion record was there and was replaced.
        resumed_from: the frame this call resumed at (None: it did not resume).
        unreadable: rows of frames that could not be read (NaN rows).
        tracking: the tracking files, when tracking was asked for (None otherwise, and when
            the tracks of a skipped video were already up to date).
    """

    h5_path: Path
    n_frames: int
    seconds: float
    fps: float
    skipped: bool = False
    csv_path: Path | None = None
    meta_path: Path | None = None
    added: list[str] = field(default_factory=list)
    video: Path | None = None
    replaced_unrecorded: bool = False
    resumed_from: int | None = None
    unreadable: int = 0
    tracking: TrackingOutputs | None = None

    @property
    def tracks_h5(self) -> Path | None:
        """The stitched ``_el.h5`` (``_bx``, ``_sk``), when one was written."""
        return self.tracking.tracks_h5 if self.tracking is not None else None

    def __fspath__(self) -> str:
        return os.fspath(self.h5_path)

    def summary(self) -> str:
        """One line for the terminal (two with tracking)."""
        line = self._analysis_line()
        return line if self.tracking is None else f"{line}\n  {self.tracking.summary()}"

    def _analysis_line(self) -> str:
        if not self.skipped:
            notes = []
            if self.resumed_from is not None and self.seconds == 0:
                notes.append("decoded before: results written from the finished checkpoint")
            elif self.resumed_from is not None:
                notes.append(f"resumed at frame {self.resumed_from}")
            if self.unreadable:
                notes.append(f"{self.unreadable} frames could not be read: NaN rows, listed in "
                             "_meta.pickle")
            if self.replaced_unrecorded:
                notes.append("replaced an earlier .h5 that had no completion record")
            note = f" ({'; '.join(notes)})" if notes else ""
            return (f"{self.video}: {self.n_frames} frames at {self.fps:.1f} frames/s -> "
                    f"{self.h5_path}{note}")
        if self.added:
            return (f"{self.video}: already analyzed ({self.n_frames} frames); wrote the missing "
                    f"{' and '.join(self.added)} from the finished .h5 -> {self.h5_path}")
        return (f"{self.video}: skipped, already analyzed ({self.n_frames} frames) -> "
                f"{self.h5_path} (overwrite=True analyzes it again)")
