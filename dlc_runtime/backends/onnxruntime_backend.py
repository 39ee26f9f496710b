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
        cpu_arena: keep onnxruntime's CPU memory arena (faster; False frees activations
            between batches, for many processes on one machine).
    """

    def __init__(self, model_path: str | os.PathLike[str], device: str = "cpu",
                 intra_op_threads: int | None = None, cpu_arena: bool = True) -> None:
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
        # Measured on the CPU (resnet_50, 640x480, batch 8; benchmarks/results/memory_cpu.json):
        # with the arena, memory patterns keep a second copy of the activations (peak RSS +340
        # MiB) for no speed, so they are off; without the arena (cpu_arena=False: activations
        # freed between batches, a few per cent slower) they are what keeps allocation cheap
        # (without both: half the speed).
        opts.enable_cpu_mem_arena = bool(cpu_arena)
        opts.enable_mem_pattern = not cpu_arena
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


#: Precisions of ONNX graphs: every bundle has fp32 graphs; ``dlc export --precision fp16``
#: adds fp16 variants (the network in half, same inputs and outputs).
ONNX_PRECISIONS = ("fp32", "fp16")


def onnx_graph_name(graph: str, precision: str = "fp32") -> str:
    """The manifest name of ``graph``'s ONNX graph of ``precision`` (``pose``,
    ``pose_onnx_fp16``)."""
    if precision not in ONNX_PRECISIONS:
        raise BackendError(f"unknown ONNX precision {precision!r}; use one of "
                           f"{', '.join(ONNX_PRECISIONS)}")
    return graph if precision == "fp32" else f"{graph}_onnx_{precision}"


def _pick_graph(bundle: Bundle, graph: str, precision: str | None) -> str:
    """``graph``'s variant of ``precision``. A graph without one (top-down detectors stay
    fp32) runs its fp32 graph, as long as the bundle has fp16 graphs at all."""
    if precision in (None, "fp32") or "_onnx_" in graph:  # fp32, or a variant's own name
        return graph
    name = onnx_graph_name(graph, precision)
    if name in bundle.manifest.graphs:
        return name
    suffix = onnx_graph_name("", precision)
    if not any(g.endswith(suffix) for g in bundle.manifest.graphs):
        raise BackendError(f"{bundle.path}: no {precision} ONNX graph; re-export with --format "
                           f"onnx --precision {precision}")
    return graph


@register_backend("onnxruntime")
def _make_onnxruntime(bundle: Bundle, device: str = "cpu", graph: str = "pose",
                      intra_op_threads: int | None = None, precision: str | None = None,
                      cpu_arena: bool = True) -> OnnxRuntimeBackend:
    """Factory: ``graph``'s ONNX graph (``precision`` "fp16": its fp16 variant)."""
    name = _pick_graph(bundle, graph, precision)
    backend = OnnxRuntimeBackend(bundle.graph_path(name), device=device,
                                 intra_op_threads=intra_op_threads, cpu_arena=cpu_arena)
    if "_onnx_" in name:  # the results' metadata says which graph ran
        backend.name += f"-{name.rpartition('_onnx_')[2]}"
    return backend
