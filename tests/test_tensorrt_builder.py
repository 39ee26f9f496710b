"""The TensorRT builder's code paths against a fake ``tensorrt`` module (tests/helpers/
fake_tensorrt.py), for the 10.x (weakly typed: FP16/INT8 flags, calibrator) and the 11.x API
(strongly typed networks: fp16 from the graph's fp16 ONNX variant, int8 refused), the check of
the built engine's layer precisions, and an fp16 export on TensorRT 11 end to end.

The real builds run in tests/test_tensorrt.py (``-m gpu``, with TensorRT).
"""
from __future__ import annotations

import dataclasses
import json
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from dlc_export import export_bundle
from dlc_export.formats import OnnxFormat, TensorRTFormat, formats_for
from dlc_export.options import ExportOptions
from dlc_export.tensorrt_build import (TensorRTBuildError, build_engine, export_tensorrt,
                                       strongly_typed_only)
from dlc_runtime.backends import OnnxRuntimeBackend
from dlc_runtime.backends import tensorrt_backend as trt_backend
from dlc_runtime.bundle import Bundle, sha256_file, write_manifest
from dlc_runtime.testing import make_toy_bundle
from helpers.fake_tensorrt import fake_cuda, make_fake_tensorrt
from helpers.shuffles import write_shuffle

MACHINE = {"tensorrt_version": "11.0.0", "gpu_name": "NVIDIA H200", "compute_capability": "9.0",
           "cuda_driver": "13.0"}
PROFILE = {"min": (1, 32, 32, 3), "opt": (2, 32, 32, 3), "max": (4, 32, 32, 3)}


@pytest.fixture
def install(monkeypatch):
    """install("10.8.0") -> the fake module, imported as ``tensorrt``, with CUDA faked."""
    def put(version: str):
        fake = make_fake_tensorrt(version)
        monkeypatch.setitem(sys.modules, "tensorrt", fake)
        fake.cuda_calls = fake_cuda(monkeypatch)
        monkeypatch.setattr(trt_backend, "machine_fingerprint",
                            lambda index=0: {**MACHINE, "tensorrt_version": version})
        return fake
    return put


def _graph(path, half: bool = False, boxes: bool = False):
    """images uint8 (B, H, W, 3) [+ boxes (B, M, 4)] -> keypoints; ``half``: computes in
    float16 between the casts, as ``<graph>.fp16.onnx`` does."""
    inner = TensorProto.FLOAT16 if half else TensorProto.FLOAT
    nodes = [helper.make_node("Cast", ["images"], ["x"], to=inner),
             helper.make_node("Cast", ["x"], ["keypoints"], to=TensorProto.FLOAT)]
    inputs = [helper.make_tensor_value_info("images", TensorProto.UINT8, ["b", "h", "w", 3])]
    if boxes:
        inputs.append(helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["b", 3, 4]))
    model = helper.make_model(helper.make_graph(
        nodes, "g", inputs, [helper.make_tensor_value_info("keypoints", TensorProto.FLOAT,
                                                           ["b", "h", "w", 3])]),
        opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


def _build(tmp_path, precision, **kwargs):
    onnx_path = kwargs.pop("onnx_path", None) or _graph(tmp_path / "pose.onnx")
    return build_engine(onnx_path, tmp_path / "pose.engine", precision=precision,
                        profiles=kwargs.pop("profiles", [PROFILE]), **kwargs)


def _layer_types(engine_path):
    layers = json.loads(engine_path.read_bytes())["Layers"]
    return {t["Format/Datatype"] for layer in layers for t in layer["Outputs"]}


# ----------------------------------------------------------------------------------------------
# TensorRT 10.x: weakly typed
# ----------------------------------------------------------------------------------------------


def test_trt10_fp32_clears_tf32_and_sets_no_precision_flag(install, tmp_path):
    fake = install("10.8.0")
    assert not strongly_typed_only()
    engine = _build(tmp_path, "fp32")
    assert fake.calls["flags_cleared"] == {"TF32"} and fake.calls["flags_set"] == set()
    assert fake.calls["network_flags"] == [0]  # explicit batch is the only mode in 10
    assert fake.calls["parsed"] == [str(tmp_path / "pose.onnx")]
    assert fake.calls["profiles"] == [{"images": ((1, 32, 32, 3), (2, 32, 32, 3),
                                                  (4, 32, 32, 3))}]
    assert fake.calls["profiling_verbosity"] == fake.ProfilingVerbosity.DETAILED
    assert ("cudaSetDevice", 0) in fake.cuda_calls
    assert "Row major linear FP32" in _layer_types(engine)


def test_trt10_fp16_sets_the_fp16_flag_on_the_fp32_graph(install, tmp_path):
    fake = install("10.8.0")
    engine = _build(tmp_path, "fp16")
    assert fake.calls["flags_set"] == {"FP16"} and fake.calls["flags_cleared"] == set()
    assert fake.calls["parsed"] == [str(tmp_path / "pose.onnx")]
    assert any("FP16" in t for t in _layer_types(engine))


def test_trt10_int8_calibrates_on_the_frames(install, tmp_path):
    fake = install("10.8.0")
    with pytest.raises(TensorRTBuildError, match="int8 needs calibration frames"):
        _build(tmp_path, "int8")
    frames = np.zeros((6, 32, 32, 3), np.uint8)
    engine = _build(tmp_path, "int8", calibration_frames=frames,
                    calibration_cache_path=tmp_path / "pose.int8-calibration.cache")
    assert fake.calls["flags_set"] == {"FP16", "INT8"}
    # Calibration at one fixed shape: the frames' size at the profile's opt batch (2).
    assert fake.calls["calibration_profile"] == {"images": ((2, 32, 32, 3),) * 3}
    assert fake.calls["calibrator_batches"] == 3
    assert (tmp_path / "pose.int8-calibration.cache").read_bytes() == b"int8-scales"
    assert any(c[0] == "cudaMemcpy" for c in fake.cuda_calls)
    assert any("INT8" in t for t in _layer_types(engine))


def test_trt10_two_input_graph_gets_both_profiles(install, tmp_path):
    fake = install("10.8.0")
    onnx_path = _graph(tmp_path / "td.onnx", boxes=True)
    boxes = {"min": (1, 3, 4), "opt": (2, 3, 4), "max": (4, 3, 4)}
    with pytest.raises(TensorRTBuildError, match=r"no shapes for input\(s\) \['boxes'\]"):
        _build(tmp_path, "fp16", onnx_path=onnx_path)
    _build(tmp_path, "fp16", onnx_path=onnx_path,
           profiles=[{**PROFILE, "extra_inputs": {"boxes": boxes}}])
    assert fake.calls["profiles"][-1] == {
        "images": ((1, 32, 32, 3), (2, 32, 32, 3), (4, 32, 32, 3)),
        "boxes": ((1, 3, 4), (2, 3, 4), (4, 3, 4))}


# ----------------------------------------------------------------------------------------------
# TensorRT 11.x: strongly typed
# ----------------------------------------------------------------------------------------------


def test_trt11_fp16_builds_a_strongly_typed_network_from_the_fp16_graph(install, tmp_path):
    fake = install("11.0.0")
    assert strongly_typed_only()
    bundle_dir = make_toy_bundle(tmp_path / "toy.bundle", height=32, width=32)
    bundle = Bundle.load(bundle_dir)
    _graph(bundle_dir / "pose.fp16.onnx", half=True)
    manifest = bundle.manifest
    manifest.graphs["pose_onnx_fp16"] = dataclasses.replace(
        manifest.graphs["pose"], file="pose.fp16.onnx",
        sha256=sha256_file(bundle_dir / "pose.fp16.onnx"))
    write_manifest(bundle_dir, manifest)
    entry = export_tensorrt(bundle_dir, precision="fp16", onnx_graph="pose_onnx_fp16",
                            profiles=[PROFILE])
    assert fake.calls["parsed"] == [str(bundle_dir / "pose.fp16.onnx")]
    assert fake.calls["network_flags"] == [1 << int(
        fake.NetworkDefinitionCreationFlag.STRONGLY_TYPED)]
    assert fake.calls["flags_set"] == set()  # no FP16 flag exists, none is set
    assert not hasattr(fake.BuilderFlag, "FP16")
    reloaded = Bundle.load(bundle_dir)
    assert entry["graph"] == "pose" and entry["precision"] == "fp16"
    assert entry["graph_sha256"] == reloaded.graph("pose_onnx_fp16").sha256
    assert entry["graph_sha256"] != reloaded.graph("pose").sha256


def test_trt11_int8_is_one_clear_line(install, tmp_path):
    install("11.0.0")
    with pytest.raises(TensorRTBuildError) as info:
        _build(tmp_path, "int8", calibration_frames=np.zeros((2, 32, 32, 3), np.uint8))
    message = str(info.value)
    assert "\n" not in message and "Q/DQ" in message and "11.0.0" in message


def test_fp16_request_with_only_fp32_layers_is_an_error(install, tmp_path):
    fake = install("11.0.0")
    with pytest.raises(TensorRTBuildError, match="no fp16 layer"):  # the fp32 graph
        _build(tmp_path, "fp16")
    assert not (tmp_path / "pose.engine").exists()
    assert fake.calls["built"] == 1
    fake10 = install("10.8.0")
    fake10.force_layer_type = "Float"  # a weakly typed build that ignored the FP16 flag
    with pytest.raises(TensorRTBuildError, match=r"no fp16 layer \(found: other\)"):
        _build(tmp_path, "fp16")


def test_precision_check_is_skipped_without_an_inspector(install, tmp_path, monkeypatch,
                                                         caplog):
    fake = install("10.8.0")
    fake.force_layer_type = "Float"
    monkeypatch.delattr(fake, "LayerInformationFormat")  # as on versions without it
    with caplog.at_level("INFO", logger="dlc_export.tensorrt_build"):
        assert _build(tmp_path, "fp16").is_file()
    assert "not checked" in caplog.text


# ----------------------------------------------------------------------------------------------
# The export on TensorRT 11: fp16 ONNX graphs first, the engine built from them
# ----------------------------------------------------------------------------------------------


def test_formats_add_the_fp16_onnx_graphs_only_for_strongly_typed_fp16(install):
    def kinds(**options):
        return [(f.kind, f.precision) for f in formats_for(ExportOptions(**options))]

    install("10.8.0")
    assert kinds(tensorrt_precision="fp16") == [("onnx", "fp32"), ("tensorrt", "fp16")]
    install("11.0.0")
    assert kinds(tensorrt_precision="fp16") == [("onnx", "fp32"), ("onnx", "fp16"),
                                                ("tensorrt", "fp16")]
    assert kinds(tensorrt_precision="fp32") == [("onnx", "fp32"), ("tensorrt", "fp32")]
    assert kinds(tensorrt_precision="fp16", onnx_precisions=("fp16",)) == \
        [("onnx", "fp32"), ("onnx", "fp16"), ("tensorrt", "fp16")]
    assert isinstance(formats_for(ExportOptions(tensorrt_precision="fp16"))[1], OnnxFormat)
    assert isinstance(formats_for(ExportOptions(tensorrt_precision="fp16"))[2], TensorRTFormat)


def test_trt11_fp16_export_builds_the_engine_from_the_fp16_onnx_graph(install, tmp_path,
                                                                      monkeypatch):
    fake = install("11.0.0")
    made = write_shuffle(tmp_path / "train", {"bodyparts": ["snout", "tail"],
                                              "multianimalproject": False})
    from dlc_runtime.backends import make_backend as real

    def make_backend(bundle, backend="onnxruntime", device="cpu", **options):
        if backend != "tensorrt":
            return real(bundle, backend, device, **options)
        assert device == "cuda" and options["graph"] == "pose"
        return OnnxRuntimeBackend(bundle.graph_path("pose_onnx_fp16"))  # what it was built from

    monkeypatch.setattr("dlc_export.formats.base.make_backend", make_backend)
    monkeypatch.setattr("dlc_export.formats.tensorrt.TIMING_CACHE", tmp_path / "timing.cache")
    frames = np.random.default_rng(0).integers(0, 256, (2, 64, 80, 3), dtype=np.uint8)
    result = export_bundle(made.config_path, made.snapshot, tmp_path / "b.bundle", frames=frames,
                           simplify=False, tensorrt_precision="fp16", frame_size=(64, 80))
    bundle = Bundle.load(result.bundle_dir)
    assert "pose_onnx_fp16" in bundle.manifest.graphs
    # Built in the staging folder, from the fp16 graph the export wrote just before.
    assert [p.rsplit("/", 1)[-1] for p in fake.calls["parsed"]] == ["pose.fp16.onnx"]
    assert fake.calls["flags_set"] == set()
    [engine] = bundle.manifest.engines
    assert engine["graph"] == "pose" and engine["precision"] == "fp16"
    assert engine["graph_sha256"] == bundle.graph("pose_onnx_fp16").sha256
    assert (result.bundle_dir / engine["file"]).is_file()
    report = json.loads((result.bundle_dir / "parity.tensorrt_fp16.json").read_text())
    assert report["passed"] is True
    assert (result.bundle_dir / "parity.onnx_fp16.json").is_file()  # the fp16 graph's check
