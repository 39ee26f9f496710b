"""ONNX Runtime backend: the CPU, CUDA or TensorRT execution provider.

On a GPU (CUDA or TensorRT execution provider) batches run through IOBinding by default
(:mod:`dlc_runtime.backends.onnxruntime_binding`): device buffers reused across batches, device
batches bound by pointer. The provider asked for is checked against the one the session runs:
onnxruntime falls back to the CPU with a warning only when a GPU provider's libraries fail to load,
and a video analysed on the CPU by mistake is hours lost.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort

from dlc_runtime.backends.base import Backend, check_inputs, register_backend
from dlc_runtime.backends.onnxruntime_binding import BoundSession
from dlc_runtime.errors import BackendError
from dlc_runtime.frames import Frames, check_device_frames, frame_count, on_device

if TYPE_CHECKING:
    from dlc_runtime.bundle import Bundle

#: ``provider`` option -> onnxruntime's execution provider name.
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
             "tensorrt": "TensorrtExecutionProvider"}

#: what to install (or do) when a provider is missing, or present but failing to load.
_INSTALL = {
    "cuda": ("install onnxruntime-gpu (pip uninstall onnxruntime; pip install onnxruntime-gpu) "
             "or use device='cpu'"),
    "tensorrt": ("install onnxruntime-gpu (pip uninstall onnxruntime; pip install "
                 "onnxruntime-gpu) and TensorRT (pip install tensorrt), or drop "
                 "provider='tensorrt' to use CUDA"),
}
_FIX_LOAD = {
    "cuda": ("CUDA/cuDNN libraries missing or mismatched; install the CUDA and cuDNN versions "
             "onnxruntime-gpu {version} was built for, or use device='cpu'"),
    "tensorrt": ("TensorRT libraries missing or mismatched; install the TensorRT version "
                 "onnxruntime-gpu {version} was built for (pip install tensorrt), or drop "
                 "provider='tensorrt' to use CUDA"),
}


def _parse_device(device: str) -> tuple[str, int]:
    kind, _, index = device.partition(":")
    if kind not in ("cpu", "cuda") or (index and not index.isdigit()):
        raise BackendError(f"unknown device {device!r}; use 'cpu', 'cuda' or 'cuda:N'")
    return kind, int(index or 0)


def _pick_provider(kind: str, provider: str | None) -> str:
    """The ``provider`` key for ``device`` kind ``kind`` (None: the device's own)."""
    if provider is None:
        return kind
    if provider not in PROVIDERS:
        raise BackendError(f"unknown onnxruntime provider {provider!r}; use one of "
                           f"{', '.join(PROVIDERS)}")
    if (provider == "cpu") != (kind == "cpu"):
        raise BackendError(f"provider {provider!r} does not run on device {kind!r}; use "
                           + ("device='cpu'" if provider == "cpu" else "device='cuda'"))
    return provider


def user_cache_dir() -> Path:
    """This user's cache folder: %LOCALAPPDATA% on Windows, else $XDG_CACHE_HOME or ~/.cache."""
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


def tensorrt_cache_dir(graph_sha256: str, root: str | os.PathLike[str] | None = None) -> Path:
    """Where the TensorRT execution provider keeps the engines it builds for one graph file.

    onnxruntime names cached engines after the model's file name and graph structure, not its
    weights, so each graph gets a folder named after its sha256: another bundle of the same
    architecture, or a re-exported one, never loads a stale engine.
    The cache stays outside the bundle (which may be read-only, shared, or copied to another
    GPU, where the engines would not load).

    Args:
        graph_sha256: the graph file's sha256.
        root: the cache root (default: ``<user cache>/dlc-deploy/onnxruntime-tensorrt``).
    """
    root = Path(root) if root is not None else (user_cache_dir() / "dlc-deploy"
                                                / "onnxruntime-tensorrt")
    return root / graph_sha256[:16]


def _ort_version() -> tuple[int, int]:
    major, minor = (ort.__version__.split(".") + ["0"])[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def _providers(provider: str, index: int, trt_fp16: bool,
               trt_cache: Path | None) -> list[Any]:
    """The ``providers`` list for ``InferenceSession``: the asked provider first."""
    cuda_options: dict[str, Any] = {"device_id": index}
    if _ort_version() >= (1, 18):  # older CUDA providers refuse the option as unknown
        # No TF32 in the convolutions: fp32 gives what the CPU gives (the fp16 graphs are the
        # fast mode), as the TensorRT builder's fp32 engines do.
        cuda_options["use_tf32"] = "0"
    cuda = ("CUDAExecutionProvider", cuda_options)
    if provider == "cpu":
        return ["CPUExecutionProvider"]
    if provider == "cuda":
        return [cuda, "CPUExecutionProvider"]
    # onnxruntime parses the TensorRT provider's booleans from the strings "True" / "False".
    trt = {"device_id": index, "trt_fp16_enable": str(bool(trt_fp16)),
           "trt_engine_cache_enable": "True", "trt_engine_cache_path": str(trt_cache)}
    return [("TensorrtExecutionProvider", trt), cuda, "CPUExecutionProvider"]


class OnnxRuntimeBackend(Backend):
    """Runs an ONNX graph with onnxruntime.

    Args:
        model_path: the .onnx file.
        device: "cpu", "cuda" or "cuda:N".
        intra_op_threads: threads for one op (None = onnxruntime's default, all cores). Lower it
            when several processes share a machine.
        cpu_arena: keep onnxruntime's CPU memory arena (the default: faster, and the lower
            peak in a whole analysis). False frees activations between batches, but glibc
            keeps the freed pages in the process, so a full analysis peaks higher
            (benchmarks/results/memory_cpu_2026-12-04.json).
        provider: "cpu", "cuda" or "tensorrt" (TensorRT execution provider, on a "cuda"
            device, with CUDA then CPU behind it for the nodes TensorRT does not take); None:
            the device's own. The session must run it first, else :class:`BackendError`.
        io_binding: run through IOBinding with reusable buffers on the session's device; None:
            on for the CUDA and TensorRT providers, off on the CPU (no device to copy to;
            True there runs the same code with host buffers).
        trt_fp16: let TensorRT build fp16 kernels (TensorRT provider only).
        trt_cache_dir: the TensorRT provider's engine cache root (default: the user's cache,
            see :func:`tensorrt_cache_dir`); the graph's sha256 names its folder inside.
        graph_sha256: the graph file's sha256 when known (the bundle manifest's); else the file
            is hashed when the TensorRT provider needs it.
    """

    def __init__(self, model_path: str | os.PathLike[str], device: str = "cpu",
                 intra_op_threads: int | None = None, cpu_arena: bool = True,
                 provider: str | None = None, io_binding: bool | None = None,
                 trt_fp16: bool = False, trt_cache_dir: str | os.PathLike[str] | None = None,
                 graph_sha256: str | None = None) -> None:
        kind, index = _parse_device(device)
        provider = _pick_provider(kind, provider)
        asked = PROVIDERS[provider]
        available = ort.get_available_providers()
        if asked not in available:
            raise BackendError(
                f"device {device!r} with provider {provider!r} asked but onnxruntime "
                f"{ort.__version__} has no {asked} (available: {', '.join(available)}); "
                f"{_INSTALL[provider]}")
        trt_cache = None
        if provider == "tensorrt":
            if graph_sha256 is None:
                from dlc_runtime.bundle import sha256_file

                graph_sha256 = sha256_file(model_path)
            trt_cache = tensorrt_cache_dir(graph_sha256, trt_cache_dir)
            try:
                trt_cache.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise BackendError(f"cannot create the TensorRT engine cache folder {trt_cache} "
                                   f"({exc.strerror or exc}); pass trt_cache_dir= a writable "
                                   "folder") from None
        providers = _providers(provider, index, trt_fp16, trt_cache)

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # With the arena, memory patterns keep a second plan of the activations for no speed,
        # so they are off; without the arena they are what keeps allocation cheap (without
        # both: half the speed). Figures: benchmarks/results/memory_cpu*.json.
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
        running = list(self.session.get_providers())
        if not running or running[0] != asked:
            # onnxruntime falls back to the next provider, with a warning only, when a GPU
            # provider's libraries fail to load.
            fix = _FIX_LOAD.get(provider, "reinstall onnxruntime").format(
                version=ort.__version__)
            raise BackendError(
                f"onnxruntime was asked for {asked} on {device} but runs "
                f"{', '.join(running) or 'nothing'} for {model_path} (see the onnxruntime log "
                f"above): {fix}")

        # Frames first; further inputs (the top-down pose graph's boxes) are passed by name.
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.input_name = self.input_names[0]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.name = f"onnxruntime-{provider}"
        self.provider = provider
        if io_binding is None:
            io_binding = kind == "cuda"
        self.binding: BoundSession | None = (
            BoundSession(self.session, kind, index) if io_binding else None)
        # Device batches are bound where they lie only by a GPU session's IOBinding; any other
        # session gets a host copy (check_inputs).
        self.accepts_device_frames = kind == "cuda" and self.binding is not None

    def run(self, images: Frames, **extra_inputs: np.ndarray) -> dict[str, np.ndarray]:
        if self.binding is None:
            feed = check_inputs(self.input_names, images, extra_inputs)
            outputs = self.session.run(self.output_names, feed)
            return dict(zip(self.output_names, outputs))
        if self.accepts_device_frames and on_device(images):
            check_device_frames(images)
            # The further inputs are checked as beside host frames; a one-pixel placeholder
            # of the batch's length stands in for the frames, which stay on the device.
            placeholder = np.empty((frame_count(images), 1, 1, 3), np.uint8)
            feed: dict[str, Any] = check_inputs(self.input_names, placeholder, extra_inputs)
            feed[self.input_name] = images
        else:
            feed = check_inputs(self.input_names, images, extra_inputs)
        return self.binding.run(feed)

    def close(self) -> None:
        # Dropping the session (and the binding's buffers) frees its arena and GPU memory.
        self.binding = None
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
                      cpu_arena: bool = True, provider: str | None = None,
                      io_binding: bool | None = None,
                      trt_cache_dir: str | os.PathLike[str] | None = None
                      ) -> OnnxRuntimeBackend:
    """Factory: ``graph``'s ONNX graph (``precision`` "fp16": its fp16 variant, which the
    TensorRT provider builds with fp16 kernels). Options: see :class:`OnnxRuntimeBackend`."""
    name = _pick_graph(bundle, graph, precision)
    spec = bundle.manifest.graphs.get(name)
    # TensorRT builds fp16 kernels for the fp16 graphs only: a graph without a half network
    # (top-down detectors) stays fp32, as it does on every other backend.
    backend = OnnxRuntimeBackend(bundle.graph_path(name), device=device,
                                 intra_op_threads=intra_op_threads, cpu_arena=cpu_arena,
                                 provider=provider, io_binding=io_binding,
                                 trt_fp16=name.endswith("_onnx_fp16"),
                                 trt_cache_dir=trt_cache_dir,
                                 graph_sha256=spec.sha256 if spec is not None else None)
    if "_onnx_" in name:  # the results' metadata says which graph ran
        backend.name += f"-{name.rpartition('_onnx_')[2]}"
    return backend
