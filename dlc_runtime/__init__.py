"""dlc_runtime: run exported DeepLabCut-style pose bundles on video.

Lean by design: numpy, OpenCV, onnxruntime, pandas/PyTables, PyYAML and tqdm only. It never
imports torch, dlc_train or dlc_export (a test enforces it), so it installs and starts fast on
analysis machines.
"""

from dlc_runtime.analyze import AnalysisResult, analyze_video
from dlc_runtime.backends import Backend, OnnxRuntimeBackend, make_backend, register_backend
from dlc_runtime.bundle import (SCHEMA_VERSION, BatchRange, Bundle, GraphSpec, InputSpec,
                                Manifest, TensorSpec, sha256_file, write_manifest)
from dlc_runtime.errors import BackendError, BundleError, DLCRuntimeError, VideoError
from dlc_runtime.video import VideoIterator

__all__ = [
    "AnalysisResult", "analyze_video",
    "Backend", "OnnxRuntimeBackend", "make_backend", "register_backend",
    "SCHEMA_VERSION", "BatchRange", "Bundle", "GraphSpec", "InputSpec", "Manifest", "TensorSpec",
    "sha256_file", "write_manifest",
    "DLCRuntimeError", "BundleError", "VideoError", "BackendError",
    "VideoIterator",
]
