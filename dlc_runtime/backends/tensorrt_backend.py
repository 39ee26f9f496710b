"""TensorRT backend: runs a bundle's prebuilt engine (``pose.engine``) on an NVIDIA GPU.

Importing this module needs neither TensorRT nor cuda-python: both are imported when a backend is
made, so ``import dlc_runtime`` stays light on machines without a GPU.

An engine only runs on the TensorRT version and GPU architecture it was built for. The exporter
records a fingerprint per engine in the manifest (``engines``); :func:`check_engine_fingerprint`
compares it with this machine *before* deserializing, so a mismatch is one line that says what to
rebuild instead of TensorRT's own log (or, for some versions, a crash).

Device memory goes through cuda-python (``cuda.bindings.runtime``, or ``cuda.cudart`` before
cuda-python 12.6): device buffers sized for the largest batch seen and reused, pinned host
buffers so the uint8 upload and the small keypoint download run asynchronously on one stream.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dlc_runtime.backends.base import Backend, check_inputs, register_backend
from dlc_runtime.errors import BackendError

if TYPE_CHECKING:
    from dlc_runtime.bundle import Bundle

log = logging.getLogger(__name__)

TENSORRT_MISSING = ("TensorRT is not installed: pip install tensorrt (needs an NVIDIA GPU) or "
                    "use the onnxruntime backend")
CUDA_PYTHON_MISSING = ("cuda-python is not installed: pip install cuda-python (or "
                       "pip install 'dlc-deploy[gpu]'); the TensorRT backend needs it for GPU "
                       "memory")
REBUILD_HINT = "rebuild with `dlc export --format tensorrt`"


# ----------------------------------------------------------------------------------------------
# Lazy imports
# ----------------------------------------------------------------------------------------------


def import_tensorrt(message: str = TENSORRT_MISSING) -> Any:
    """The ``tensorrt`` module, or :class:`BackendError` with ``message`` when it is absent."""
    try:
        import tensorrt
    except ImportError:  # also the PyPI placeholder package, which raises on import
        raise BackendError(message) from None
    return tensorrt


def cuda_runtime() -> Any:
    """cuda-python's runtime API module (new and old import paths)."""
    try:
        from cuda.bindings import runtime  # cuda-python >= 12.6
        return runtime
    except ImportError:
        pass
    try:
        from cuda import cudart  # cuda-python < 12.6
        return cudart
    except ImportError:
        raise BackendError(CUDA_PYTHON_MISSING) from None


def cuda_call(result: Any, what: str = "CUDA call") -> Any:
    """Unpacks cuda-python's ``(err, *values)`` tuples; raises :class:`BackendError` on error."""
    if not isinstance(result, tuple):
        result = (result,)
    err, values = result[0], result[1:]
    if int(err) != 0:
        rt = cuda_runtime()
        try:
            text = rt.cudaGetErrorString(err)[1].decode()
        except Exception:  # the error string is best effort, the code is what matters
            text = str(err)
        raise BackendError(f"{what} failed: {text} ({getattr(err, 'name', err)}); check the "
                           "NVIDIA driver with nvidia-smi")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


# ----------------------------------------------------------------------------------------------
# Fingerprints (pure functions, tested without a GPU)
# ----------------------------------------------------------------------------------------------


def _version_tuple(version: Any) -> tuple[int, ...]:
    parts = []
    for piece in str(version).split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def sm_name(compute_capability: Any) -> str:
    """``"8.6"`` -> ``"sm_86"`` (how CUDA names an architecture)."""
    major, _, minor = str(compute_capability).partition(".")
    return f"sm_{major}{minor or 0}"


def describe(fp: dict[str, Any]) -> str:
    """``NVIDIA A100 (sm_80) with TensorRT 10.0.1``."""
    return (f"{fp.get('gpu_name', 'an unknown GPU')} ({sm_name(fp.get('compute_capability'))}) "
            f"with TensorRT {fp.get('tensorrt_version', '?')}")


def check_engine_fingerprint(entry: dict[str, Any], machine: dict[str, Any]) -> list[str]:
    """Refuses an engine that cannot run here; returns warnings for one that runs sub-optimally.

    TensorRT deserializes a plan only with the TensorRT version that built it and only on the
    same GPU architecture (compute capability). A different GPU *model* of the same architecture
    (A100 40 GB vs 80 GB) loads and runs correctly, with tactics tuned for the other card:
    TensorRT itself only warns, so we warn too rather than refusing a working engine.

    Args:
        entry: one item of the manifest's ``engines`` list.
        machine: :func:`machine_fingerprint` of this machine (``tensorrt_version``, ``gpu_name``,
            ``compute_capability``).

    Raises:
        BackendError: one line naming what the engine was built for, what this machine has and
            how to rebuild.
    """
    name = entry.get("file", "engine")
    missing = [k for k in ("tensorrt_version", "compute_capability") if not entry.get(k)]
    if missing:
        raise BackendError(f"engine {name}: the manifest entry has no {', '.join(missing)}; "
                           f"{REBUILD_HINT}")
    problems = []
    if _version_tuple(entry["tensorrt_version"]) != _version_tuple(machine.get("tensorrt_version")):
        problems.append("TensorRT version")
    if str(entry["compute_capability"]) != str(machine.get("compute_capability")):
        problems.append("GPU architecture")
    if problems:
        raise BackendError(f"engine {name} was built for {describe(entry)}; this machine has "
                           f"{describe(machine)} (different {' and '.join(problems)}): "
                           f"{REBUILD_HINT}")
    warnings = []
    if entry.get("gpu_name") and entry.get("gpu_name") != machine.get("gpu_name"):
        warnings.append(f"engine {name} was tuned on {entry['gpu_name']}, this GPU is "
                        f"{machine.get('gpu_name')} (same {sm_name(entry['compute_capability'])}"
                        f"): it runs, possibly slower; {REBUILD_HINT} for the best speed")
    return warnings


def select_engine(entries: Sequence[dict[str, Any]], machine: dict[str, Any],
                  graph: str = "pose") -> tuple[dict[str, Any], list[str]]:
    """The first engine of ``graph`` whose fingerprint matches ``machine`` (and its warnings).

    A bundle may carry engines for several GPUs; the error, when none fits, lists them all.
    """
    candidates = [e for e in entries if e.get("graph", "pose") == graph]
    if not candidates:
        raise BackendError(f"the bundle has no TensorRT engine for graph '{graph}': "
                           f"{REBUILD_HINT}")
    errors = []
    for entry in candidates:
        try:
            return entry, check_engine_fingerprint(entry, machine)
        except BackendError as err:
            errors.append(str(err))
    if len(errors) == 1:
        raise BackendError(errors[0])
    built = "; ".join(f"{e.get('file')}: {describe(e)}" for e in candidates)
    raise BackendError(f"none of the bundle's {len(candidates)} engines fits this machine "
                       f"({describe(machine)}); built for {built}: {REBUILD_HINT}")


def profile_for(entry: dict[str, Any], shape: Sequence[int]) -> int | None:
    """Index of the first optimization profile of ``entry`` that accepts input ``shape``."""
    for index, profile in enumerate(entry.get("profiles") or []):
        lo, hi = profile.get("min"), profile.get("max")
        if lo is None or hi is None or len(lo) != len(shape):
            continue
        if all(int(a) <= int(s) <= int(b) for a, s, b in zip(lo, shape, hi)):
            return index
    return None


# ----------------------------------------------------------------------------------------------
# Machine queries (need cuda-python and TensorRT)
# ----------------------------------------------------------------------------------------------


def _parse_device(device: str) -> int:
    kind, _, index = device.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise BackendError(f"the tensorrt backend runs on an NVIDIA GPU: device must be 'cuda' "
                           f"or 'cuda:N', got {device!r} (use the onnxruntime backend for CPU)")
    return int(index or 0)


def machine_fingerprint(device_index: int = 0) -> dict[str, Any]:
    """TensorRT version, GPU name, compute capability and driver version of this machine."""
    trt = import_tensorrt()
    rt = cuda_runtime()
    count = cuda_call(rt.cudaGetDeviceCount(), "listing CUDA devices")
    if device_index >= count:
        raise BackendError(f"CUDA device {device_index} asked, this machine has {count}")
    props = cuda_call(rt.cudaGetDeviceProperties(device_index), "reading GPU properties")
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else props.name
    driver = cuda_call(rt.cudaDriverGetVersion(), "reading the driver version")
    return {
        "tensorrt_version": trt.__version__,
        "gpu_name": str(name).strip("\x00 "),
        "compute_capability": f"{props.major}.{props.minor}",
        "cuda_driver": f"{driver // 1000}.{(driver % 1000) // 10}",
    }


# ----------------------------------------------------------------------------------------------
# Memory
# ----------------------------------------------------------------------------------------------


class DeviceBuffer:
    """cudaMalloc'ed bytes that grow (never shrink) to the largest request."""

    def __init__(self) -> None:
        self.ptr = 0
        self.nbytes = 0

    def ensure(self, nbytes: int) -> int:
        if nbytes > self.nbytes:
            self.free()
            rt = cuda_runtime()
            self.ptr = int(cuda_call(rt.cudaMalloc(max(nbytes, 1)), "cudaMalloc"))
            self.nbytes = nbytes
        return self.ptr

    def free(self) -> None:
        if self.ptr:
            cuda_call(cuda_runtime().cudaFree(self.ptr), "cudaFree")
        self.ptr, self.nbytes = 0, 0


class PinnedBuffer(DeviceBuffer):
    """Page-locked host memory (cudaMallocHost): asynchronous copies need it, and it is faster."""

    def ensure(self, nbytes: int) -> int:
        if nbytes > self.nbytes:
            self.free()
            rt = cuda_runtime()
            self.ptr = int(cuda_call(rt.cudaMallocHost(max(nbytes, 1)), "cudaMallocHost"))
            self.nbytes = nbytes
        return self.ptr

    def view(self, shape: Sequence[int], dtype: np.dtype) -> np.ndarray:
        """A numpy array over the first bytes of the buffer (no copy)."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        self.ensure(nbytes)
        raw = (ctypes.c_uint8 * max(nbytes, 1)).from_address(self.ptr)
        return np.frombuffer(raw, dtype=np.uint8, count=nbytes).view(dtype).reshape(shape)

    def free(self) -> None:
        if self.ptr:
            cuda_call(cuda_runtime().cudaFreeHost(self.ptr), "cudaFreeHost")
        self.ptr, self.nbytes = 0, 0


# ----------------------------------------------------------------------------------------------
# Backend
# ----------------------------------------------------------------------------------------------


@dataclass
class _Tensor:
    name: str
    dtype: np.dtype
    is_input: bool
    index: int  # binding index (TensorRT < 8.5 API)


class TensorRTBackend(Backend):
    """Runs one TensorRT engine: uint8 frames plus, for a top-down ``pose.engine``, the
    further inputs (``boxes``) by name.

    Args:
        engine_path: the serialized engine (``pose.engine``, ``detector.engine``).
        entry: its manifest entry (fingerprint, profiles, sha256); checked before loading.
        device: "cuda" or "cuda:N".
        machine: this machine's fingerprint (default: queried); tests pass one in.
    """

    #: ``engine`` names one graph's file: a sibling for another graph picks its own.
    graph_options = ("graph", "engine")

    def __init__(self, engine_path: str | os.PathLike[str], entry: dict[str, Any],
                 device: str = "cuda", machine: dict[str, Any] | None = None) -> None:
        index = _parse_device(device)
        trt = import_tensorrt()
        rt = cuda_runtime()
        machine = machine or machine_fingerprint(index)
        for warning in check_engine_fingerprint(entry, machine):
            log.warning(warning)
        engine_path = Path(engine_path)
        if not engine_path.is_file():
            raise BackendError(f"engine file {engine_path} is missing; copy the whole bundle "
                               f"folder or {REBUILD_HINT}")
        data = engine_path.read_bytes()
        if hashlib.sha256(data).hexdigest() != entry.get("sha256"):
            raise BackendError(f"{engine_path}: sha256 does not match the manifest (corrupt or "
                               f"replaced); re-copy the bundle or {REBUILD_HINT}")

        cuda_call(rt.cudaSetDevice(index), f"selecting CUDA device {index}")
        self._logger = trt.Logger(trt.Logger.WARNING)
        # RoiAlign (top-down crops) imports as a plugin; engines using it need the library.
        trt.init_libnvinfer_plugins(self._logger, "")
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise BackendError(f"TensorRT {trt.__version__} could not load {engine_path} "
                               f"(see its log above); {REBUILD_HINT}")
        self.context = self.engine.create_execution_context()
        self.stream = cuda_call(rt.cudaStreamCreate(), "cudaStreamCreate")
        self.entry = entry
        self.name = "tensorrt"
        self._trt = trt
        # TensorRT 8.5 introduced the name-based API (set_input_shape / execute_async_v3);
        # 8.0-8.4 only have binding indices and execute_async_v2.
        self._v3 = hasattr(self.context, "execute_async_v3")
        self.tensors = self._list_tensors()
        inputs = [t for t in self.tensors if t.is_input]
        frames = [t for t in inputs if t.dtype == np.uint8]
        if len(frames) != 1:
            raise BackendError(f"{engine_path}: expected one uint8 frames input, found inputs "
                               f"{[(t.name, str(t.dtype)) for t in inputs]}; {REBUILD_HINT}")
        self.input = frames[0]
        # Frames first, then the further inputs (top-down pose engines take boxes), by name.
        self.inputs = [self.input, *(t for t in inputs if t is not self.input)]
        self.input_names = [t.name for t in self.inputs]
        self.outputs = [t for t in self.tensors if not t.is_input]
        self.output_names = [t.name for t in self.outputs]
        self._device = {t.name: DeviceBuffer() for t in self.tensors}
        self._host = {t.name: PinnedBuffer() for t in self.tensors}
        self.max_batch = max((int(p["max"][0]) for p in entry.get("profiles") or []
                              if p.get("max")), default=None)

    def _list_tensors(self) -> list[_Tensor]:
        trt, engine = self._trt, self.engine
        tensors = []
        if self._v3:
            for i in range(engine.num_io_tensors):
                name = engine.get_tensor_name(i)
                tensors.append(_Tensor(
                    name, np.dtype(trt.nptype(engine.get_tensor_dtype(name))),
                    engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT, i))
        else:
            for i in range(engine.num_bindings):
                tensors.append(_Tensor(engine.get_binding_name(i),
                                       np.dtype(trt.nptype(engine.get_binding_dtype(i))),
                                       engine.binding_is_input(i), i))
        return tensors

    def run(self, images: np.ndarray, **extra_inputs: np.ndarray) -> dict[str, np.ndarray]:
        feed = check_inputs(self.input_names, images, extra_inputs)
        step = self.max_batch or len(images)
        # A batch larger than the engine's profile is run in chunks rather than refused: the
        # pipeline's batch size is a throughput knob, the profile a build-time limit.
        chunks = [self._run({name: np.ascontiguousarray(a[i:i + step])
                             for name, a in feed.items()})
                  for i in range(0, len(images), step)]
        if len(chunks) == 1:
            return chunks[0]
        return {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}

    def _run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rt = cuda_runtime()
        shape = tuple(feed[self.input.name].shape)
        if self.entry.get("profiles") and profile_for(self.entry, shape) is None:
            ranges = ", ".join(f"{p['min']} to {p['max']}" for p in self.entry["profiles"])
            raise BackendError(f"frames {shape} are outside the engine's profile(s) ({ranges}); "
                               "rebuild with `dlc export --format tensorrt` for this frame size")
        # The engine's own dtypes (boxes are float32), whatever the caller's arrays are.
        feed = {t.name: np.ascontiguousarray(feed[t.name], dtype=t.dtype) for t in self.inputs}
        for t in self.inputs:
            in_shape = tuple(feed[t.name].shape)
            ok = self.context.set_input_shape(t.name, in_shape) if self._v3 else \
                self.context.set_binding_shape(t.index, in_shape)
            if ok is False:
                raise BackendError(f"TensorRT refused shape {in_shape} for input '{t.name}' of "
                                   f"this engine; {REBUILD_HINT} for this frame size")
        if self._v3:
            out_shapes = {t.name: tuple(self.context.get_tensor_shape(t.name))
                          for t in self.outputs}
        else:
            out_shapes = {t.name: tuple(self.context.get_binding_shape(t.index))
                          for t in self.outputs}
        kind_h2d = rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        kind_d2h = rt.cudaMemcpyKind.cudaMemcpyDeviceToHost

        addresses = {}
        for t in self.inputs:
            data = feed[t.name]
            host_in = self._host[t.name].view(data.shape, t.dtype)
            np.copyto(host_in, data)
            addresses[t.name] = self._device[t.name].ensure(data.nbytes)
            cuda_call(rt.cudaMemcpyAsync(addresses[t.name], host_in.ctypes.data, data.nbytes,
                                         kind_h2d, self.stream), f"upload of {t.name}")
        for t in self.outputs:
            nbytes = int(np.prod(out_shapes[t.name])) * t.dtype.itemsize
            addresses[t.name] = self._device[t.name].ensure(nbytes)
        if self._v3:
            for name, ptr in addresses.items():
                self.context.set_tensor_address(name, ptr)
            ok = self.context.execute_async_v3(int(self.stream))
        else:
            bindings = [0] * len(self.tensors)
            for t in self.tensors:
                bindings[t.index] = addresses[t.name]
            ok = self.context.execute_async_v2(bindings, int(self.stream))
        if not ok:
            raise BackendError("TensorRT execution failed (see its log above)")
        results = {}
        for t in self.outputs:
            host = self._host[t.name].view(out_shapes[t.name], t.dtype)
            cuda_call(rt.cudaMemcpyAsync(host.ctypes.data, addresses[t.name], host.nbytes,
                                         kind_d2h, self.stream), "download")
            results[t.name] = host
        cuda_call(rt.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        # Copies: the pinned buffers are reused by the next batch.
        return {name: np.array(arr) for name, arr in results.items()}

    def close(self) -> None:
        if getattr(self, "context", None) is None:
            return
        for buffer in (*self._device.values(), *self._host.values()):
            buffer.free()
        cuda_call(cuda_runtime().cudaStreamDestroy(self.stream), "cudaStreamDestroy")
        self.context = None
        self.engine = None


@register_backend("tensorrt")
def _make_tensorrt(bundle: Bundle, device: str = "cuda", graph: str = "pose",
                   engine: str | None = None,
                   machine: dict[str, Any] | None = None) -> TensorRTBackend:
    """The engine of ``graph`` that fits this machine (or the one named by ``engine``)."""
    entries = list(bundle.manifest.engines)
    if engine is not None:
        entries = [e for e in entries if e.get("file") == engine]
        if not entries:
            raise BackendError(f"the bundle's manifest lists no engine {engine!r}; "
                               f"{REBUILD_HINT}")
    if not [e for e in entries if e.get("graph", "pose") == graph]:
        # Say this before asking for TensorRT: it is true on every machine.
        raise BackendError(f"the bundle {bundle.path} has no TensorRT engine for graph "
                           f"'{graph}': {REBUILD_HINT}")
    index = _parse_device(device)
    machine = machine or machine_fingerprint(index)
    entry, _ = select_engine(entries, machine, graph)
    file = Path(str(entry.get("file", "")))
    if file.is_absolute() or ".." in file.parts or not file.name:
        raise BackendError(f"engine file {entry.get('file')!r} must be a path inside the "
                           f"bundle; {REBUILD_HINT}")
    return TensorRTBackend(bundle.path / file, entry, device=device, machine=machine)


__all__ = ["TENSORRT_MISSING", "CUDA_PYTHON_MISSING", "TensorRTBackend",
           "check_engine_fingerprint", "select_engine", "profile_for", "machine_fingerprint",
           "import_tensorrt", "cuda_runtime", "cuda_call", "describe", "sm_name",
           "DeviceBuffer", "PinnedBuffer"]
