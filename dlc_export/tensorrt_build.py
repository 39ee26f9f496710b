"""Build a TensorRT engine from a bundle's ``pose.onnx`` and record its fingerprint.

TensorRT is imported lazily: this module imports on machines without it, and asking for an
engine there fails with one line that says what to install. The profiles an engine is built for
and its fingerprint come from ``dlc_export.tensorrt_profiles`` (pure, no TensorRT).

Written against the TensorRT Python API of 8.5 to 10.x:
- ``builder.create_network``: TensorRT 10 only has explicit batch (the EXPLICIT_BATCH flag is
  deprecated and ignored); 8.x needs the flag.
- ``config.set_memory_pool_limit(WORKSPACE, ...)`` (8.4+) instead of ``max_workspace_size``.
- ``builder.build_serialized_network`` (``build_engine`` is gone in 10).
- INT8 uses implicit quantization with an ``IInt8EntropyCalibrator2`` fed with real frames; it
  is deprecated from TensorRT 10.1 in favour of explicit Q/DQ graphs, but still builds.
- TensorRT 11 removed weak typing (the FP16/INT8 builder flags and calibrators; networks are
  strongly typed): there only fp32 builds from our fp32 graphs; fp16/int8 say so in one line.

Typical use (what ``dlc export --format tensorrt`` runs)::

    entry = export_tensorrt(bundle_dir, precision="fp16", frame_size=(480, 640))
    add_engine_to_bundle(bundle_dir, entry)
"""
from __future__ import annotations

import datetime as _dt
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from dlc_export.errors import ExportError
from dlc_export.tensorrt_ops import check_tensorrt_operators
from dlc_export.tensorrt_profiles import (ProfileError, default_profiles, engine_fingerprint,
                                          normalize_profiles)
from dlc_io import atomic_write_bytes
from dlc_runtime.bundle import Bundle, sha256_file, write_manifest
from dlc_runtime.errors import BackendError

log = logging.getLogger(__name__)

TENSORRT_MISSING = ('TensorRT is not installed: pip install "tensorrt>=8.5,<11" '
                    "(needs an NVIDIA GPU) or use --format onnx")
PRECISIONS = ("fp32", "fp16", "int8")
ENGINE_NAME = "pose.engine"


class TensorRTBuildError(ExportError):
    """The engine could not be built (TensorRT missing, parser errors, bad profiles...)."""


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or :class:`TensorRTBuildError` with the install hint."""
    try:
        import tensorrt
    except ImportError:  # also the placeholder wheel PyPI serves without the NVIDIA index
        raise TensorRTBuildError(TENSORRT_MISSING) from None
    return tensorrt


@contextmanager
def _as_build_error() -> Iterator[None]:
    """Bad profiles (:mod:`dlc_export.tensorrt_profiles`) and the runtime's CUDA/machine errors
    leave this module as :class:`TensorRTBuildError`, with the same one-line message."""
    try:
        yield
    except (ProfileError, BackendError) as err:
        raise TensorRTBuildError(str(err)) from None


# ----------------------------------------------------------------------------------------------
# Calibration
# ----------------------------------------------------------------------------------------------


def calibration_frames_from_videos(videos: Sequence[str | os.PathLike[str]],
                                   count: int = 64) -> np.ndarray:
    """``count`` frames spread over ``videos`` (all the same size), for INT8 calibration."""
    from dlc_export.frames import frames_from_video

    if not videos:
        raise TensorRTBuildError("int8 calibration needs at least one video")
    per_video = max(1, -(-count // len(videos)))
    frames = [frames_from_video(v, per_video) for v in videos]
    sizes = {f.shape[1:3] for f in frames}
    if len(sizes) > 1:
        raise TensorRTBuildError(f"calibration videos differ in frame size {sorted(sizes)}; "
                                 "calibrate with videos of one size")
    return np.concatenate(frames)[:count]


def _make_calibrator(trt: Any, frames: np.ndarray, batch_size: int, input_name: str,
                     cache_path: Path | None,
                     extra: dict[str, np.ndarray] | None = None) -> Any:
    """An IInt8EntropyCalibrator2 over uint8 frames (and the graph's further inputs, e.g.
    boxes, one row per frame), uploaded with cuda-python."""
    from dlc_runtime.backends.tensorrt_backend import DeviceBuffer, cuda_call, cuda_runtime

    rt = cuda_runtime()

    class FrameCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.inputs = {input_name: np.ascontiguousarray(frames),
                           **{k: np.ascontiguousarray(v) for k, v in (extra or {}).items()}}
            self.batch_size = batch_size
            self.position = 0
            self.buffers = {name: DeviceBuffer() for name in self.inputs}
            for name, data in self.inputs.items():
                self.buffers[name].ensure(data[:batch_size].nbytes)

        def get_batch_size(self) -> int:
            return self.batch_size

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self.position + self.batch_size > len(self.inputs[input_name]):
                return None  # TensorRT's signal that calibration data is exhausted
            for name, data in self.inputs.items():
                batch = data[self.position:self.position + self.batch_size]
                cuda_call(rt.cudaMemcpy(self.buffers[name].ptr, batch.ctypes.data, batch.nbytes,
                                        rt.cudaMemcpyKind.cudaMemcpyHostToDevice), "upload")
            self.position += self.batch_size
            return [self.buffers[n].ptr if n in self.buffers else 0 for n in names]

        def read_calibration_cache(self) -> bytes | None:
            if cache_path is not None and cache_path.is_file():
                return cache_path.read_bytes()
            return None

        def write_calibration_cache(self, cache: Any) -> None:
            if cache_path is not None:
                atomic_write_bytes(cache_path, bytes(cache))

        def __del__(self) -> None:
            try:
                for buffer in self.buffers.values():
                    buffer.free()
            except Exception:  # interpreter shutdown: the driver frees it anyway
                pass

    return FrameCalibrator()


# ----------------------------------------------------------------------------------------------
# Build
# ----------------------------------------------------------------------------------------------


def _parser_errors(parser: Any) -> str:
    messages = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        where = ""
        # node_name()/node_operator() exist from TensorRT 8.6/10; older ones only have node().
        if hasattr(err, "node_name") and err.node_name():
            where = f" at {err.node_operator()} '{err.node_name()}'"
        elif err.node() >= 0:
            where = f" at node {err.node()}"
        messages.append(f"{err.desc()}{where}")
    return "; ".join(messages) or "no error reported"


def build_engine(onnx_path: str | os.PathLike[str], engine_path: str | os.PathLike[str], *,
                 precision: str = "fp16", profiles: Sequence[dict[str, Sequence[int]]],
                 timing_cache_path: str | os.PathLike[str] | None = None,
                 calibration_frames: np.ndarray | None = None,
                 calibration_cache_path: str | os.PathLike[str] | None = None,
                 calibration_inputs: dict[str, np.ndarray] | None = None,
                 workspace_gb: float = 4.0, device_index: int = 0) -> Path:
    """Parses ``onnx_path`` with TensorRT and writes the serialized engine to ``engine_path``.

    Args:
        onnx_path: the bundle's graph.
        engine_path: where the engine goes (written atomically).
        precision: "fp32" (TF32 off, so it matches ONNX Runtime), "fp16" or "int8" (with FP16
            fallback for layers INT8 does not cover).
        profiles: optimization profiles for the (B, H, W, 3) input, see
            :func:`dlc_export.tensorrt_profiles.normalize_profiles`.
        timing_cache_path: a timing cache to load and update; the second build on the same GPU
            skips most tactic timing.
        calibration_frames: (N, H, W, 3) uint8 frames from the user's videos; required for int8.
        calibration_cache_path: where the INT8 scales are cached (reused when present).
        calibration_inputs: the graph's further inputs for those frames (top-down ``boxes``
            (N, M, 4)), by name.
        workspace_gb: scratch memory TensorRT may use for tactics.
        device_index: the CUDA device to build on.
    """
    if precision not in PRECISIONS:
        raise TensorRTBuildError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    with _as_build_error():
        profiles = normalize_profiles(profiles)
    if precision == "int8":
        if calibration_frames is None or len(calibration_frames) == 0:
            raise TensorRTBuildError("int8 needs calibration frames from your videos "
                                     "(calibration_frames_from_videos); or use fp16")
        if calibration_frames.dtype != np.uint8 or calibration_frames.ndim != 4:
            raise TensorRTBuildError(f"calibration frames must be uint8 (N, H, W, 3), got "
                                     f"{calibration_frames.dtype} {calibration_frames.shape}")
    trt = import_tensorrt()
    if precision != "fp32" and not hasattr(trt.BuilderFlag, "FP16"):
        # TensorRT 11 removed weak typing (FP16/INT8 builder flags, calibrators): reduced
        # precision must already be in the ONNX graph (ModelOpt AutoCast / Q/DQ nodes).
        raise TensorRTBuildError(
            f"TensorRT {trt.__version__} builds only strongly typed networks, so {precision} "
            "needs a mixed-precision ONNX graph, which dlc-deploy does not write yet: use "
            "precision='fp32' or pip install 'tensorrt>=8.5,<11'")
    from dlc_runtime.backends.tensorrt_backend import cuda_call, cuda_runtime

    with _as_build_error():
        cuda_call(cuda_runtime().cudaSetDevice(device_index),
                  f"selecting CUDA device {device_index}")

    logger = trt.Logger(trt.Logger.WARNING)
    trt.init_libnvinfer_plugins(logger, "")  # RoiAlign imports through a plugin
    builder = trt.Builder(logger)
    major = int(trt.__version__.split(".")[0])
    flags = 0
    if major < 10:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    # parse_from_file resolves external data next to the graph; ours is one file anyway.
    if not parser.parse_from_file(str(onnx_path)):
        raise TensorRTBuildError(f"TensorRT {trt.__version__} cannot parse {onnx_path}: "
                                 f"{_parser_errors(parser)}")

    config = builder.create_builder_config()
    workspace = int(workspace_gb * (1 << 30))
    if hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    else:  # TensorRT < 8.4
        config.max_workspace_size = workspace
    if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        # TF32 is on by default on Ampere+; it changes conv results by ~1e-3, enough to move an
        # argmax on a flat heatmap. fp32 means "matches ONNX Runtime"; fp16 is the fast mode.
        config.clear_flag(trt.BuilderFlag.TF32)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    # Frames first (as exported); further inputs (boxes) take their shapes from the profile.
    input_name = network.get_input(0).name
    others = [network.get_input(i).name for i in range(1, network.num_inputs)]
    for i, shapes in enumerate(profiles):
        missing = [n for n in others if n not in (shapes.get("extra_inputs") or {})]
        if missing:
            raise TensorRTBuildError(f"{onnx_path}: profile {i} has no shapes for input(s) "
                                     f"{missing} (profile 'extra_inputs')")
        profile = builder.create_optimization_profile()
        profile.set_shape(input_name, shapes["min"], shapes["opt"], shapes["max"])
        for name in others:
            sub = shapes["extra_inputs"][name]
            profile.set_shape(name, sub["min"], sub["opt"], sub["max"])
        config.add_optimization_profile(profile)

    calibrator = None
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        shape = calibration_frames.shape
        batch = min(profiles[0]["opt"][0], shape[0])
        # Calibration runs at one fixed shape: the frames' own size, at the opt batch.
        calib_profile = builder.create_optimization_profile()
        fixed = (batch, shape[1], shape[2], 3)
        calib_profile.set_shape(input_name, fixed, fixed, fixed)
        extra = {n: np.asarray(calibration_inputs[n]) for n in others} \
            if others and calibration_inputs else {}
        if set(extra) != set(others):
            raise TensorRTBuildError(f"int8 calibration of {onnx_path} needs data for its "
                                     f"inputs {others} (calibration_inputs)")
        for name, data in extra.items():
            sub = (batch, *data.shape[1:])
            calib_profile.set_shape(name, sub, sub, sub)
        config.set_calibration_profile(calib_profile)
        calibrator = _make_calibrator(
            trt, calibration_frames, batch, input_name,
            Path(calibration_cache_path) if calibration_cache_path else None, extra)
        config.int8_calibrator = calibrator

    cache_path = Path(timing_cache_path) if timing_cache_path else None
    cache_bytes = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    if not config.set_timing_cache(cache, False) and cache_bytes:
        # A cache from another GPU or TensorRT version: start a fresh one rather than fail.
        log.warning("timing cache %s does not fit this GPU/TensorRT; starting a new one",
                    cache_path)
        config.set_timing_cache(config.create_timing_cache(b""), False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise TensorRTBuildError(f"TensorRT {trt.__version__} could not build an engine from "
                                 f"{onnx_path} ({precision}); see its log above")
    engine_path = Path(engine_path)
    atomic_write_bytes(engine_path, bytes(serialized))
    if cache_path is not None:
        atomic_write_bytes(cache_path, bytes(config.get_timing_cache().serialize()))
    del calibrator
    return engine_path


# ----------------------------------------------------------------------------------------------
# Bundle integration
# ----------------------------------------------------------------------------------------------


def export_tensorrt(bundle_dir: str | os.PathLike[str], *, precision: str = "fp16",
                    frame_size: tuple[int, int] | None = None,
                    profiles: Sequence[dict[str, Sequence[int]]] | None = None,
                    engine_name: str = ENGINE_NAME, graph: str = "pose",
                    timing_cache_path: str | os.PathLike[str] | None = None,
                    calibration_frames: np.ndarray | None = None,
                    calibration_inputs: dict[str, np.ndarray] | None = None,
                    workspace_gb: float = 4.0, device_index: int = 0) -> dict[str, Any]:
    """Builds ``<bundle>/pose.engine`` from the bundle's ``pose.onnx`` (or ``engine_name`` from
    another ``graph``: top-down bundles build ``detector.engine`` and a two-input
    ``pose.engine``).

    Args:
        bundle_dir: an exported bundle.
        precision: "fp32", "fp16" or "int8".
        frame_size: (height, width) of the videos, for graphs with a dynamic frame size (or
            taken from ``calibration_frames``).
        profiles: explicit profiles instead of the one derived from the manifest.
        engine_name: file name inside the bundle.
        graph: which graph of the manifest to build.
        timing_cache_path, calibration_frames, calibration_inputs, workspace_gb,
            device_index: see :func:`build_engine`.

    Returns:
        The manifest ``engines`` entry (pass it to :func:`add_engine_to_bundle`).
    """
    bundle = Bundle.load(bundle_dir)
    onnx_path = bundle.graph_path(graph)
    check_tensorrt_operators(onnx_path)  # fast, and a clearer message than the parser's
    if profiles is None and frame_size is None and calibration_frames is not None:
        frame_size = tuple(calibration_frames.shape[1:3])
    with _as_build_error():
        if profiles is None:
            profiles = default_profiles(bundle.manifest, frame_size, graph)
        profiles = normalize_profiles(profiles)
    engine_path = bundle.path / engine_name
    # INT8 scales depend on the graph and the frames, not on the GPU: kept beside the engine so
    # a rebuild for another GPU skips calibration.
    cache = bundle.path / f"{Path(engine_name).stem}.int8-calibration.cache" \
        if precision == "int8" else None
    build_engine(onnx_path, engine_path, precision=precision, profiles=profiles,
                 timing_cache_path=timing_cache_path, calibration_frames=calibration_frames,
                 calibration_cache_path=cache, calibration_inputs=calibration_inputs,
                 workspace_gb=workspace_gb,
                 device_index=device_index)
    input_name = bundle.graph(graph).inputs[0].name
    with _as_build_error():
        fingerprint = engine_fingerprint(precision, profiles, device_index, input_name)
    entry = {
        "file": engine_name,
        "graph": graph,
        **fingerprint,
        "sha256": sha256_file(engine_path),
        "graph_sha256": bundle.graph(graph).sha256,
        "built": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
    }
    log.info("TensorRT engine %s built for %s (%s)", engine_path, entry["gpu_name"], precision)
    return entry


def add_engine_to_bundle(bundle_dir: str | os.PathLike[str], entry: dict[str, Any]) -> Path:
    """Records ``entry`` in the bundle's manifest, replacing an entry for the same file."""
    bundle = Bundle.load(bundle_dir)
    bundle.manifest.engines = with_engine(bundle.manifest.engines, entry)
    return write_manifest(bundle.path, bundle.manifest)


def with_engine(engines: list[dict[str, Any]], entry: dict[str, Any]) -> list[dict[str, Any]]:
    """``engines`` with ``entry`` added, replacing an entry for the same file."""
    return [*(e for e in engines if e.get("file") != entry.get("file")), dict(entry)]


__all__ = ["TENSORRT_MISSING", "PRECISIONS", "ENGINE_NAME", "TensorRTBuildError",
           "add_engine_to_bundle", "build_engine", "calibration_frames_from_videos",
           "export_tensorrt", "with_engine"]
