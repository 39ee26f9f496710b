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


__all__ = ["DLCRuntimeError", "BundleError", "VideoError", "BackendError", "OutputError"]
