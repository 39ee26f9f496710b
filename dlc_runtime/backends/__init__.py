"""Inference backends. Add one by writing a module with a ``@register_backend("name")`` factory
and importing it below (as the TensorRT, torch and OpenVINO backends are)."""

from dlc_runtime.backends.base import BACKENDS, Backend, make_backend, register_backend
from dlc_runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from dlc_runtime.backends import openvino_backend  # noqa: F401  (openvino imported on use)
from dlc_runtime.backends import tensorrt_backend  # noqa: F401  (tensorrt imported on use)
from dlc_runtime.backends import torch_backend  # noqa: F401  (torch imported on use only)

__all__ = ["BACKENDS", "Backend", "OnnxRuntimeBackend", "make_backend", "register_backend"]
