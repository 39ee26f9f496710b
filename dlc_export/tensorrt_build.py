"""Build a TensorRT engine from a bundle's ``pose.onnx`` and record its fingerprint.

TensorRT is imported lazily: this module imports on machines without it, and asking for an
engine there fails with one line that says what to install. The profiles an engine is built for
and its fingerprint come from ``dlc_export.tensorrt_profiles`` (pure, no TensorRT).

Written against the TensorRT Python API of 8.5 to 11.x:
- ``builder.create_network``: TensorRT 10 only has explicit batch (the EXPLICIT_BATCH flag is
  deprecated and ignored); 8.x needs the flag.
- ``config.set_memory_pool_limit(WORKSPACE, ...)`` (8.4+) instead of ``max_workspace_size``.
- ``builder.build_serialized_network`` (``build_engine`` is gone in 10).
- 8.5-10.x (weakly typed): fp16 is the fp32 graph with ``BuilderFlag.FP16``; INT8 uses implicit
  quantization with an ``IInt8EntropyCalibrator2`` fed with real frames
  (``dlc_export.tensorrt_calibration``; deprecated from 10.1 in favour of Q/DQ graphs, but it
  still builds).
- 11.x removed weak typing (no FP16/INT8 builder flags, calibrators, ``platform_has_fast_fp16``
  or EXPLICIT_BATCH; :func:`strongly_typed_only`): networks are created STRONGLY_TYPED and take
  their precision from the graph, so fp16 builds from the graph's fp16 ONNX variant
  (``<graph>.fp16.onnx``, which the export then also writes and checks) and int8 is refused in
  one line (dlc-deploy writes no Q/DQ graphs yet).
- Every build is verified: the engine's layers (engine inspector, ``DETAILED`` profiling
  verbosity) must include half (fp16) or int8 ones; where the inspector is missing the check is
  skipped with a log line.

Typical use (what ``dlc export --format tensorrt`` runs)::

    entry = export_tensorrt(bundle_dir, precision="fp16", frame_size=(480, 640))
    add_engine_to_bundle(bundle_dir, entry)
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import re
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from dlc_export.errors import TensorRTBuildError
from dlc_export.tensorrt_calibration import calibration_frames_from_videos, make_calibrator
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


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or :class:`TensorRTBuildError` with the install hint."""
    try:
        import tensorrt
    except ImportError:  # also the placeholder wheel PyPI serves without the NVIDIA index
        raise TensorRTBuildError(TENSORRT_MISSING) from None
    return tensorrt


def refuse_strongly_typed_int8(trt: Any) -> None:
    """TensorRT 11 removed calibrators: int8 must be Q/DQ nodes in the ONNX graph."""
    raise TensorRTBuildError(
        f"TensorRT {trt.__version__} builds int8 only from Q/DQ ONNX graphs, which dlc-deploy "
        "does not write yet: use fp16, or pip install 'tensorrt>=8.5,<11' to calibrate")


def strongly_typed_only(trt: Any = None) -> bool:
    """Whether ``trt`` (default: the installed TensorRT) builds only strongly typed networks
    (11.x: no ``BuilderFlag.FP16``). False where TensorRT is missing."""
    if trt is None:
        try:
            trt = import_tensorrt()
        except TensorRTBuildError:
            return False
    return not hasattr(trt.BuilderFlag, "FP16")


@contextmanager
def _as_build_error() -> Iterator[None]:
    """Bad profiles (:mod:`dlc_export.tensorrt_profiles`) and the runtime's CUDA/machine errors
    leave this module as :class:`TensorRTBuildError`, with the same one-line message."""
    try:
        yield
    except (ProfileError, BackendError) as err:
        raise TensorRTBuildError(str(err)) from None


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
        onnx_path: the bundle's graph; on TensorRT 11 (strongly typed) its precision is the
            engine's, so fp16 needs the graph's fp16 variant (``<graph>.fp16.onnx``).
        engine_path: where the engine goes (written atomically).
        precision: "fp32" (TF32 off, so it matches ONNX Runtime), "fp16" or "int8" (with FP16
            fallback for layers INT8 does not cover; TensorRT 8.5-10.x only). The built engine
            must have half (int8) layers, see :func:`check_engine_precision`.
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
    trt = import_tensorrt()
    strongly_typed = strongly_typed_only(trt)
    if precision == "int8" and strongly_typed:
        refuse_strongly_typed_int8(trt)
    if precision == "int8":
        if calibration_frames is None or len(calibration_frames) == 0:
            raise TensorRTBuildError("int8 needs calibration frames from your videos "
                                     "(calibration_frames_from_videos); or use fp16")
        if calibration_frames.dtype != np.uint8 or calibration_frames.ndim != 4:
            raise TensorRTBuildError(f"calibration frames must be uint8 (N, H, W, 3), got "
                                     f"{calibration_frames.dtype} {calibration_frames.shape}")
    from dlc_runtime.backends.tensorrt_backend import cuda_call, cuda_runtime

    with _as_build_error():
        cuda_call(cuda_runtime().cudaSetDevice(device_index),
                  f"selecting CUDA device {device_index}")

    logger = trt.Logger(trt.Logger.WARNING)
    trt.init_libnvinfer_plugins(logger, "")  # RoiAlign imports through a plugin
    builder = trt.Builder(logger)
    major = int(trt.__version__.split(".")[0])
    flags = 0
    if strongly_typed and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    elif major < 10:
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
    if precision in ("fp16", "int8") and not strongly_typed:
        config.set_flag(trt.BuilderFlag.FP16)  # 11.x: the fp16 graph's own types instead
    if hasattr(trt, "ProfilingVerbosity"):  # layer precisions in the engine inspector
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
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
        calibrator = make_calibrator(
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
    check_engine_precision(trt, logger, serialized, precision, onnx_path)
    engine_path = Path(engine_path)
    atomic_write_bytes(engine_path, bytes(serialized))
    if cache_path is not None:
        atomic_write_bytes(cache_path, bytes(config.get_timing_cache().serialize()))
    del calibrator
    return engine_path


_TYPES = {"fp16": re.compile(r"FP16|HALF"), "int8": re.compile(r"(?<!U)INT8")}


def engine_layer_types(trt: Any, logger: Any, serialized: Any) -> set[str] | None:
    """The precisions ("fp16", "int8", "other"; "opaque": a fused Myelin layer) of the built
    engine's layer tensors, from its engine inspector; None where the inspector or the layer
    details are unavailable."""
    engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
    if engine is None or not hasattr(engine, "create_engine_inspector") or \
            not hasattr(trt, "LayerInformationFormat"):
        return None
    info = json.loads(engine.create_engine_inspector().get_engine_information(
        trt.LayerInformationFormat.JSON))
    layers = info.get("Layers", []) if isinstance(info, dict) else []
    if not layers or not all(isinstance(layer, dict) for layer in layers):
        return None  # names only: built without DETAILED profiling verbosity
    found = set()
    for layer in layers:
        if layer.get("LayerType") == "Myelin" or "ForeignNode" in str(layer.get("Name")):
            found.add("opaque")  # fused subgraph: its inner tensors' types are not listed
        for tensor in [*layer.get("Inputs", []), *layer.get("Outputs", [])]:
            text = str(tensor.get("Format/Datatype", "")).upper()
            found |= {k for k, pattern in _TYPES.items() if pattern.search(text)} or {"other"}
    return found


def check_engine_precision(trt: Any, logger: Any, serialized: Any, precision: str,
                           onnx_path: str | os.PathLike[str]) -> None:
    """Raises :class:`TensorRTBuildError` where an fp16 (int8) request gave an engine without
    one half (int8) layer; skipped with a log line where the inspector cannot tell."""
    if precision == "fp32":
        return
    found = engine_layer_types(trt, logger, serialized)
    if found is None:
        log.info("TensorRT %s: no engine inspector details; the %s engine's layer precisions "
                 "are not checked", trt.__version__, precision)
    elif precision not in found and "opaque" in found:
        log.info("TensorRT %s: no %s tensor at the boundaries of the engine's fused (Myelin) "
                 "layers; their inner precision is not checked", trt.__version__, precision)
    elif precision not in found:
        raise TensorRTBuildError(
            f"TensorRT {trt.__version__} built an engine from {onnx_path} with no {precision} "
            f"layer (found: {', '.join(sorted(found))}) although {precision} was asked for")


# ----------------------------------------------------------------------------------------------
# Bundle integration
# ----------------------------------------------------------------------------------------------


def export_tensorrt(bundle_dir: str | os.PathLike[str], *, precision: str = "fp16",
                    frame_size: tuple[int, int] | None = None,
                    profiles: Sequence[dict[str, Sequence[int]]] | None = None,
                    engine_name: str = ENGINE_NAME, graph: str = "pose",
                    onnx_graph: str | None = None,
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
        graph: which graph of the manifest the engine runs (its entry's ``graph``).
        onnx_graph: the manifest graph it is built from, when not ``graph`` itself: TensorRT
            11's fp16 engines build from the fp16 variant (``pose_onnx_fp16``); the entry's
            ``graph_sha256`` is that graph's.
        timing_cache_path, calibration_frames, calibration_inputs, workspace_gb,
            device_index: see :func:`build_engine`.

    Returns:
        The manifest ``engines`` entry (pass it to :func:`add_engine_to_bundle`).
    """
    bundle = Bundle.load(bundle_dir)
    source = onnx_graph or graph
    onnx_path = bundle.graph_path(source)
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
        "graph_sha256": bundle.graph(source).sha256,
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
           "check_engine_precision", "export_tensorrt", "strongly_typed_only", "with_engine"]
