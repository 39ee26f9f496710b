"""TensorRT path: the static operator check, engine fingerprints, the clear "not installed" errors,
and (on a GPU with TensorRT only) real fp32/fp16 engines compared with ONNX Runtime.

The tests marked ``tensorrt`` + ``gpu`` skip where TensorRT or a GPU is missing: a skip there is
not a pass.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper

from dlc_export.onnx_export import ExportError, export_onnx
from dlc_export.tensorrt_build import (TENSORRT_MISSING, TensorRTBuildError, add_engine_to_bundle,
                                       build_engine, export_tensorrt)
from dlc_export.tensorrt_ops import (SUPPORTED_OPS, UNSUPPORTED_OPS, UnsupportedOperatorError,
                                     check_tensorrt_operators)
from dlc_export.tensorrt_profiles import (ProfileError, default_profiles, engine_fingerprint,
                                          extra_input_profile, normalize_profiles)
from dlc_runtime.backends import BACKENDS, make_backend
from dlc_runtime.backends import tensorrt_backend as trt_backend
from dlc_runtime.bundle import Bundle
from dlc_runtime.errors import BackendError
from dlc_runtime.testing import make_toy_bundle

REPO = Path(__file__).resolve().parents[1]
HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


def _model(nodes, inputs, outputs, initializers=(), opset=17, functions=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                             functions=list(functions))


def _vi(name, elem=TensorProto.FLOAT, shape=("n",)):
    return helper.make_tensor_value_info(name, elem, list(shape))


def _one_line(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text, text
    return text


@pytest.fixture(scope="module")
def tiny_pose_onnx(tmp_path_factory) -> Path:
    """Our exporter's graph for a resnet_tiny bottom-up model (random weights)."""
    from dlc_export.wrappers import BottomUpSingleAnimal
    from dlc_train.config import make_pytorch_pose_config
    from dlc_train.models import PoseModel

    project = {"project_path": "P", "bodyparts": ["a", "b", "c"], "multianimalproject": False}
    cfg = make_pytorch_pose_config(project, "x.yaml", net_type="resnet_tiny")
    torch.manual_seed(0)
    wrapper = BottomUpSingleAnimal(PoseModel.build(cfg["model"])).eval()
    path = tmp_path_factory.mktemp("trt") / "pose.onnx"
    # export_onnx runs check_tensorrt_operators itself: reaching the return is the first check.
    return export_onnx(wrapper, torch.zeros(2, 64, 64, 3, dtype=torch.uint8), path)


# ----------------------------------------------------------------------------------------------
# Static operator check
# ----------------------------------------------------------------------------------------------


def test_exported_pose_graph_passes(tiny_pose_onnx):
    report = check_tensorrt_operators(tiny_pose_onnx)
    # The in-graph decoder's ops are all there and accepted.
    for op in ("Conv", "ConvTranspose", "ArgMax", "GatherElements", "Cast"):
        assert report.op_counts.get(op, 0) >= 1, report.op_counts
    assert report.opset == 17
    assert "all imported by TensorRT" in report.summary()


def test_unsupported_standard_op_is_refused_with_name_and_count():
    nodes = [helper.make_node("Unique", ["x"], ["y"], name="dedupe_a"),
             helper.make_node("Unique", ["y"], ["z"], name="dedupe_b"),
             helper.make_node("Relu", ["z"], ["out"], name="relu")]
    model = _model(nodes, [_vi("x")], [_vi("out")])
    with pytest.raises(UnsupportedOperatorError) as info:
        check_tensorrt_operators(model, where="pose.onnx")
    msg = _one_line(info.value)
    assert msg.startswith("pose.onnx: ")
    assert "Unique x2 (node dedupe_a, ...)" in msg
    assert "Relu" not in msg
    assert isinstance(info.value, ExportError)


def test_custom_domain_op_needs_a_plugin():
    node = helper.make_node("FancyPeaks", ["x"], ["out"], name="peaks", domain="my.ops")
    model = helper.make_model(
        helper.make_graph([node], "g", [_vi("x")], [_vi("out")]),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("my.ops", 1)])
    with pytest.raises(UnsupportedOperatorError, match=r"my\.ops::FancyPeaks x1 \(node peaks\) "
                                                         r"\[custom domain"):
        check_tensorrt_operators(model)


def test_subgraphs_are_walked():
    then_g = helper.make_graph([helper.make_node("StringNormalizer", ["s"], ["t"],
                                                 name="inner_norm")],
                               "then", [], [_vi("t", TensorProto.STRING)])
    else_g = helper.make_graph([helper.make_node("Identity", ["s"], ["t2"], name="inner_id")],
                               "else", [], [_vi("t2", TensorProto.STRING)])
    node = helper.make_node("If", ["cond"], ["out"], name="branch", then_branch=then_g,
                            else_branch=else_g)
    model = _model([node], [_vi("cond", TensorProto.BOOL, ()), _vi("s", TensorProto.STRING)],
                   [_vi("out", TensorProto.STRING)])
    with pytest.raises(UnsupportedOperatorError) as info:
        check_tensorrt_operators(model)
    assert "StringNormalizer x1 (node If 'branch' then_branch > inner_norm)" in str(info.value)


def test_local_functions_are_inlined_for_the_check():
    body = [helper.make_node("Unique", ["a"], ["b"], name="in_function")]
    fn = helper.make_function("local", "MyBlock", ["a"], ["b"], body,
                              [helper.make_opsetid("", 17)])
    node = helper.make_node("MyBlock", ["x"], ["out"], name="call", domain="local")
    model = helper.make_model(helper.make_graph([node], "g", [_vi("x")], [_vi("out")]),
                              opset_imports=[helper.make_opsetid("", 17),
                                             helper.make_opsetid("local", 1)],
                              functions=[fn])
    with pytest.raises(UnsupportedOperatorError, match=r"Unique x1 \(node function MyBlock > "
                                                         r"in_function\)"):
        check_tensorrt_operators(model)


def test_target_version_gates_newer_ops():
    node = helper.make_node("GridSample", ["x", "grid"], ["out"], name="crop")
    model = _model([node], [_vi("x", shape=(1, 3, 8, 8)), _vi("grid", shape=(1, 4, 4, 2))],
                   [_vi("out", shape=(1, 3, 4, 4))], opset=16)
    assert check_tensorrt_operators(model).op_counts == {"GridSample": 1}
    with pytest.raises(UnsupportedOperatorError, match=r"GridSample x1 .*needs TensorRT >= 8\.5"):
        check_tensorrt_operators(model, tensorrt_version="8.4")


def test_caveats_are_warnings_not_errors():
    k = helper.make_node("Shape", ["x"], ["k_dyn"], name="k_from_shape")
    topk = helper.make_node("TopK", ["x", "k_dyn"], ["v", "i"], name="topk")
    resize = helper.make_node("Resize", ["x", "", "scales"], ["r"], name="up", mode="cubic")
    cast_after = helper.make_node("Transpose", ["img"], ["img_t"], name="permute_first")
    cast = helper.make_node("Cast", ["img_t"], ["img_f"], to=TensorProto.FLOAT, name="cast")
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [1], [2.0])
    model = _model([k, topk, resize, cast_after, cast],
                   [_vi("x"), _vi("img", TensorProto.UINT8, (1, 4, 4, 3))],
                   [_vi("v"), _vi("i", TensorProto.INT64), _vi("r"), _vi("img_f")],
                   initializers=[scales])
    report = check_tensorrt_operators(model)
    text = " | ".join(report.warnings)
    assert "TopK 'topk': K is computed at run time" in text
    assert "Resize 'up': mode 'cubic'" in text
    assert "uint8 input 'img' feeds Transpose 'permute_first'" in text


def test_uint8_input_cast_first_has_no_warning():
    cast = helper.make_node("Cast", ["img"], ["f"], to=TensorProto.FLOAT, name="cast")
    perm = helper.make_node("Transpose", ["f"], ["out"], perm=[0, 3, 1, 2], name="permute")
    model = _model([cast, perm], [_vi("img", TensorProto.UINT8, (1, 4, 4, 3))],
                   [_vi("out", shape=(1, 3, 4, 4))])
    assert check_tensorrt_operators(model).warnings == []


def test_export_onnx_refuses_a_graph_tensorrt_cannot_import(tmp_path):
    class Dedupe(torch.nn.Module):
        def forward(self, frames):
            return torch.unique(frames.flatten()).to(torch.float32)

    example = torch.zeros(1, 8, 8, 3, dtype=torch.uint8)
    target = tmp_path / "pose.onnx"
    with pytest.raises(UnsupportedOperatorError, match=r"^pose\.onnx: .*Unique x1"):
        export_onnx(Dedupe(), example, target, output_names=("values",), simplify=False)
    assert not target.exists() and not list(tmp_path.glob(".pose.*"))
    # The same graph is fine for ONNX Runtime only.
    export_onnx(Dedupe(), example, target, output_names=("values",), simplify=False,
                check_tensorrt=False)
    assert target.is_file()


def test_docs_list_every_operator():
    doc = (REPO / "docs" / "tensorrt_operators.md").read_text()
    missing = [op for op in SUPPORTED_OPS if f"| {op} |" not in doc]
    missing += [op for op in UNSUPPORTED_OPS if f"`{op}`" not in doc]
    assert not missing, f"docs/tensorrt_operators.md lacks {missing}"


# ----------------------------------------------------------------------------------------------
# Fingerprints (pure functions)
# ----------------------------------------------------------------------------------------------

A100 = {"file": "pose.engine", "tensorrt_version": "10.0.1", "gpu_name": "NVIDIA A100-SXM4-40GB",
        "compute_capability": "8.0", "precision": "fp16",
        "profiles": [{"input": "images", "min": [1, 64, 64, 3], "opt": [8, 64, 64, 3],
                      "max": [16, 64, 64, 3]}],
        # The schema requires every engine's sha256 (these tests never read the file).
        "sha256": "ab" * 32}


def test_fingerprint_match():
    assert trt_backend.check_engine_fingerprint(A100, dict(A100)) == []


def test_fingerprint_other_gpu_architecture_is_refused():
    h100 = {"tensorrt_version": "10.0.1", "gpu_name": "NVIDIA H100 80GB HBM3",
            "compute_capability": "9.0"}
    with pytest.raises(BackendError) as info:
        trt_backend.check_engine_fingerprint(A100, h100)
    assert _one_line(info.value) == (
        "engine pose.engine was built for NVIDIA A100-SXM4-40GB (sm_80) with TensorRT 10.0.1; "
        "this machine has NVIDIA H100 80GB HBM3 (sm_90) with TensorRT 10.0.1 (different GPU "
        "architecture): rebuild with `dlc export --format tensorrt`")


def test_fingerprint_other_tensorrt_version_is_refused():
    machine = {**A100, "tensorrt_version": "10.3.0"}
    with pytest.raises(BackendError, match=r"with TensorRT 10\.3\.0 \(different TensorRT "
                                           r"version\): rebuild with"):
        trt_backend.check_engine_fingerprint(A100, machine)


def test_fingerprint_same_architecture_other_model_warns():
    machine = {**A100, "gpu_name": "NVIDIA A100-SXM4-80GB"}
    warnings = trt_backend.check_engine_fingerprint(A100, machine)
    assert len(warnings) == 1 and "NVIDIA A100-SXM4-80GB" in warnings[0]


def test_select_engine_picks_the_one_for_this_machine():
    sm86 = {**A100, "file": "pose.sm86.engine", "gpu_name": "NVIDIA RTX A6000",
            "compute_capability": "8.6"}
    machine = {"tensorrt_version": "10.0.1", "gpu_name": "NVIDIA RTX A6000",
               "compute_capability": "8.6"}
    assert trt_backend.select_engine([A100, sm86], machine)[0]["file"] == "pose.sm86.engine"
    with pytest.raises(BackendError, match="none of the bundle's 2 engines fits"):
        trt_backend.select_engine([A100, sm86], {**machine, "compute_capability": "7.5"})


def test_profile_lookup():
    assert trt_backend.profile_for(A100, (4, 64, 64, 3)) == 0
    assert trt_backend.profile_for(A100, (32, 64, 64, 3)) is None
    assert trt_backend.profile_for(A100, (4, 72, 64, 3)) is None


# ----------------------------------------------------------------------------------------------
# Profiles, manifest entries
# ----------------------------------------------------------------------------------------------


def test_profiles_are_validated():
    ok = normalize_profiles([{"min": [1, 64, 64, 3], "opt": (4, 64, 64, 3),
                              "max": (8, 128, 128, 3)}])
    assert ok[0]["opt"] == (4, 64, 64, 3)
    with pytest.raises(ProfileError, match="min <= opt <= max"):
        normalize_profiles([{"min": (8, 64, 64, 3), "opt": (4, 64, 64, 3),
                             "max": (8, 64, 64, 3)}])
    with pytest.raises(ProfileError, match=r"\(batch, height, width, 3\)"):
        normalize_profiles([{"min": (1, 3, 64, 64), "opt": (1, 3, 64, 64),
                             "max": (1, 3, 64, 64)}])


def test_default_profiles_come_from_the_manifest(tmp_path):
    dynamic = Bundle.load(make_toy_bundle(tmp_path / "d.bundle", batch=(1, 4, 16)))
    with pytest.raises(ProfileError, match="frame size"):
        default_profiles(dynamic.manifest)
    with pytest.raises(TensorRTBuildError, match="frame size"):  # the builder's own error
        export_tensorrt(make_toy_bundle(tmp_path / "e.bundle", batch=(1, 4, 16)))
    profile = default_profiles(dynamic.manifest, (48, 64))[0]
    assert profile == {"min": (1, 48, 64, 3), "opt": (4, 48, 64, 3), "max": (16, 48, 64, 3)}
    fixed = Bundle.load(make_toy_bundle(tmp_path / "f.bundle", height=32, width=40))
    assert default_profiles(fixed.manifest)[0]["max"] == (64, 32, 40, 3)


def test_add_engine_to_bundle_round_trips(tmp_path):
    bundle_dir = make_toy_bundle(tmp_path / "toy.bundle")
    add_engine_to_bundle(bundle_dir, {**A100, "graph": "pose"})
    add_engine_to_bundle(bundle_dir, {**A100, "graph": "pose", "precision": "fp32"})
    engines = Bundle.load(bundle_dir).manifest.engines
    assert len(engines) == 1 and engines[0]["precision"] == "fp32"
    assert engines[0]["profiles"][0]["max"] == [16, 64, 64, 3]


def _two_input_manifest(tmp_path, m: int = 3):
    """A toy bundle's manifest given a top-down-like pose graph: frames + boxes (B, M, 4)."""
    from dlc_runtime.bundle import GraphSpec, TensorSpec

    manifest = Bundle.load(make_toy_bundle(tmp_path / "td.bundle", batch=(1, 4, 16))).manifest
    frames = TensorSpec("images", "uint8", ["batch", "height", "width", 3])
    manifest.graphs["pose"] = GraphSpec(
        file="pose.onnx", opset=17, inputs=[frames, TensorSpec("boxes", "float32",
                                                               ["batch", m, 4])],
        outputs=[TensorSpec("keypoints", "float32", ["batch", m, 2, 3])])
    manifest.graphs["detector"] = GraphSpec(
        file="detector.onnx", opset=17, inputs=[frames],
        outputs=[TensorSpec("boxes", "float32", ["batch", 32, 4]),
                 TensorSpec("scores", "float32", ["batch", 32])])
    return manifest


def test_two_input_graph_profiles(tmp_path):
    manifest = _two_input_manifest(tmp_path)
    pose = default_profiles(manifest, (48, 64), graph="pose")[0]
    assert pose["max"] == (16, 48, 64, 3)
    # The boxes follow the frames' batch range; M and 4 are fixed.
    assert pose["extra_inputs"] == {"boxes": {"min": (1, 3, 4), "opt": (4, 3, 4),
                                              "max": (16, 3, 4)}}
    assert "extra_inputs" not in default_profiles(manifest, (48, 64), graph="detector")[0]
    with pytest.raises(ProfileError, match="batch sizes must be the frames'"):
        normalize_profiles([{**pose, "extra_inputs": {"boxes": {
            "min": (1, 3, 4), "opt": (2, 3, 4), "max": (16, 3, 4)}}}])
    with pytest.raises(ProfileError, match="min <= opt <= max"):
        normalize_profiles([{**pose, "extra_inputs": {"boxes": {
            "min": (1, 3, 4), "opt": (4, 2, 4), "max": (16, 1, 4)}}}])
    from dlc_runtime.bundle import TensorSpec

    with pytest.raises(ProfileError, match="only its batch may vary"):
        extra_input_profile([TensorSpec("boxes", "float32", ["batch", "m", 4])], pose)


def test_engine_fingerprints_of_both_top_down_graphs(tmp_path, monkeypatch):
    """What add_top_down_engines records: one entry per graph, the pose one with the boxes'
    profile; the runtime picks each graph's engine. (The machine query is faked: no GPU.)"""
    machine = {k: A100[k] for k in ("tensorrt_version", "gpu_name", "compute_capability")}
    monkeypatch.setattr(trt_backend, "machine_fingerprint", lambda index=0: dict(machine))
    manifest = _two_input_manifest(tmp_path)
    bundle_dir = make_toy_bundle(tmp_path / "toy.bundle")
    for graph, file in (("detector", "detector.engine"), ("pose", "pose.engine")):
        profiles = default_profiles(manifest, (48, 64), graph=graph)
        add_engine_to_bundle(bundle_dir, {"file": file, "graph": graph, "sha256": "cd" * 32,
                                          **engine_fingerprint("fp16", profiles)})
    engines = Bundle.load(bundle_dir).manifest.engines  # written to YAML and read back
    assert [e["graph"] for e in engines] == ["detector", "pose"]
    pose = trt_backend.select_engine(engines, machine, "pose")[0]
    assert pose["file"] == "pose.engine"
    assert pose["profiles"][0]["extra_inputs"]["boxes"]["max"] == [16, 3, 4]
    assert trt_backend.profile_for(pose, (4, 48, 64, 3)) == 0
    detector = trt_backend.select_engine(engines, machine, "detector")[0]
    assert detector["file"] == "detector.engine" and "extra_inputs" not in \
        detector["profiles"][0]


# ----------------------------------------------------------------------------------------------
# TensorRT absent: clear errors (forced absent, so this also runs where TensorRT is installed)
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def no_tensorrt(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` -> ImportError


def test_build_without_tensorrt_is_one_clear_line(no_tensorrt, tmp_path):
    profiles = [{"min": (1, 64, 64, 3), "opt": (1, 64, 64, 3), "max": (2, 64, 64, 3)}]
    with pytest.raises(TensorRTBuildError) as info:
        build_engine(tmp_path / "pose.onnx", tmp_path / "pose.engine", profiles=profiles)
    assert _one_line(info.value) == TENSORRT_MISSING
    assert TENSORRT_MISSING == ('TensorRT is not installed: pip install "tensorrt>=8.5,<11" '
                                "(needs an NVIDIA GPU) or use --format onnx")
    bundle_dir = make_toy_bundle(tmp_path / "toy.bundle")
    with pytest.raises(TensorRTBuildError, match="^TensorRT is not installed"):
        export_tensorrt(bundle_dir, frame_size=(48, 64))


def test_backend_without_tensorrt_is_one_clear_line(no_tensorrt, tmp_path):
    assert BACKENDS["tensorrt"] is trt_backend._make_tensorrt
    bundle_dir = make_toy_bundle(tmp_path / "toy.bundle")
    bundle = Bundle.load(bundle_dir)
    # No engine in the manifest: said first, since it is true on any machine.
    with pytest.raises(BackendError, match="has no TensorRT engine for graph 'pose'"):
        make_backend(bundle, "tensorrt", device="cuda")
    add_engine_to_bundle(bundle_dir, {**A100, "graph": "pose"})
    with pytest.raises(BackendError) as info:
        make_backend(Bundle.load(bundle_dir), "tensorrt", device="cuda")
    assert _one_line(info.value) == trt_backend.TENSORRT_MISSING
    with pytest.raises(BackendError, match="runs on an NVIDIA GPU"):
        make_backend(Bundle.load(bundle_dir), "tensorrt", device="cpu")


def test_backend_module_imports_without_tensorrt_torch_or_cuda():
    script = textwrap.dedent("""
        import sys
        BLOCKED = ("torch", "tensorrt", "cuda", "dlc_train", "dlc_export")
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"{name} is blocked")
        sys.meta_path.insert(0, Block())
        from dlc_runtime.backends import BACKENDS, tensorrt_backend
        assert BACKENDS["tensorrt"] is tensorrt_backend._make_tensorrt
        print("OK")
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO),
                                                       os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "OK", proc.stderr[-2000:]


# ----------------------------------------------------------------------------------------------
# Real engines: TensorRT + GPU only (skipped elsewhere; a skip is not a pass)
# ----------------------------------------------------------------------------------------------

needs_tensorrt = pytest.mark.skipif(not HAS_TENSORRT,
                                    reason="TensorRT is not installed (needs an NVIDIA GPU)")


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory, tiny_pose_onnx):
    """A bundle around the tiny exported graph (random weights)."""
    import shutil

    from dlc_runtime.bundle import (BatchRange, GraphSpec, InputSpec, Manifest, TensorSpec,
                                    write_manifest)

    bundle_dir = tmp_path_factory.mktemp("trt_bundle") / "tiny.bundle"
    bundle_dir.mkdir()
    shutil.copy(tiny_pose_onnx, bundle_dir / "pose.onnx")
    write_manifest(bundle_dir, Manifest(
        task="bottom_up", scorer="DLC_tiny", bodyparts=["a", "b", "c"], individuals=["animal"],
        input=InputSpec(batch=BatchRange(1, 4, 8)),
        graphs={"pose": GraphSpec(file="pose.onnx", opset=17,
                                  inputs=[TensorSpec("images", "uint8",
                                                     ["batch", "height", "width", 3])],
                                  outputs=[TensorSpec("keypoints", "float32",
                                                      ["batch", 1, 3, 3])])}))
    return bundle_dir


@pytest.mark.tensorrt
@pytest.mark.gpu
@needs_tensorrt
@pytest.mark.parametrize("precision, tol_px", [("fp32", 0.5), ("fp16", 8.0)])
def test_engine_matches_onnxruntime(tiny_bundle, precision, tol_px, tmp_path):
    import shutil

    from dlc_runtime.backends import OnnxRuntimeBackend

    import tensorrt

    if precision != "fp32" and not hasattr(tensorrt.BuilderFlag, "FP16"):
        pytest.skip(f"TensorRT {tensorrt.__version__} has no weakly typed fp16 builds")
    bundle_dir = tmp_path / "b.bundle"
    shutil.copytree(tiny_bundle, bundle_dir)
    entry = export_tensorrt(bundle_dir, precision=precision, frame_size=(64, 96),
                            timing_cache_path=tmp_path / "timing.cache")
    add_engine_to_bundle(bundle_dir, entry)
    assert (tmp_path / "timing.cache").is_file()
    assert entry["precision"] == precision and entry["profiles"][0]["max"] == [8, 64, 96, 3]

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(11, 64, 96, 3), dtype=np.uint8)  # 11 > max batch 8
    expected = OnnxRuntimeBackend(bundle_dir / "pose.onnx").run(frames)["keypoints"]
    with make_backend(Bundle.load(bundle_dir), "tensorrt", device="cuda") as backend:
        got = backend.run(frames)["keypoints"]
        again = backend.run(frames[:3])["keypoints"]  # smaller batch reuses the buffers
        with pytest.raises(BackendError, match="outside the engine's profile"):
            backend.run(np.zeros((1, 80, 96, 3), np.uint8))
    assert got.shape == expected.shape == (11, 1, 3, 3)
    np.testing.assert_array_equal(again, got[:3])
    px = np.linalg.norm(got[..., :2] - expected[..., :2], axis=-1)
    # fp16 may move an argmax to a neighbouring heatmap cell on random weights: compare the
    # median tightly and allow a stride's worth on the worst keypoint.
    assert np.median(px) <= tol_px / 4 and px.max() <= tol_px, px
    assert np.abs(got[..., 2] - expected[..., 2]).max() < (1e-3 if precision == "fp32" else 0.05)


@pytest.mark.tensorrt
@pytest.mark.gpu
@needs_tensorrt
def test_int8_engine_builds_with_calibration(tiny_bundle, tmp_path):
    import shutil

    import tensorrt

    if not hasattr(tensorrt.BuilderFlag, "INT8"):
        pytest.skip(f"TensorRT {tensorrt.__version__} has no calibrated (implicit) int8")
    bundle_dir = tmp_path / "b.bundle"
    shutil.copytree(tiny_bundle, bundle_dir)
    frames = np.random.default_rng(1).integers(0, 256, size=(16, 64, 96, 3), dtype=np.uint8)
    entry = export_tensorrt(bundle_dir, precision="int8", calibration_frames=frames)
    add_engine_to_bundle(bundle_dir, entry)
    assert (bundle_dir / "pose.int8-calibration.cache").is_file()
    with make_backend(Bundle.load(bundle_dir), "tensorrt", device="cuda") as backend:
        out = backend.run(frames[:4])["keypoints"]
    assert out.shape == (4, 1, 3, 3) and np.isfinite(out).all()


def test_cli_tensorrt_export_without_tensorrt_is_a_one_line_error(tmp_path):
    """`dlc export --format tensorrt` where TensorRT is absent: one line, nothing written."""
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here: the real build tests cover this path")
    except ImportError:
        pass
    import numpy as np
    import torch
    from click.testing import CliRunner

    from dlc_cli.main import cli
    from dlc_train.config import make_pytorch_pose_config, write_config
    from dlc_train.models import PoseModel

    cfg = make_pytorch_pose_config({"bodyparts": ["a", "b"]}, "x.yaml", net_type="resnet_tiny")
    write_config(tmp_path / "pytorch_config.yaml", cfg)
    torch.save({"metadata": {}, "model": PoseModel.build(cfg["model"]).state_dict()},
               tmp_path / "snapshot-001.pt")
    frames = tmp_path / "frames"
    frames.mkdir()
    import cv2

    for i in range(2):
        cv2.imwrite(str(frames / f"{i}.png"), np.random.default_rng(i).integers(
            0, 255, (64, 64, 3), dtype=np.uint8))
    result = CliRunner().invoke(cli, ["export", str(tmp_path / "snapshot-001.pt"), "-o",
                                      str(tmp_path / "t.bundle"), "--frames", str(frames),
                                      "--format", "tensorrt", "--precision", "fp16"])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "TensorRT is not installed" in lines[0]
    assert not (tmp_path / "t.bundle").exists()
