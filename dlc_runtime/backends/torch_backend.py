"""PyTorch backend: runs a bundle's torch artifact (TorchScript ``.pt`` or exported ``.pt2``).

For GPUs without TensorRT. The artifact is the same wrapped model as its ONNX graph (uint8 NHWC
frames in, the manifest's outputs out; a top-down bundle's detector and two-input pose graph
alike), saved by ``dlc_export.torch_artifact``; loading it needs torch only, never ``dlc_train`` or
``dlc_export``.

On a CUDA device the backend is a GPU-resident pipeline (``torch_cuda.CudaRunner``): pinned
host buffers in a ring, uploads on a side stream, CUDA graphs, only the outputs copied back, and
:meth:`TorchBackend.submit` returns before the GPU is done so the next batch can be decoded and
uploaded meanwhile. It takes device batches (NVDEC frames) where they lie. On the CPU it runs
the module directly.

torch is imported inside :func:`_import_torch`, i.e. only when this backend is created: importing
``dlc_runtime`` (which registers the factory below) and the onnxruntime / TensorRT paths stay free
of torch (``tests/test_runtime_isolation.py`` checks both; this module and ``torch_cuda.py`` are
the runtime's only files allowed to import torch).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dlc_runtime.backends.base import Backend, PendingOutputs, check_inputs, register_backend
from dlc_runtime.errors import BackendError
from dlc_runtime.frames import Frames, on_device

if TYPE_CHECKING:
    from dlc_runtime.bundle import Bundle

#: Manifest graph names of torch artifacts: ``<graph>_torch_<precision>``, e.g.
#: ``pose_torch_fp32``, ``pose_torch_fp16``; top-down bundles add ``detector_torch_fp32``.
TORCH_GRAPH_INFIX = "_torch_"
TORCH_GRAPH_PREFIX = "pose" + TORCH_GRAPH_INFIX
PRECISIONS = ("fp32", "fp16", "bf16")
#: File suffix of ``torch.export`` programs; anything else is loaded as TorchScript.
EXPORT_SUFFIX = ".pt2"
NO_ARTIFACT_HINT = "this bundle has no torch artifact: re-export with --format torch"


def torch_graph_name(precision: str, graph: str = "pose") -> str:
    """The manifest name of ``graph``'s torch artifact of ``precision`` ("fp32", "fp16" or "bf16")."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    return f"{graph}{TORCH_GRAPH_INFIX}{precision}"


def torch_graphs(bundle: Bundle, graph: str = "pose") -> dict[str, str]:
    """precision -> manifest graph name, for the torch artifacts of ``graph`` in the bundle."""
    prefix = f"{graph}{TORCH_GRAPH_INFIX}"
    return {name[len(prefix):]: name for name in bundle.manifest.graphs
            if name.startswith(prefix)}


def _import_torch() -> Any:
    try:
        import torch
        return torch
    except ImportError as exc:
        raise BackendError("backend 'torch' needs PyTorch, which is not installed here "
                           f"({exc}); install torch or use backend='onnxruntime'") from exc


def _pick_graph(bundle: Bundle, kind: str, precision: str | None, graph: str) -> str:
    """The manifest graph to run for ``graph``.

    ``graph`` is either a torch artifact's own name (``pose_torch_fp16``) or the graph it
    stands for (``pose``, ``detector``); then the artifact of ``precision`` is taken, else the
    best one for the device (fp16 on CUDA, where it is faster; fp32 on CPU, where half is slow).
    A graph with a single artifact (top-down detectors are exported in fp32 only) runs it
    whatever the precision asked: ``precision`` chooses between artifacts, it never converts.
    """
    where = f"{bundle.path}"
    if TORCH_GRAPH_INFIX in graph:
        bundle.graph(graph)  # BundleError naming the graphs the bundle has
        return graph
    available = torch_graphs(bundle, graph)
    if not available:
        raise BackendError(f"{where}: {NO_ARTIFACT_HINT} (graphs: "
                           f"{', '.join(bundle.manifest.graphs)})")
    if len(available) == 1 and graph != "pose":
        return next(iter(available.values()))
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
        input_names: the artifact's inputs in call order, frames first (the top-down pose
            graph's are ``images``, ``boxes``).
        output_names: names of the outputs it returns, in order.
        module: the artifact at ``path`` already loaded (the exporter checks a file it has just
            written and reloaded); None loads it from ``path``.
        cuda_graphs: on CUDA, capture and replay CUDA graphs per batch shape.
        ring: on CUDA, batches whose buffers are kept (upload of one beside compute of another).
        channels_last: on CUDA, run the convolutions channels-last.
    """

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None,
                 label: str = "", input_names: tuple[str, ...] = ("images",),
                 output_names: tuple[str, ...] = ("keypoints",), module: Any = None,
                 cuda_graphs: bool = True, ring: int = 3, channels_last: bool = True) -> None:
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
        self.module = module if module is not None else self._load()
        self.input_names = list(input_names)
        self.output_names = list(output_names)
        self.name = f"torch-{kind}" + (f"-{label}" if label else "")
        self._runner: Any = None
        if kind == "cuda":
            from dlc_runtime.backends.torch_cuda import CudaRunner

            self._runner = CudaRunner(torch, self.module, self.device, self.input_names,
                                      self.output_names, cuda_graphs=cuda_graphs, ring=ring,
                                      channels_last=channels_last)
            self.accepts_device_frames = True

    def _load(self) -> Any:
        torch = self._torch
        try:
            if self.path.suffix == EXPORT_SUFFIX:
                # Exported programs are captured in eval mode and refuse .eval() on the module.
                return torch.export.load(str(self.path)).module().to(self.device)
            with warnings.catch_warnings():
                # torch 2.13 marks TorchScript deprecated; it still loads and runs fine.
                warnings.filterwarnings("ignore", category=DeprecationWarning)
                return torch.jit.load(str(self.path), map_location=self.device).eval()
        except Exception as exc:  # torch raises RuntimeError, pickle errors, zipfile errors...
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BackendError(f"torch cannot load {self.path}: {first}; re-export the bundle "
                               "with --format torch, or check the torch version") from exc

    def run(self, images: Frames, **extra_inputs: np.ndarray) -> dict[str, np.ndarray]:
        return self.submit(images, **extra_inputs).result()

    def submit(self, images: Frames, **extra_inputs: np.ndarray) -> PendingOutputs:
        if self.module is None:
            raise BackendError(f"the torch backend for {self.path} is closed")
        if self._runner is not None:
            feed = _device_feed(self.input_names, images, extra_inputs) if on_device(images) \
                else check_inputs(self.input_names, images, extra_inputs)
            return self._runner.submit(feed)
        return PendingOutputs.ready(self._run_on_cpu(check_inputs(self.input_names, images,
                                                                  extra_inputs)))

    def _run_on_cpu(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            out = self.module(*(torch.from_numpy(feed[name]) for name in self.input_names))
            outputs = out if isinstance(out, (tuple, list)) else (out,)
            if len(outputs) != len(self.output_names):
                raise BackendError(f"{self.path} returned {len(outputs)} outputs, the manifest "
                                   f"lists {self.output_names}; re-export the bundle")
            return {name: (t.to(dtype=torch.float32) if t.is_floating_point() else t).numpy()
                    for name, t in zip(self.output_names, outputs)}

    def close(self) -> None:
        if self._runner is not None:
            self._runner.close()
            self._runner = None
        self.module = None
        if self.device.type == "cuda":
            self._torch.cuda.empty_cache()


def _device_feed(input_names: list[str], images: Frames,
                 extra_inputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """The feed of a device batch: the frames as they are, further inputs checked on the host."""
    host = check_inputs(input_names, np.empty((len(images), 1, 1, 3), np.uint8), extra_inputs)
    return {**host, input_names[0]: images}


@register_backend("torch")
def _make_torch(bundle: Bundle, device: str = "cpu", precision: str | None = None,
                graph: str = "pose", threads: int | None = None, cuda_graphs: bool = True,
                ring: int = 3, channels_last: bool = True) -> TorchBackend:
    """Factory: the torch artifact of ``graph`` (``pose``, ``detector`` or an artifact's own
    manifest name) of ``precision`` (default: best for ``device``); ``cuda_graphs``, ``ring``
    and ``channels_last`` shape the CUDA pipeline (ignored on the CPU)."""
    if precision is not None and precision not in PRECISIONS:
        raise BackendError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    kind = device.partition(":")[0]
    name = _pick_graph(bundle, kind, precision, graph or "pose")
    label = name.partition(TORCH_GRAPH_INFIX)[2] or name
    spec = bundle.graph(name)
    return TorchBackend(bundle.graph_path(name), device=device, threads=threads, label=label,
                        input_names=tuple(t.name for t in spec.inputs) or ("images",),
                        output_names=tuple(t.name for t in spec.outputs) or ("keypoints",),
                        cuda_graphs=cuda_graphs, ring=ring, channels_last=channels_last)
