"""The errors an export raises; each becomes one line in the CLI."""
from __future__ import annotations


class ExportError(RuntimeError):
    """The model could not be exported, or the export failed a check."""


class ParityError(RuntimeError):
    """An artifact's keypoints are further from PyTorch's than its gate allows."""


class TensorRTBuildError(ExportError):
    """The engine could not be built (TensorRT missing, parser errors, bad profiles...)."""
