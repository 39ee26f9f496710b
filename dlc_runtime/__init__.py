"""dlc_runtime: run exported DeepLabCut-style pose bundles on video.

Lean by design: numpy, OpenCV, onnxruntime, pandas/PyTables, PyYAML and tqdm only. It never
imports torch, dlc_train or dlc_export (a test enforces it), so it installs and starts fast on
analysis machines.
"""

from dlc_runtime.analysis_result import AnalysisResult
from dlc_runtime.analyze import analyze_video
from dlc_runtime.backends import Backend, OnnxRuntimeBackend, make_backend, register_backend
from dlc_runtime.bundle import (SCHEMA_VERSION, BatchRange, Bundle, GraphSpec, InputSpec,
                                Manifest, TensorSpec, sha256_file, write_manifest)
from dlc_runtime.errors import (AnalysisInterrupted, BackendError, BundleError, DLCRuntimeError,
                                SelectionError, VideoError)
from dlc_runtime.video import VideoIterator
from dlc_runtime import deeplabcut_api  # noqa: F401  DeepLabCut 3's inference API names

__all__ = [
    "AnalysisResult", "analyze_video",
    "Backend", "OnnxRuntimeBackend", "make_backend", "register_backend",
    "SCHEMA_VERSION", "BatchRange", "Bundle", "GraphSpec", "InputSpec", "Manifest", "TensorSpec",
    "sha256_file", "write_manifest",
    "DLCRuntimeError", "BundleError", "VideoError", "BackendError", "AnalysisInterrupted",
    "SelectionError",
    "VideoIterator",
]
