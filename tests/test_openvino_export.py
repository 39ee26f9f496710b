"""``--format openvino``: bf16 and int8 variants written, checked twice (the task's harness vs
PyTorch, and vs the fp32 graph on the detected keypoints: median and p95) and enforced at
export and at run time.

The bottom-up models have clear heatmap peaks on the parity frames (``helpers/
openvino_models.py``), so the checks measure the precision, not ties between flat cells; an
untrained model shows the gate failing. int8 calibrates on a video of similar frames.
bf16 tests need a CPU with bf16 units (this machine has them); elsewhere they skip and the
refusal test still runs. The CTD int8 export is in the slow tier.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from dlc_export import ExportError, export_bundle
from dlc_export.errors import ParityError
from dlc_runtime import BackendError, Bundle, make_backend
from helpers.cli import invoke, one_error_line
from helpers.frames import textured_frames
from helpers.openvino_models import frames_video, peaked_shuffle
from helpers.shuffles import write_shuffle
# The CTD project (bottom-up conditions model and CTD model) as its export tests build it.
from test_export_ctd import ctd_project  # noqa: F401 (fixture)

ov = pytest.importorskip("openvino", reason="the openvino extra is not installed")
pytestmark = pytest.mark.usefixtures("one_thread")

from dlc_export.formats.openvino import AGREEMENT_GATE  # noqa: E402 (after the skip)
from dlc_runtime.backends.openvino_backend import cpu_has_bf16  # noqa: E402

HAS_BF16 = cpu_has_bf16(ov.Core())
needs_bf16 = pytest.mark.skipif(not HAS_BF16, reason="this CPU has no bf16 units")


def _frames() -> np.ndarray:
    return textured_frames(4, 64, 96)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ov-export")
    frames = _frames()
    shuffle = peaked_shuffle(folder / "train", frames)
    video = frames_video(folder / "calibration.avi",
                         np.concatenate([frames, textured_frames(12, 64, 96, seed=5)]))
    return shuffle, frames, video


@pytest.fixture(scope="module")
def exported(made, tmp_path_factory):
    shuffle, frames, video = made
    precisions = ("fp32", "bf16", "int8") if HAS_BF16 else ("fp32", "int8")
    return export_bundle(shuffle.config_path, shuffle.snapshot,
                         tmp_path_factory.mktemp("ov-bundle") / "b.bundle", frames=frames,
                         simplify=False, openvino_precisions=precisions,
                         calibration_videos=(video,))


def _report(bundle_dir, name):
    return json.loads((bundle_dir / name).read_text())


def test_int8_ir_is_written_checked_and_listed(exported, made):
    _, frames, _ = made
    bundle = Bundle.load(exported.bundle_dir)
    entry = bundle.graph("pose_openvino_int8")
    assert entry.file == "pose.int8.xml" and entry.outputs == bundle.graph("pose").outputs
    assert (exported.bundle_dir / "pose.int8.bin").is_file()
    harness = exported.reports["openvino_int8"]
    assert harness.passed and harness.backend == "openvino-cpu-int8", harness.summary()
    assert _report(exported.bundle_dir, "parity.openvino_int8.json")["passed"]
    versus = _report(exported.bundle_dir, "parity.openvino_int8.vs_fp32.json")
    assert versus["passed"] and versus["min_likelihood"] == 0.6 and versus["keypoints"] > 0
    assert versus["median_px"] <= AGREEMENT_GATE["median_px"]
    assert versus["p95_px"] <= AGREEMENT_GATE["p95_px"]
    # The runtime runs it, with int8 convolutions, within the gate of the fp32 graph.
    with make_backend(bundle, "openvino", precision="int8") as int8, \
            make_backend(bundle, "onnxruntime") as fp32:
        assert int8.name == "openvino-cpu-int8"
        layers = {(op.get_rt_info()["layerType"].astype(str),
                   op.get_rt_info()["runtimePrecision"].astype(str))
                  for op in int8.compiled.get_runtime_model().get_ops()}
        assert {("Convolution", "u8"), ("Convolution", "i8")} & layers, layers
        got, ref = int8.run(frames)["keypoints"], fp32.run(frames)["keypoints"]
    assert np.median(np.linalg.norm(got[..., :2] - ref[..., :2], axis=-1)) \
        <= AGREEMENT_GATE["median_px"]


@needs_bf16
def test_bf16_is_listed_on_the_fp32_graph_and_checked(exported, made):
    _, frames, _ = made
    bundle = Bundle.load(exported.bundle_dir)
    assert bundle.graph("pose_openvino_bf16").file == "pose.onnx"
    assert exported.reports["openvino_bf16"].passed
    versus = _report(exported.bundle_dir, "parity.openvino_bf16.vs_fp32.json")
    assert versus["passed"] and versus["max_px"] <= 0.05, versus  # peaks this clear: ~0.005
    with make_backend(bundle, "openvino", precision="bf16") as bf16:
        assert bf16.name == "openvino-cpu-bf16" and bf16.runs_bf16
        layers = {op.get_rt_info()["runtimePrecision"].astype(str)
                  for op in bf16.compiled.get_runtime_model().get_ops()
                  if op.get_rt_info()["layerType"].astype(str) == "Convolution"}
        assert layers == {"bf16"}
        assert bf16.run(frames)["keypoints"].dtype == np.float32


def test_fp32_check_is_written(exported):
    report = _report(exported.bundle_dir, "parity.openvino_fp32.json")
    assert report["passed"] and report["max_px"] <= 0.01 and \
        report["backend"] == "openvino-cpu-fp32"


def test_runtime_refuses_unchecked_or_failed_precisions(exported, made, tmp_path):
    _, frames, _ = made
    copy = tmp_path / "copy.bundle"
    shutil.copytree(exported.bundle_dir, copy)
    versus = copy / "parity.openvino_int8.vs_fp32.json"
    data = json.loads(versus.read_text())
    versus.unlink()
    with pytest.raises(BackendError, match="never checked against fp32; export it with `dlc "
                                           "export --format openvino --precision int8`"):
        make_backend(Bundle.load(copy), "openvino", precision="int8")
    versus.write_text(json.dumps({**data, "passed": False}))
    with pytest.raises(BackendError, match="the OpenVINO int8 check failed .*--allow-parity-"
                                           "failure: pass require_parity=False"):
        make_backend(Bundle.load(copy), "openvino", precision="int8")
    with make_backend(Bundle.load(copy), "openvino", precision="int8",
                      require_parity=False) as forced:
        assert forced.run(frames[:1])["keypoints"].shape == (1, 1, 4, 3)
    # Weights replaced after the export: the xml's record of them refuses the run.
    weights = copy / "pose.int8.bin"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(BackendError, match="pose.int8.bin: missing, or its sha256 does not"):
        make_backend(Bundle.load(copy), "openvino", precision="int8", require_parity=False)


def test_the_gate_fails_an_export_that_moves_keypoints(made, tmp_path):
    """Untrained weights: flat heatmaps, where int8 moves argmax cells; nothing is written."""
    _, frames, video = made
    shuffle = write_shuffle(tmp_path / "train", {"bodyparts": ["a", "b", "c"],
                                                 "multianimalproject": False})
    out = tmp_path / "b.bundle"
    with pytest.raises(ParityError, match="OpenVINO int8 vs fp32: all keypoints .* the bundle "
                                          "was not written"):
        export_bundle(shuffle.config_path, shuffle.snapshot, out, frames=frames,
                      simplify=False, openvino_precisions=("int8",), calibration_videos=(video,))
    assert not out.exists()
    kept = export_bundle(shuffle.config_path, shuffle.snapshot, out, frames=frames,
                         simplify=False, openvino_precisions=("int8",),
                         calibration_videos=(video,), allow_parity_failure=True)
    assert not _report(kept.bundle_dir, "parity.openvino_int8.vs_fp32.json")["passed"]
    with pytest.raises(BackendError, match="check failed"):
        make_backend(Bundle.load(kept.bundle_dir), "openvino", precision="int8")


def test_one_line_refusals_before_any_work(made, tmp_path, monkeypatch):
    shuffle, frames, _ = made
    out = tmp_path / "b.bundle"
    with pytest.raises(ExportError, match="OpenVINO int8 calibrates on frames of your videos: "
                                          "pass --calibration-video"):
        export_bundle(shuffle.config_path, shuffle.snapshot, out, frames=frames,
                      openvino_precisions=("int8",))
    with pytest.raises(ExportError, match="unknown OpenVINO precision 'fp16'"):
        export_bundle(shuffle.config_path, shuffle.snapshot, out, frames=frames,
                      openvino_precisions=("fp16",))
    import dlc_export.formats.openvino_int8 as openvino_tools

    monkeypatch.setattr(openvino_tools, "cpu_has_bf16", lambda core: False)
    with pytest.raises(ExportError, match="this CPU has no bf16 units"):
        export_bundle(shuffle.config_path, shuffle.snapshot, out, frames=frames,
                      openvino_precisions=("bf16",))
    monkeypatch.setitem(__import__("sys").modules, "openvino", None)
    with pytest.raises(ExportError, match=r"pip install 'dlc-deploy\[openvino\]'"):
        export_bundle(shuffle.config_path, shuffle.snapshot, out, frames=frames,
                      openvino_precisions=("fp32",))
    assert not out.exists() and not list(tmp_path.iterdir())


def test_cli_export_and_analyze_int8(made, tmp_path):
    import pandas as pd

    shuffle, frames, video = made
    out = tmp_path / "cli.bundle"
    res = invoke(["export", shuffle.snapshot, "-o", out, "--frames", video, "--format",
                  "openvino", "--precision", "int8", "--calibration-video", video])
    assert res.exit_code == 0, res.output
    assert (out / "parity.openvino_int8.json").is_file() and (out / "pose.int8.xml").is_file()
    res = invoke(["analyze", out, video, "--backend", "openvino", "--precision", "int8",
                  "--dest", tmp_path, "--no-progress"])
    assert res.exit_code == 0, res.output
    meta = pd.read_pickle(next(tmp_path.glob("*_meta.pickle")))
    assert meta["data"]["dlc-deploy"]["backend"] == "openvino-cpu-int8"
    res = invoke(["analyze", out, video, "--backend", "openvino", "--precision", "bf16",
                  "--dest", tmp_path / "x"])
    one_error_line(res, "no OpenVINO bf16 graph")


# slow: int8 export and its gate stay in the fast tier through the bottom-up tests.
@pytest.mark.slow
def test_top_down_int8_quantizes_the_pose_graph_only(tmp_path):
    """The pose graph calibrates on the boxes the bundle's detector finds; the detector stays
    fp32 beside it (as in every reduced-precision format)."""
    import torch

    from dlc_runtime.pipelines import make_pipeline
    from dlc_train.config import make_pytorch_pose_config, write_config
    from dlc_train.models.loading import build_model_from_config
    from test_export_top_down import PROJECT  # the same multi-animal project

    train = tmp_path / "train"
    train.mkdir()
    cfg = make_pytorch_pose_config(PROJECT, train / "pytorch_config.yaml",
                                   "top_down_resnet_tiny")
    cfg["data"]["inference"]["top_down_crop"] = {"width": 64, "height": 64}
    write_config(train / "pytorch_config.yaml", cfg)
    torch.manual_seed(0)
    torch.save({"metadata": {}, "model": build_model_from_config(cfg).state_dict()},
               train / "snapshot-005.pt")
    frames = textured_frames(2, 120, 160)
    video = frames_video(tmp_path / "v.avi", textured_frames(6, 120, 160, seed=2))
    result = export_bundle(train / "pytorch_config.yaml", train / "snapshot-005.pt",
                           tmp_path / "td.bundle", frames=frames, simplify=False,
                           random_detector=True, openvino_precisions=("int8",),
                           calibration_videos=(video,), allow_parity_failure=True)
    bundle = Bundle.load(result.bundle_dir)
    assert "pose_openvino_int8" in bundle.manifest.graphs
    assert "detector_openvino_int8" not in bundle.manifest.graphs
    with make_backend(bundle, "openvino", graph="detector", precision="int8",
                      require_parity=False) as detector:
        pipeline = make_pipeline(bundle, detector)
        try:
            assert detector.name == "openvino-cpu-fp32"
            assert pipeline.pose.name == "openvino-cpu-int8"
            assert pipeline(frames).keypoints.shape[:2] == (2, 2)
        finally:
            pipeline.close()


@pytest.mark.slow  # a CTD export with two int8 graphs: ~10 s on 2 cores
def test_ctd_int8_lists_the_nested_conditions_graph(ctd_project, tmp_path):  # noqa: F811
    """The nested bottom-up conditions bundle gets its own int8 IR and reports; the CTD
    manifest lists it under ``conditions`` and the pipeline runs both graphs in int8."""
    from dlc_runtime.pipelines import make_pipeline

    _, trains = ctd_project
    frames = textured_frames(2, 120, 160)
    video = frames_video(tmp_path / "v.avi", textured_frames(6, 120, 160, seed=4))
    result = export_bundle(trains[2] / "pytorch_config.yaml", trains[2] / "snapshot-005.pt",
                           tmp_path / "ctd.bundle", frames=frames, simplify=False,
                           openvino_precisions=("int8",), calibration_videos=(video,),
                           allow_parity_failure=True)
    bundle = Bundle.load(result.bundle_dir)
    assert bundle.graph("conditions_openvino_int8").file == "conditions/pose.int8.xml"
    assert bundle.graph("pose_openvino_int8").file == "pose.int8.xml"
    nested = result.bundle_dir / "conditions"
    assert {"parity.openvino_int8.json", "parity.openvino_int8.vs_fp32.json"} <= \
        {p.name for p in nested.iterdir()}
    with make_backend(bundle, "openvino", graph="conditions", precision="int8",
                      require_parity=False) as conditions:
        pipeline = make_pipeline(bundle, conditions)
        try:
            assert conditions.name == pipeline.pose.name == "openvino-cpu-int8"
            assert pipeline(frames).keypoints.shape[:2] == (2, 2)
        finally:
            pipeline.close()


def test_a_graph_without_a_network_is_not_called_int8(tmp_path):
    """Only the network (``/model/`` nodes, not its predictors) is quantized; a graph with
    nothing of it left to quantize is refused rather than written as an 'int8' fp32 IR."""
    from dlc_export.formats.openvino_int8 import calibration_items, quantize_to_ir
    from dlc_runtime.testing import make_toy_bundle

    bundle = make_toy_bundle(tmp_path / "toy.bundle")
    items = calibration_items(["images"], textured_frames(4, 48, 64))
    assert len(items) == 4 and items[0]["images"].shape == (1, 48, 64, 3)
    with pytest.raises(ExportError, match="quantized no layer"):
        quantize_to_ir(bundle / "pose.onnx", tmp_path / "x.xml", items)
    assert not (tmp_path / "x.xml").exists()
    with pytest.raises(ExportError, match=r"no calibration data for the graph's inputs \['boxes'"):
        calibration_items(["images", "boxes"], textured_frames(2, 48, 64))
