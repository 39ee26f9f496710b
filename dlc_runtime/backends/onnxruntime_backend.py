"""ONNX Runtime backend (CPU or CUDA execution provider)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort

from dlc_runtime.backends.base import Backend, check_inputs, register_backend
from dlc_runtime.errors import BackendError

if TYPE_CHECKING:
    from dlc_runtime.bundle import Bundle


def _parse_device(device: str) -> tuple[str, int]:
    kind, _, index = device.partition(":")
    if kind not in ("cpu", "cuda") or (index and not index.isdigit()):
        raise BackendError(f"unknown device {device!r}; use 'cpu', 'cuda' or 'cuda:N'")
    return kind, int(index or 0)


class OnnxRuntimeBackend(Backend):
    """Runs an ONNX graph with onnxruntime.

    Args:
        model_path: the .onnx file.
        device: "cpu", "cuda" or "cuda:N".
        intra_op_threads: threads for one op (None = onnxruntime's default, all cores). Lower it
            when several processes share a machine.
    """

    def __init__(self, model_path: str | os.PathLike[str], device: str = "cpu",
                 intra_op_threads: int | None = None) -> None:
        kind, index = _parse_device(device)
        providers: list[Any]
        if kind == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BackendError(
                    "device 'cuda' asked but onnxruntime has no CUDAExecutionProvider "
                    f"(available: {', '.join(ort.get_available_providers())}); install "
                    "onnxruntime-gpu (pip uninstall onnxruntime; pip install onnxruntime-gpu) "
                    "or use device='cpu'")
            providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if intra_op_threads is not None:
            opts.intra_op_num_threads = int(intra_op_threads)
        try:
            self.session = ort.InferenceSession(str(model_path), sess_options=opts,
                                                providers=providers)
        except Exception as exc:  # onnxruntime raises several unrelated exception types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BackendError(f"onnxruntime cannot load {model_path}: {first}; re-export "
                               "the bundle or check the onnxruntime version") from exc
        if kind == "cuda" and "CUDAExecutionProvider" not in self.session.get_providers():
            # onnxruntime silently falls back to CPU when the CUDA libraries fail to load.
            raise BackendError(
                f"onnxruntime could not enable CUDA for {model_path} (CUDA/cuDNN libraries "
                "missing or mismatched; see the onnxruntime log above); fix the CUDA install "
                "or use device='cpu'")

        # Frames first; further inputs (the top-down pose graph's boxes) are passed by name.
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.input_name = self.input_names[0]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.name = f"onnxruntime-{kind}"
        # TODO(perf): on CUDA, use IO binding (session.io_binding()) with pinned host buffers and
        # device-resident outputs reused across batches, to overlap upload with compute and avoid
        # per-call allocations. Plain run() is correct and is what the CPU path wants anyway.

    def run(self, images: np.ndarray, **extra_inputs: np.ndarray) -> dict[str, np.ndarray]:
        feed = check_inputs(self.input_names, images, extra_inputs)
        outputs = self.session.run(self.output_names, feed)
        return dict(zip(self.output_names, outputs))

    def close(self) -> None:
        # Dropping the session frees its arena (and GPU memory on CUDA).
        self.session = None  # type: ignore[assignment]


@register_backend("onnxruntime")
def _make_onnxruntime(bundle: Bundle, device: str = "cpu", graph: str = "pose",
                      intra_op_threads: int | None = None) -> OnnxRuntimeBackend:
    return OnnxRuntimeBackend(bundle.graph_path(graph), device=device,
                              intra_op_threads=intra_op_threads)
