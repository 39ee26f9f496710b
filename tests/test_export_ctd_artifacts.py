"""Conditional top-down (CTD) artifacts beyond the ONNX graphs: torch artifacts, fp16 variants
and TensorRT engines of both graphs (the pose graph and the nested conditions bundle's), each
checked against the eager models, listed in both manifests, and run by the runtime's backends.

The CTD project and its shuffles come from ``test_export_ctd`` (its module fixture, rebuilt here).
"""
from __future__ import annotations

import copy
import json

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import torch

from dlc_export import export_bundle
from dlc_export.errors import ExportError
from dlc_train.config import read_config_as_dict
from dlc_train.models.loading import build_model_from_config
from helpers.frames import textured_frames
from test_export_ctd import ctd_project  # noqa: F401  (the module fixture these tests use)

pytestmark = pytest.mark.usefixtures("one_thread")


# -- torch artifacts and TensorRT engines of both graphs ------------------------------------

@pytest.fixture(scope="module")
def ctd_torch_bundle(ctd_project, tmp_path_factory):
    """A CTD bundle with fp32 torch artifacts of both graphs."""

    _, trains = ctd_project
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("ctd_torch") / "ctd.bundle"
    return export_bundle(trains[2] / "pytorch_config.yaml", trains[2] / "snapshot-005.pt", out,
                         frames=textured_frames(2, 120, 160), simplify=False,
                         torch_precisions=("fp32",))


def test_torch_artifacts_of_both_graphs_are_checked_and_listed(ctd_torch_bundle):
    from dlc_runtime.bundle import Bundle

    folder = ctd_torch_bundle.bundle_dir
    bundle = Bundle.load(folder)  # checks every listed file's sha256, the nested ones too
    graphs = bundle.manifest.graphs
    assert graphs["pose_torch_fp32"].file == "pose.fp32.torchscript.pt"
    assert graphs["conditions_torch_fp32"].file == "conditions/pose.fp32.torchscript.pt"
    assert [t.name for t in graphs["pose_torch_fp32"].inputs] == ["images", "conditions"]
    assert graphs["conditions_torch_fp32"].outputs == graphs["conditions"].outputs
    for name in ("pose_torch_fp32", "conditions_torch_fp32"):
        assert graphs[name].sha256 and (folder / graphs[name].file).is_file()
    report = json.loads((folder / "parity.torch_fp32.json").read_text())
    assert report["passed"] and report["max_px"] <= 0.5
    assert report["conditions_parity"] == "conditions/parity.torch_fp32.json"
    nested = json.loads((folder / report["conditions_parity"]).read_text())
    assert nested["passed"] and nested["max_px"] <= 0.5
    assert not list(folder.glob(".*"))


def test_torch_backend_runs_the_ctd_pipeline_like_onnxruntime(ctd_torch_bundle, ctd_project):
    """The user's path: analyze_video(backend="torch") opens the conditions artifact, runs the
    nested bottom-up pipeline on it, then the CTD pose artifact; same keypoints as onnxruntime."""
    from dlc_runtime import analyze_video

    proj, _ = ctd_project
    runs = {kind: analyze_video(ctd_torch_bundle.bundle_dir, proj.video_path,
                                proj.project_dir / f"out-{kind}", batch_size=2,
                                progress=False, backend=kind)
            for kind in ("onnxruntime", "torch")}
    a = pd.read_hdf(runs["onnxruntime"].h5_path).to_numpy()
    b = pd.read_hdf(runs["torch"].h5_path).to_numpy()
    assert a.shape == b.shape and len(a) == 4
    assert np.array_equal(np.isnan(a), np.isnan(b))
    found = ~np.isnan(a)
    assert found.any()  # the conditions model finds animals: the pose graph really ran
    assert np.abs(a[found] - b[found]).max() <= 0.5


def test_nested_artifacts_are_listed_for_the_conditions_graph():
    """The CTD manifest points its conditions graph at the nested bundle's own artifacts of
    every format (built and checked by its export), with paths relative to the CTD bundle."""
    from types import SimpleNamespace

    from dlc_export.formats import OnnxFormat, TensorRTFormat, TorchFormat
    from dlc_runtime.bundle import BatchRange, GraphSpec, InputSpec, Manifest, TensorSpec

    out = [TensorSpec("keypoints", "float32", ["batch", 2, 4, 3])]
    images = [TensorSpec("images", "uint8", ["batch", "height", "width", 3])]

    def manifest(graphs, engines=()):
        return Manifest(task="bottom_up", scorer="s", bodyparts=list("abcd"),
                        individuals=["m1", "m2"], multi_animal=True,
                        input=InputSpec(batch=BatchRange(1, 4, 8)), graphs=graphs,
                        engines=list(engines))

    nested = manifest({"pose": GraphSpec(file="pose.onnx", inputs=images, outputs=out, opset=17),
                       "pose_torch_fp16": GraphSpec(file="pose.fp16.torchscript.pt",
                                                    inputs=images, outputs=out),
                       "pose_onnx_fp16": GraphSpec(file="pose.fp16.onnx", inputs=images,
                                                   outputs=out, opset=17)},
                      [{"file": "pose.engine", "graph": "pose", "precision": "fp16",
                        "gpu_name": "NVIDIA H100", "sha256": "ab"}])
    ctx = SimpleNamespace(manifest=manifest({}))
    for fmt in (OnnxFormat("fp32"), OnnxFormat("fp16"), TorchFormat("fp16"),
                TorchFormat("fp32"), TensorRTFormat("fp16")):
        fmt.link(ctx, nested, "conditions", "conditions")
    graphs = ctx.manifest.graphs
    assert list(graphs) == ["conditions", "conditions_onnx_fp16", "conditions_torch_fp16"]
    assert graphs["conditions"].file == "conditions/pose.onnx"
    assert graphs["conditions_onnx_fp16"].file == "conditions/pose.fp16.onnx"
    assert graphs["conditions_torch_fp16"].file == "conditions/pose.fp16.torchscript.pt"
    assert graphs["conditions_torch_fp16"].outputs == out
    assert ctx.manifest.engines == [
        {"file": "conditions/pose.engine", "graph": "conditions", "precision": "fp16",
         "gpu_name": "NVIDIA H100", "sha256": "ab"}]


def test_half_pose_network_decodes_in_fp32(ctd_project):
    """fp16 artifacts run the CTD network in half but crop, draw conditions and decode in fp32
    (their parity is measured on CUDA: see test_cuda_fp16_artifacts)."""
    from dlc_export.half import HalfPrecisionNetwork
    from dlc_export.tasks.ctd_graph import CondPoseOnCrops

    _, trains = ctd_project
    cfg = read_config_as_dict(trains[2] / "pytorch_config.yaml")
    model = build_model_from_config(cfg).eval()
    half = CondPoseOnCrops(HalfPrecisionNetwork(copy.deepcopy(model)))
    network = {p.dtype for n, p in half.model.named_parameters() if ".predictor." not in n}
    assert network == {torch.float16}
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # converted a copy
    k = int(model.backbone.cond_enc.num_joints)
    crops = torch.randn(2, 3, 64, 64)
    conditions = torch.rand(2, k, 3) * 60
    with torch.no_grad():
        out = half(crops, conditions)
    assert out.dtype == torch.float32 and out.shape == (2, k, 3)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_fp16_artifacts_of_both_graphs(ctd_project, tmp_path, device):
    """fp16 torch artifacts of a CTD bundle, checked and kept with their reports.

    The random-weight conditions model (PAF) assembles one animal differently in fp16 (measured
    on the CPU: 80 px on a detected keypoint; a trained 2-animal PAF model stays within 0.037 px,
    benchmarks/results/export_cpu.json), so its failure is allowed here and its report must say
    so; the CTD pose graph's own fp16 report must pass."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA GPU visible to torch")
    from dlc_runtime import make_backend
    from dlc_runtime.bundle import Bundle

    _, trains = ctd_project
    frames = textured_frames(2, 120, 160)
    result = export_bundle(trains[2] / "pytorch_config.yaml", trains[2] / "snapshot-005.pt",
                           tmp_path / "ctd.bundle", frames=frames, torch_precisions=("fp16",),
                           device=device, simplify=False, allow_parity_failure=True)
    folder = result.bundle_dir
    report = json.loads((folder / "parity.torch_fp16.json").read_text())
    assert report["backend"] == f"torch-torchscript-fp16-{device}" and report["passed"]
    nested = json.loads((folder / "conditions" / "parity.torch_fp16.json").read_text())
    assert nested["backend"] == f"torch-torchscript-fp16-{device}" and nested["passed"] is False
    bundle = Bundle.load(folder)
    assert {"pose_torch_fp16", "conditions_torch_fp16"} <= set(bundle.manifest.graphs)
    with make_backend(bundle, "torch", device=device, graph="conditions",
                      precision="fp16") as conditions:
        assert conditions.name == f"torch-{device}-fp16"
        assert set(conditions.run(frames)) == {o.name for o in
                                               bundle.graph("conditions").outputs}


def test_tensorrt_without_tensorrt_is_one_line_and_writes_nothing(ctd_project, ctd_torch_bundle,
                                                                 tmp_path, monkeypatch):
    import sys

    from dlc_export.tensorrt_build import TENSORRT_MISSING
    from dlc_runtime import BackendError, make_backend
    from dlc_runtime.bundle import Bundle

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` -> ImportError
    _, trains = ctd_project
    with pytest.raises(ExportError) as info:
        export_bundle(trains[2] / "pytorch_config.yaml", trains[2] / "snapshot-005.pt",
                          tmp_path / "x.bundle", frames=textured_frames(2, 120, 160),
                          tensorrt_precision="fp16")
    assert str(info.value) == TENSORRT_MISSING  # said before any graph is exported
    assert not list(tmp_path.iterdir())
    with pytest.raises(BackendError, match="no TensorRT engine for graph 'conditions'"):
        make_backend(Bundle.load(ctd_torch_bundle.bundle_dir), "tensorrt", device="cuda",
                     graph="conditions")


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_tensorrt_engines_of_both_graphs(ctd_project, tmp_path, precision):
    pytest.importorskip("tensorrt")
    from dlc_runtime import analyze_video
    from dlc_runtime.bundle import Bundle

    proj, trains = ctd_project
    result = export_bundle(
        trains[2] / "pytorch_config.yaml", trains[2] / "snapshot-005.pt",
        tmp_path / "ctd.bundle", frames=textured_frames(4, 120, 160),
        tensorrt_precision=precision, frame_size=(120, 160),
        calibration_videos=(proj.video_path,) if precision == "int8" else (),
        # int8 of random weights has no meaningful gate: it must build, run and report.
        allow_parity_failure=precision == "int8")
    report = json.loads((result.bundle_dir / f"parity.tensorrt_{precision}.json").read_text())
    assert report["backend"] == f"tensorrt-{precision}" and (report["passed"] or
                                                               precision == "int8")
    engines = {e["graph"]: e for e in Bundle.load(result.bundle_dir).manifest.engines}
    assert engines["conditions"]["file"] == "conditions/pose.engine"
    assert engines["pose"]["file"] == "pose.engine"
    profile = engines["pose"]["profiles"][0]
    assert profile["max"][1:] == [120, 160, 3]
    assert profile["extra_inputs"]["conditions"]["max"] == [profile["max"][0], 2, 4, 3]
    ort = analyze_video(result.bundle_dir, proj.video_path, tmp_path / "ort", batch_size=2,
                        progress=False)
    trt = analyze_video(result.bundle_dir, proj.video_path, tmp_path / "trt", batch_size=2,
                        progress=False, backend="tensorrt", device="cuda")
    a, b = pd.read_hdf(ort.h5_path).to_numpy(), pd.read_hdf(trt.h5_path).to_numpy()
    assert np.array_equal(np.isnan(a), np.isnan(b))
    if precision == "fp32":
        found = ~np.isnan(a)
        assert np.abs(a[found] - b[found]).max() <= 0.5


def test_fp16_onnx_graphs_of_both_bundles(ctd_project, tmp_path):
    """The fp16 ONNX variant of a CTD bundle: its pose graph and the nested conditions
    bundle's, each checked (the random-weight PAF conditions model may assemble differently in
    half: allowed, and its report says so), listed for both graphs."""
    from dlc_runtime.bundle import Bundle

    _, trains = ctd_project
    result = export_bundle(trains[2] / "pytorch_config.yaml", trains[2] / "snapshot-005.pt",
                           tmp_path / "ctd.bundle", frames=textured_frames(2, 120, 160),
                           onnx_precisions=("fp16",), simplify=False, allow_parity_failure=True)
    report = json.loads((result.bundle_dir / "parity.onnx_fp16.json").read_text())
    assert report["passed"] and report["backend"] == "onnxruntime-cpu-fp16"
    assert report["conditions_parity"] == "conditions/parity.onnx_fp16.json"
    assert (result.bundle_dir / report["conditions_parity"]).is_file()
    graphs = Bundle.load(result.bundle_dir).manifest.graphs
    assert graphs["pose_onnx_fp16"].file == "pose.fp16.onnx"
    assert graphs["conditions_onnx_fp16"].file == "conditions/pose.fp16.onnx"
