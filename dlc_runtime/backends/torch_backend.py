"""PyTorch backend: runs a bundle's torch artifact (TorchScript ``.pt`` or exported ``.pt2``).

For GPUs without TensorRT. The artifact is the same wrapped model as ``pose.onnx`` (uint8 NHWC
frames in, keypoints out), saved by ``dlc_export.torch_export``; loading it needs torch only, never
``dlc_train`` or ``dlc_export``.

torch is imported inside :func:`_import_torch`, i.e. only when this backend is created: importing
``dlc_runtime`` (which registers the factory below) and the onnxruntime / TensorRT paths stay free
of torch (``tests/test_runtime_isolation.py`` checks both; this module is the one file of the
runtime allowed to import torch).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dlc_runtime.backends.base import Backend, register_backend
from dlc_runtime.errors import BackendError

if TYPE_CHECKING:
    from dlc_runtime.bundle import Bundle

#: Manifest graph names of torch artifacts: ``pose_torch_fp32``, ``pose_torch_fp16``.
TORCH_GRAPH_PREFIX = "pose_torch_"
PRECISIONS = ("fp32", "fp16")
#: File suffix of ``torch.export`` programs; anything else is loaded as TorchScript.
EXPORT_SUFFIX = ".pt2"
NO_ARTIFACT_HINT = "this bundle has no torch artifact: re-export with --format torch"


def torch_graph_name(precision: str) -> str:
    """The manifest graph name of the torch artifact of ``precision`` ("fp32" or "fp16")."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    return f"{TORCH_GRAPH_PREFIX}{precision}"


def torch_graphs(bundle: Bundle) -> dict[str, str]:
    """precision -> graph name, for the torch artifacts the bundle's manifest lists."""
    return {name[len(TORCH_GRAPH_PREFIX):]: name for name in bundle.manifest.graphs
            if name.startswith(TORCH_GRAPH_PREFIX)}


def _import_torch() -> Any:
    try:
        import torch
        return torch
    except ImportError as exc:
        raise BackendError("backend 'torch' needs PyTorch, which is not installed here "
                           f"({exc}); install torch or use backend='onnxruntime'") from exc


def _pick_graph(bundle: Bundle, kind: str, precision: str | None, graph: str | None) -> str:
    """The graph to run: ``graph`` if given, else the artifact of ``precision``, else the best
    one for the device (fp16 on CUDA, where it is faster; fp32 on CPU, where half is slow)."""
    where = f"{bundle.path}"
    available = torch_graphs(bundle)
    if graph is not None:
        bundle.graph(graph)  # BundleError naming the graphs the bundle has
        return graph
    if not available:
        raise BackendError(f"{where}: {NO_ARTIFACT_HINT} (graphs: "
                           f"{', '.join(bundle.manifest.graphs)})")
    if precision is not None:
        if precision not in available:
            raise BackendError(
                f"{where}: no {precision} torch artifact (has: {', '.join(sorted(available))}); "
                f"re-export with --format torch --precision {precision} or pass one of those")
        return available[precision]
    order = ("fp16", "fp32") if kind == "cuda" else ("fp32", "fp16")
    return next(available[p] for p in (*order, *sorted(available)) if p in available)


class TorchBackend(Backend):
    """Runs a TorchScript or ``torch.export`` artifact under ``torch.inference_mode``.

    Args:
        path: the artifact (``.pt`` TorchScript or ``.pt2`` exported program).
        device: "cpu", "cuda" or "cuda:N".
        threads: torch intra-op threads (process-wide setting; None leaves it alone).
        label: precision recorded in :attr:`name` (e.g. "fp16").
    """

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None,
                 label: str = "") -> None:
        torch = self._torch = _import_torch()
        kind, _, index = device.partition(":")
        if kind not in ("cpu", "cuda") or (index and not index.isdigit()):
            raise BackendError(f"unknown device {device!r}; use 'cpu', 'cuda' or 'cuda:N'")
        if kind == "cuda" and not torch.cuda.is_available():
            raise BackendError("device 'cuda' asked but this torch sees no CUDA GPU (CPU-only "
                               "build or no driver); install a CUDA build of torch or use "
                               "device='cpu'")
        if threads is not None:
            torch.set_num_threads(int(threads))
        self.device = torch.device(device)
        self.path = Path(path)
        try:
            if self.path.suffix == EXPORT_SUFFIX:
                # Exported programs are captured in eval mode and refuse .eval() on the module.
                module = torch.export.load(str(self.path)).module().to(self.device)
            else:
                with warnings.catch_warnings():
                    # torch 2.13 marks TorchScript deprecated; it still loads and runs fine.
                    warnings.filterwarnings("ignore", category=DeprecationWarning)
                    module = torch.jit.load(str(self.path), map_location=self.device).eval()
        except Exception as exc:  # torch raises RuntimeError, pickle errors, zipfile errors...
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BackendError(f"torch cannot load {self.path}: {first}; re-export the bundle "
                               "with --format torch, or check the torch version") from exc
        self.module = module
        self.name = f"torch-{kind}" + (f"-{label}" if label else "")
        # One pinned host buffer reused across batches of the same shape: pinning per call
        # would cost a page-locked allocation each time. Reuse is safe because run() blocks on
        # the device-to-host copy of the outputs, so the upload has finished before we return.
        self._pinned: Any = None

    def _to_device(self, images: np.ndarray) -> Any:
        torch = self._torch
        host = torch.from_numpy(images)
        if self.device.type != "cuda":
            return host
        if self._pinned is None or tuple(self._pinned.shape) != images.shape:
            self._pinned = torch.empty(images.shape, dtype=torch.uint8, pin_memory=True)
        self._pinned.copy_(host)
        return self._pinned.to(self.device, non_blocking=True)

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise BackendError(f"backend expects uint8 (B, H, W, 3) frames, got "
                               f"{images.dtype} {images.shape}")
        images = np.ascontiguousarray(images)
        with self._torch.inference_mode():
            keypoints = self.module(self._to_device(images))
            # .cpu() synchronises with the stream, so the pinned buffer is free again after it.
            out = keypoints.to(dtype=self._torch.float32).cpu().numpy()
        return {"keypoints": out}

    def close(self) -> None:
        self.module = None
        self._pinned = None
        if self.device.type == "cuda":
            self._torch.cuda.empty_cache()


@register_backend("torch")
def _make_torch(bundle: Bundle, device: str = "cpu", precision: str | None = None,
                graph: str | None = None, threads: int | None = None) -> TorchBackend:
    """Factory: the bundle's torch artifact of ``precision`` (default: best for ``device``)."""
    if precision is not None and precision not in PRECISIONS:
        raise BackendError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    kind = device.partition(":")[0]
    name = _pick_graph(bundle, kind, precision, graph)
    label = name[len(TORCH_GRAPH_PREFIX):] if name.startswith(TORCH_GRAPH_PREFIX) else name
    return TorchBackend(bundle.graph_path(name), device=device, threads=threads, label=label)
