"""A fake ``tensorrt`` module: the API surface ``dlc_export.tensorrt_build`` uses, in the 10.x or the
11.x flavour, recording what the builder asked for. No GPU, no TensorRT.

- 10.x: weakly typed. ``BuilderFlag`` has FP16/INT8/TF32, ``NetworkDefinitionCreationFlag`` has
  the deprecated EXPLICIT_BATCH and STRONGLY_TYPED, ``IInt8EntropyCalibrator2`` exists and the
  build drains the calibrator (int8 layers only with one).
- 11.x: strongly typed only. No FP16/INT8 builder flags, calibrators, ``platform_has_fast_fp16``
  or EXPLICIT_BATCH; the engine's layers take the parsed graph's types (half where the ONNX file
  has float16 tensors).

The "engine" is JSON bytes; ``Runtime.deserialize_cuda_engine`` reads it back and its inspector
lists layers whose ``Format/Datatype`` reflects what a real build would give (names only
without ``ProfilingVerbosity.DETAILED``). ``module.force_layer_type`` overrides that ("Float": an
engine that ignored an fp16 request). ``module.calls`` is the record::

    fake = make_fake_tensorrt("11.0.0")
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    fake_cuda(monkeypatch)
"""
from __future__ import annotations

import enum
import json
import types
from typing import Any

import onnx

_TYPE_NAMES = {"half": "Channel major FP16 format where channel % 8 == 0",
               "int8": "Channel major INT8 format where channel % 32 == 0",
               "float": "Row major linear FP32"}


def make_fake_tensorrt(version: str = "10.8.0") -> types.ModuleType:
    major = int(version.split(".")[0])
    weak = major < 11
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.force_layer_type = None  # e.g. "Float": pretend the build ignored the fp16 request
    calls: dict[str, Any] = {"network_flags": [], "flags_set": set(), "flags_cleared": set(),
                             "parsed": [], "profiles": [], "calibration_profile": None,
                             "calibrator_batches": 0, "profiling_verbosity": None,
                             "plugins": 0, "built": 0}
    trt.calls = calls

    builder_flags = ["TF32", "REFIT", "SPARSE_WEIGHTS"] + (["FP16", "INT8"] if weak else [])
    trt.BuilderFlag = enum.IntEnum("BuilderFlag", builder_flags, start=0)
    trt.NetworkDefinitionCreationFlag = enum.IntEnum(
        "NetworkDefinitionCreationFlag",
        ["EXPLICIT_BATCH", "STRONGLY_TYPED"] if weak else ["STRONGLY_TYPED"], start=0)
    trt.MemoryPoolType = enum.IntEnum("MemoryPoolType", ["WORKSPACE"], start=0)
    trt.ProfilingVerbosity = enum.IntEnum("ProfilingVerbosity",
                                          ["LAYER_NAMES_ONLY", "NONE", "DETAILED"], start=0)
    trt.LayerInformationFormat = enum.IntEnum("LayerInformationFormat", ["ONELINE", "JSON"],
                                              start=0)

    class Logger:
        WARNING, INFO, ERROR = 2, 3, 1

        def __init__(self, severity: int = 2) -> None:
            self.severity = severity

    def init_libnvinfer_plugins(logger: Any, namespace: str) -> bool:
        calls["plugins"] += 1
        return True

    class Tensor:
        def __init__(self, name: str) -> None:
            self.name = name

    class Network:
        def __init__(self, flags: int) -> None:
            self.flags = flags
            self.inputs: list[Tensor] = []
            self.has_half = False

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        def get_input(self, index: int) -> Tensor:
            return self.inputs[index]

    class OnnxParser:
        def __init__(self, network: Network, logger: Any) -> None:
            self.network = network
            self.num_errors = 0

        def parse_from_file(self, path: str) -> bool:
            calls["parsed"].append(str(path))
            model = onnx.load(path)
            inits = {i.name for i in model.graph.initializer}
            self.network.inputs = [Tensor(i.name) for i in model.graph.input
                                   if i.name not in inits]
            half = onnx.TensorProto.FLOAT16
            self.network.has_half = any(i.data_type == half for i in model.graph.initializer) \
                or any(a.name == "to" and a.i == half
                       for n in model.graph.node for a in n.attribute)
            return True

        def get_error(self, index: int) -> Any:
            raise IndexError(index)

    class OptimizationProfile:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple[tuple[int, ...], ...]] = {}

        def set_shape(self, name: str, lo: Any, opt: Any, hi: Any) -> None:
            self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))

    class TimingCache:
        def serialize(self) -> bytes:
            return b"timing-cache"

    class BuilderConfig:
        def __init__(self) -> None:
            self.profiling_verbosity = trt.ProfilingVerbosity.LAYER_NAMES_ONLY
            self.pool_limits: dict[Any, int] = {}
            self.flags: set[Any] = {trt.BuilderFlag.TF32}  # on by default, as in TensorRT
            self._cache = TimingCache()
            if weak:
                self.int8_calibrator = None

        def __setattr__(self, name: str, value: Any) -> None:
            if name == "int8_calibrator" and not weak:
                raise AttributeError("'IBuilderConfig' object has no attribute "
                                     "'int8_calibrator'")
            object.__setattr__(self, name, value)

        def set_memory_pool_limit(self, pool: Any, size: int) -> None:
            self.pool_limits[pool] = size

        def set_flag(self, flag: Any) -> None:
            calls["flags_set"].add(flag.name)
            self.flags.add(flag)

        def clear_flag(self, flag: Any) -> None:
            calls["flags_cleared"].add(flag.name)
            self.flags.discard(flag)

        def get_flag(self, flag: Any) -> bool:
            return flag in self.flags

        def add_optimization_profile(self, profile: OptimizationProfile) -> int:
            calls["profiles"].append(dict(profile.shapes))
            return len(calls["profiles"]) - 1

        def create_timing_cache(self, data: bytes) -> TimingCache:
            return TimingCache()

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
            self._cache = cache
            return True

        def get_timing_cache(self) -> TimingCache:
            return self._cache

        if weak:
            def set_calibration_profile(self, profile: OptimizationProfile) -> bool:
                calls["calibration_profile"] = dict(profile.shapes)
                return True

    class Builder:
        def __init__(self, logger: Any) -> None:
            self.logger = logger

        if weak:
            platform_has_fast_fp16 = True

        def create_network(self, flags: int = 0) -> Network:
            calls["network_flags"].append(flags)
            return Network(flags)

        def create_builder_config(self) -> BuilderConfig:
            return BuilderConfig()

        def create_optimization_profile(self) -> OptimizationProfile:
            return OptimizationProfile()

        def build_serialized_network(self, network: Network, config: BuilderConfig) -> bytes:
            calls["built"] += 1
            calls["profiling_verbosity"] = config.profiling_verbosity
            kind = "float"
            if weak:
                if trt.BuilderFlag.FP16 in config.flags:
                    kind = "half"
                calibrator = getattr(config, "int8_calibrator", None)
                if trt.BuilderFlag.INT8 in config.flags and calibrator is not None:
                    names = [t.name for t in network.inputs]
                    while calibrator.get_batch(names) is not None:
                        calls["calibrator_batches"] += 1
                    calibrator.write_calibration_cache(b"int8-scales")
                    kind = "int8"
            elif network.has_half:  # strongly typed: the graph's own types
                kind = "half"
            kind = trt.force_layer_type or _TYPE_NAMES[kind]
            detailed = config.profiling_verbosity == trt.ProfilingVerbosity.DETAILED
            inputs = [t.name for t in network.inputs]
            layers: list[Any] = [
                {"Name": "cast_frames", "LayerType": "Reformat",
                 "Inputs": [{"Name": n, "Format/Datatype": "Row major linear UInt8"}
                            for n in inputs],
                 "Outputs": [{"Name": "x", "Format/Datatype": kind}]},
                {"Name": "conv", "LayerType": "CaskConvolution",
                 "Inputs": [{"Name": "x", "Format/Datatype": kind}],
                 "Outputs": [{"Name": "keypoints", "Format/Datatype": "Row major linear FP32"}]},
            ]
            if not detailed:
                layers = [layer["Name"] for layer in layers]
            return json.dumps({"Layers": layers, "Bindings": inputs}).encode()

    class EngineInspector:
        def __init__(self, info: str) -> None:
            self.info = info

        def get_engine_information(self, fmt: Any) -> str:
            assert fmt == trt.LayerInformationFormat.JSON
            return self.info

    class ICudaEngine:
        def __init__(self, data: bytes) -> None:
            self.data = data

        def create_engine_inspector(self) -> EngineInspector:
            return EngineInspector(self.data.decode())

    class Runtime:
        def __init__(self, logger: Any) -> None:
            self.logger = logger

        def deserialize_cuda_engine(self, data: Any) -> ICudaEngine:
            return ICudaEngine(bytes(data))

    trt.Logger, trt.Builder, trt.OnnxParser, trt.Runtime = Logger, Builder, OnnxParser, Runtime
    trt.init_libnvinfer_plugins = init_libnvinfer_plugins
    if weak:
        class IInt8EntropyCalibrator2:
            def __init__(self) -> None:
                pass

        trt.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2
    return trt


def fake_cuda(monkeypatch: Any) -> list[tuple]:
    """Replaces the runtime's cuda-python module (device selection, malloc, copies) with
    no-ops that succeed; returns the calls made."""
    from dlc_runtime.backends import tensorrt_backend

    made: list[tuple] = []

    class Kind:
        cudaMemcpyHostToDevice = 1

    def record(name: str, *values: Any):
        def call(*args: Any) -> tuple:
            made.append((name, *args))
            return (0, *values)
        return call

    rt = types.SimpleNamespace(cudaSetDevice=record("cudaSetDevice"),
                               cudaMalloc=record("cudaMalloc", 4096),
                               cudaFree=record("cudaFree"), cudaMemcpy=record("cudaMemcpy"),
                               cudaMemcpyKind=Kind)
    monkeypatch.setattr(tensorrt_backend, "cuda_runtime", lambda: rt)
    return made
