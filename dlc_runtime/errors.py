"""Exceptions raised by the runtime.

Messages are one line and say what file, what is wrong and what to do, because they end up in the
terminal of someone analysing a video, not in a debugger.
"""

from __future__ import annotations


class DLCRuntimeError(Exception):
    """Base class of every error the runtime raises on purpose."""


class BundleError(DLCRuntimeError):
    """The bundle (manifest, graphs, engines) is missing, invalid or unsupported."""


class VideoError(DLCRuntimeError):
    """A video cannot be opened, decoded, or ends before its announced length."""


class BackendError(DLCRuntimeError):
    """An inference backend cannot be created (unknown name, device unavailable, bad graph)."""


class OutputError(DLCRuntimeError):
    """A result file could not be written, or does not read back as written (full disk)."""


class SelectionError(DLCRuntimeError, ValueError):
    """``start`` / ``stop`` / ``stride`` are malformed or select no frame of the video."""


class TrackingError(DLCRuntimeError, ValueError):
    """Tracking options are malformed, or the tracklets cannot be stitched into animals."""


class AnalysisInterrupted(DLCRuntimeError):
    """The analysis was stopped (Ctrl-C) after saving a checkpoint; the same call resumes it.

    Attributes:
        video: the video being analyzed.
        frame: the first frame the resumed run will analyze.
        checkpoint: the checkpoint's state file.
    """

    def __init__(self, message: str, video: object = None, frame: int | None = None,
                 checkpoint: object = None) -> None:
        super().__init__(message)
        self.video, self.frame, self.checkpoint = video, frame, checkpoint


__all__ = ["DLCRuntimeError", "BundleError", "VideoError", "BackendError", "OutputError",
           "SelectionError", "TrackingError", "AnalysisInterrupted"]
