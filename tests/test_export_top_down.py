"""Top-down export: detector graph, crop-inside pose graph, bundle, runtime pipeline.

Random weights everywhere; frames are smoothed noise so heatmap peaks are not tied.
"""
from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from dlc_export.config_view import view_config
from dlc_export.errors import ExportError
from dlc_export.pipeline import export_bundle
from dlc_export.tasks.detector import DetectorGraph, build_detector, eager_detections, matched_iou
from dlc_export.tasks.top_down_graph import TopDownCrop, TopDownPose, eager_top_down, parity_boxes
from dlc_export.tensorrt_ops import check_tensorrt_operators
from dlc_train.config import (
    available_net_types,
    make_pytorch_pose_config,
    read_config_as_dict,
    write_config,
)
from dlc_train.config.detectors import detector_config
from dlc_export.wrappers import NormalizeFrames
from dlc_train.models.loading import build_model_from_config, build_model_from_snapshot
from helpers.frames import textured_frames
from helpers.onnx_graphs import export_detector_onnx, export_graph_onnx
from helpers.trained_like import train_heatmap_peaks
from helpers.variants import tiered

PROJECT = {"multianimalproject": True, "multianimalbodyparts": ["a", "b", "c"],
           "individuals": ["m1", "m2"], "uniquebodyparts": [], "project_path": "/tmp/none"}


pytestmark = pytest.mark.usefixtures("one_thread")



def spread_detector(det, frames: np.ndarray) -> None:
    """Untrained SSDLite scores are all ~0.5 (ties); give it distinct, non-saturated scores."""
    from dlc_train.models.detectors import deeplabcut_detector_input

    torch.manual_seed(0)
    with torch.no_grad():
        for module in det.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight)
        x = deeplabcut_detector_input(torch.from_numpy(frames).permute(0, 3, 1, 2))
        logits = det.model.head(det.model.backbone(det.model.transform(x)[0]))["cls_logits"]
        std = (logits[..., 1] - logits[..., 0]).std()
        for block in det.model.head.classification_head.module_list:
            block[-1].weight.mul_(2.0 / std)


def test_ssdlite_detector_graph_matches_eager(tmp_path):
    frames = textured_frames()
    det = build_detector({"detector": detector_config("ssdlite")})
    spread_detector(det, frames)
    graph = DetectorGraph(det, max_detections=16).eval()
    path = export_detector_onnx(graph, frames, tmp_path / "detector.onnx")
    check_tensorrt_operators(path)  # (d) also runs inside the export
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for f in (frames, np.ascontiguousarray(frames[:1, :100, :150])):  # dynamic frame size
        ref = eager_detections(det, f, 16)
        boxes, scores = sess.run(["boxes", "scores"], {"images": f})
        assert boxes.shape == (len(f), 16, 4) and scores.shape == (len(f), 16)
        assert (ref["scores"] > 0.1).any()
        assert matched_iou(ref["boxes"], ref["scores"], boxes) >= 0.99


def _pose_config(net_type: str, crop: tuple[int, int]) -> dict:
    cfg = make_pytorch_pose_config(PROJECT, "/tmp/none/pytorch_config.yaml", net_type)
    cfg["data"]["inference"]["top_down_crop"] = {"width": crop[0], "height": crop[1]}
    head = cfg["model"]["heads"]["bodypart"]
    if "input_size" in head:  # RTMCC's head is built for its input size
        head["input_size"] = [crop[0], crop[1]]
        head["in_featuremap_size"] = [crop[1] // 32, crop[0] // 32]
    return cfg


def _top_down_net_types() -> list[str]:
    """Every net_type whose config is plain top-down (``method: td``; CTD has its own tests)."""
    return [n for n in available_net_types()
            if make_pytorch_pose_config(PROJECT, "/tmp/none/pytorch_config.yaml",
                                        n).get("method") == "td"]


TOP_DOWN_NET_TYPES = _top_down_net_types()
#: One non-square crop keeps the aspect-ratio widening honest; the rest stay small and square.
NON_SQUARE = {"top_down_resnet_tiny": (64, 80)}


def test_every_top_down_architecture_is_covered():
    expected = {f"top_down_{b}" for b in ("resnet_tiny", "resnet_18", "resnet_34", "resnet_50",
                                          "resnet_101", "resnet_152", "hrnet_w18", "hrnet_w32",
                                          "hrnet_w48", "cspnext_s", "cspnext_m", "cspnext_x")}
    expected |= {"rtmpose_s", "rtmpose_m", "rtmpose_x"}
    assert expected <= set(TOP_DOWN_NET_TYPES)


def _quiet_locref(model) -> None:
    """Untrained locref outputs are huge (1e6 px) and would turn float32 noise into pixels."""
    head = model.heads["bodypart"]
    if hasattr(head, "locref_head"):
        with torch.no_grad():
            for p in head.locref_head.parameters():
                p.mul_(1e-3)


@pytest.mark.parametrize("net_type", tiered(TOP_DOWN_NET_TYPES))
def test_pose_graph_matches_eager_crop(tmp_path, net_type):
    """Every top-down architecture: the crop-inside graph vs DeepLabCut's CPU crop + model."""
    crop = NON_SQUARE.get(net_type, (64, 64))
    cfg = _pose_config(net_type, crop)
    torch.manual_seed(0)
    model = build_model_from_config(cfg).eval()
    _quiet_locref(model)
    view = view_config(cfg, "pytorch_config.yaml").inference
    wrapper = TopDownPose(model, view.crop.width, view.crop.height, view.crop.margin,
                          view.pad_divisors).eval()
    frames = textured_frames()
    boxes = parity_boxes(frames, 4)  # inside, across both corners, flat, tall
    path = export_graph_onnx(wrapper, tmp_path / "pose.onnx", frames, boxes=boxes)
    check_tensorrt_operators(path)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(["keypoints"], {"images": frames, "boxes": boxes})[0]
    ref = eager_top_down(wrapper.pose, frames, boxes, view.crop.width, view.crop.height,
                         view.crop.margin)
    assert got.shape == ref.shape == (2, 4, 3, 3)
    assert np.isfinite(ref).all()
    assert np.abs(got[..., :2] - ref[..., :2]).max() <= 0.5
    assert np.abs(got[..., 2] - ref[..., 2]).max() <= 1e-3


# -- bundle + runtime -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def td_project(tmp_path_factory):
    from dlc_train.synthetic import SyntheticSpec, generate_project

    root = tmp_path_factory.mktemp("td")
    proj = generate_project(root, SyntheticSpec(num_animals=2, num_labeled_frames=2,
                                                num_video_frames=5, width=160, height=120,
                                                body_length=0.2))
    project_cfg = read_config_as_dict(proj.config_path)
    project_cfg["project_path"] = str(proj.project_dir)
    train = proj.project_dir / "dlc-models-pytorch/iteration-0/synthJan1-trainset95shuffle1/train"
    train.mkdir(parents=True)
    cfg = make_pytorch_pose_config(project_cfg, train / "pytorch_config.yaml",
                                   "top_down_resnet_tiny")
    cfg["data"]["inference"]["top_down_crop"] = {"width": 64, "height": 64}
    write_config(train / "pytorch_config.yaml", cfg)
    torch.manual_seed(0)
    model = build_model_from_config(cfg)
    torch.save({"metadata": {"epoch": 5}, "model": model.state_dict()}, train / "snapshot-005.pt")
    # An untrained detector ties all scores; spread them so detector parity is meaningful.
    det = build_detector(cfg)
    spread_detector(det, textured_frames(2, 120, 160))
    torch.save({"metadata": {"epoch": 5}, "model": det.state_dict()},
               train / "snapshot-detector-005.pt")
    return proj, train


def test_bundle_end_to_end(td_project, tmp_path):
    from dlc_runtime import analyze_video
    from dlc_runtime.bundle import Bundle

    proj, train = td_project
    frames = textured_frames(2, 120, 160)
    # The detector snapshot is found beside the pose snapshot, where DeepLabCut writes it.
    result = export_bundle(train / "pytorch_config.yaml", train / "snapshot-005.pt",
                                    tmp_path / "td.bundle", frames=frames)
    assert result.parity.passed, result.parity.summary()
    bundle = Bundle.load(result.bundle_dir)
    assert bundle.task == "top_down" and bundle.individuals == ["mouse1", "mouse2"]
    assert bundle.manifest.decoder["crop"] == {"width": 64, "height": 64}
    assert bundle.manifest.decoder["max_individuals"] == 2
    for name in ("detector.onnx", "pose.onnx"):
        check_tensorrt_operators(result.bundle_dir / name)  # (d)
    # The pose graph has two inputs; the one-input onnxruntime backend runs the detector.
    out = analyze_video(bundle, proj.video_path, tmp_path / "out", batch_size=2,
                        progress=False)
    df = pd.read_hdf(out.h5_path)
    assert len(df) == 5
    assert df.columns.names == ["scorer", "individuals", "bodyparts", "coords"]
    assert list(df.columns.get_level_values("individuals").unique()) == ["mouse1", "mouse2"]
    lik = df.xs("likelihood", level="coords", axis=1).to_numpy()
    xy = df.drop("likelihood", level="coords", axis=1).to_numpy()
    assert np.all((lik == 0) | np.isfinite(xy).reshape(5, -1, 2).all(-1))
    # Multi-animal runs also write DeepLabCut's _full.pickle, with the .h5's keypoints.
    full = pd.read_pickle(out.h5_path.with_name(out.h5_path.stem + "_full.pickle"))
    assert full["metadata"]["all_joints_names"] == bundle.bodyparts
    frames_in = sorted(k for k in full if k.startswith("frame"))
    assert len(frames_in) == 5
    first = np.asarray(full[frames_in[0]]["coordinates"][0])  # (K, N, 2) as DeepLabCut keeps it
    h5_first = df.iloc[0].to_numpy().reshape(2, len(bundle.bodyparts), 3)[..., :2]
    np.testing.assert_allclose(np.nan_to_num(first.transpose(1, 0, 2)), np.nan_to_num(h5_first),
                               atol=1e-4)


# 4 (below the old fixed opt of 8) in the fast tier; 16 in the full one.
@pytest.mark.parametrize("batch", [4, pytest.param(16, marks=pytest.mark.slow)])
def test_batch_sets_the_manifests_batch_range(td_project, tmp_path, batch):
    """--batch N (export_bundle's batch): opt = max = N, as for bottom-up bundles (it used to be
    opt 8 always: batch 4 failed after the whole export, batch 16 wrote opt 8)."""
    from dlc_runtime.bundle import Bundle

    _, train = td_project
    result = export_bundle(train / "pytorch_config.yaml", train / "snapshot-005.pt",
                           tmp_path / "td.bundle", frames=textured_frames(2, 120, 160),
                           batch=batch, simplify=False)
    assert Bundle.load(result.bundle_dir).input.batch.to_dict() == \
        {"min": 1, "opt": batch, "max": batch}


def test_missing_detector_snapshot_is_a_clear_error(td_project, tmp_path):
    import shutil

    _, train = td_project
    alone = tmp_path / "train"
    alone.mkdir()
    for name in ("pytorch_config.yaml", "snapshot-005.pt"):
        shutil.copy(train / name, alone / name)
    with pytest.raises(ExportError, match="snapshot-detector-XXX.pt"):
        export_bundle(alone / "pytorch_config.yaml", alone / "snapshot-005.pt",
                               tmp_path / "x.bundle", frames=textured_frames())
    assert not (tmp_path / "x.bundle").exists()


def test_config_without_detector_is_a_clear_error(td_project, tmp_path):
    _, train = td_project
    cfg = read_config_as_dict(train / "pytorch_config.yaml")
    del cfg["detector"]
    write_config(tmp_path / "pytorch_config.yaml", cfg)
    with pytest.raises(ExportError, match="no 'detector' section"):
        export_bundle(tmp_path / "pytorch_config.yaml", train / "snapshot-005.pt",
                               tmp_path / "x.bundle", frames=textured_frames(),
                               random_detector=True)


def test_input_size_is_refused_with_the_fixed_sizes(td_project, tmp_path):

    _, train = td_project
    with pytest.raises(ExportError) as info:
        export_bundle(train / "pytorch_config.yaml", train / "snapshot-005.pt",
                      tmp_path / "x.bundle", frames=textured_frames(2, 120, 160),
                      input_size=(96, 128))
    msg = str(info.value)
    assert "\n" not in msg
    # It names both fixed sizes and what input_size does for top-down models instead.
    assert "pose network at the 64x64 crop (decoder.crop)" in msg
    assert "detector at 320x320 (decoder.detector_input, resize: stretch)" in msg
    assert "with --format tensorrt it sets the engines' frame size" in msg
    with pytest.raises(ExportError, match="input_size .* and frame_size .* disagree"):
        export_bundle(train / "pytorch_config.yaml", train / "snapshot-005.pt",
                      tmp_path / "x.bundle", frames=textured_frames(2, 120, 160),
                      input_size=(96, 128), frame_size=(120, 160), tensorrt_precision="fp16")
    assert not list(tmp_path.iterdir())


# -- torch artifacts and the runtime's backends ------------------------------------------------

@pytest.fixture(scope="module")
def td_torch_bundle(td_project, tmp_path_factory):
    """A top-down bundle with fp32 torch artifacts of both graphs."""
    _, train = td_project
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("td_torch") / "td.bundle"
    result = export_bundle(train / "pytorch_config.yaml", train / "snapshot-005.pt",
                                    out, frames=textured_frames(4, 120, 160), simplify=False,
                                    torch_precisions=("fp32",))
    return result


def test_torch_artifacts_are_checked_and_listed(td_torch_bundle):
    from dlc_runtime.bundle import Bundle

    folder = td_torch_bundle.bundle_dir
    bundle = Bundle.load(folder)  # checks every listed file's sha256
    graphs = bundle.manifest.graphs
    assert graphs["detector_torch_fp32"].file == "detector.fp32.torchscript.pt"
    assert graphs["pose_torch_fp32"].file == "pose.fp32.torchscript.pt"
    for name, onnx_graph in (("detector_torch_fp32", "detector"), ("pose_torch_fp32", "pose")):
        assert graphs[name].sha256
        assert graphs[name].inputs == graphs[onnx_graph].inputs
        assert graphs[name].outputs == graphs[onnx_graph].outputs
    assert [t.name for t in graphs["pose_torch_fp32"].inputs] == ["images", "boxes"]
    assert td_torch_bundle.manifest.graphs.keys() == graphs.keys()
    report = __import__("json").loads((folder / "parity.torch_fp32.json").read_text())
    assert report["passed"] and report["max_px"] <= 0.5
    assert report["detector_min_matched_iou"] >= 0.99
    assert bundle.manifest.decoder["detector_input"] == {"width": 320, "height": 320,
                                                         "resize": "stretch"}
    assert not list(folder.glob(".*"))


def test_torch_backend_runs_both_graphs_like_onnxruntime(td_torch_bundle):
    from dlc_runtime import BackendError, make_backend
    from dlc_runtime.bundle import Bundle

    bundle = Bundle.load(td_torch_bundle.bundle_dir)
    for n, h, w in [(2, 120, 160), (3, 90, 130)]:  # another batch and frame size
        frames = textured_frames(n, h, w, seed=h)
        boxes = parity_boxes(frames, 2, seed=n)
        with make_backend(bundle, "torch", graph="pose") as pt, \
                make_backend(bundle, "onnxruntime", graph="pose") as ort:
            a = pt.run(frames, boxes=boxes)["keypoints"]
            b = ort.run(frames, boxes=boxes)["keypoints"]
            assert a.shape == b.shape == (n, 2, len(bundle.bodyparts), 3)
            assert np.abs(a[..., :2] - b[..., :2]).max() <= 0.5
            assert np.abs(a[..., 2] - b[..., 2]).max() <= 1e-3
            with pytest.raises(BackendError, match=r"inputs after the frames are \['boxes'\]"):
                ort.run(frames)
        with make_backend(bundle, "torch", graph="detector") as pt, \
                make_backend(bundle, "onnxruntime", graph="detector") as ort:
            a, b = pt.run(frames), ort.run(frames)
            assert a["boxes"].shape == b["boxes"].shape and set(a) == {"boxes", "scores"}
            assert matched_iou(b["boxes"], b["scores"], a["boxes"]) >= 0.99


def test_pipeline_runs_both_graphs_on_the_backend_kind_it_is_given(td_torch_bundle):
    from dlc_runtime import make_backend
    from dlc_runtime.bundle import Bundle
    from dlc_runtime.pipelines import make_pipeline

    bundle = Bundle.load(td_torch_bundle.bundle_dir)
    frames = textured_frames(3, 120, 160, seed=4)
    results = {}
    for kind in ("onnxruntime", "torch"):
        with make_backend(bundle, kind, graph="detector") as detector:
            pipeline = make_pipeline(bundle, detector)
            assert pipeline.pose.made_with[:2] == (kind, "cpu")
            assert pipeline.pose.made_with[2]["graph"] == "pose"
            results[kind] = pipeline(frames).keypoints
            pipeline.close()  # closes the pose backend it opened, not the detector's
            assert pipeline._owned == []
    # A backend made for the pose graph (make_backend's default) is not mistaken for the
    # detector: the pipeline opens the detector beside it.
    with make_backend(bundle, "onnxruntime") as pose_backend:
        pipeline = make_pipeline(bundle, pose_backend)
        assert pipeline.detector.made_with[2]["graph"] == "detector"
        np.testing.assert_array_equal(pipeline(frames).keypoints, results["onnxruntime"])
        pipeline.close()
    a, b = results["onnxruntime"], results["torch"]
    assert a.shape == b.shape == (3, 2, len(bundle.bodyparts), 3)
    assert np.array_equal(np.isnan(a[..., 0]), np.isnan(b[..., 0]))
    found = ~np.isnan(a[..., 0])
    assert np.abs(a[found][:, :2] - b[found][:, :2]).max() <= 0.5


def test_analyze_video_with_the_torch_backend(td_project, td_torch_bundle, tmp_path):
    from dlc_runtime import analyze_video

    proj, _ = td_project
    bundle = td_torch_bundle.bundle_dir
    ort = analyze_video(bundle, proj.video_path, tmp_path / "ort", batch_size=2, progress=False)
    pt = analyze_video(bundle, proj.video_path, tmp_path / "pt", batch_size=2, progress=False,
                       backend="torch")
    a = pd.read_hdf(ort.h5_path).to_numpy().reshape(5, -1, 3)
    b = pd.read_hdf(pt.h5_path).to_numpy().reshape(5, -1, 3)
    assert (a[..., 2] > 0).any()  # some animals were found, so keypoints are compared
    assert np.array_equal(np.isnan(a[..., 0]), np.isnan(b[..., 0]))  # same slots filled
    found = ~np.isnan(a[..., 0])
    assert np.abs(a[found][:, :2] - b[found][:, :2]).max() <= 0.5
    assert np.abs(a[..., 2] - b[..., 2]).max() <= 1e-3
    meta = pd.read_pickle(pt.meta_path)
    assert meta["data"]["dlc-deploy"]["backend"] == "torch-cpu-fp32"


def peaked_pose_snapshot(train, dest, frames: np.ndarray):
    """A copy of the shuffle folder ``train`` whose pose snapshot has real heatmap peaks (see
    ``helpers/trained_like.py``: with untrained weights one keypoint's two best cells differed by 2.5e-7,
    so fp16 picked the other one, 48 px away), trained on the crops the parity check takes."""
    shutil.copytree(train, dest)
    cfg = read_config_as_dict(dest / "pytorch_config.yaml")
    model = build_model_from_snapshot(cfg, dest / "snapshot-005.pt")
    crop = view_config(cfg, dest / "pytorch_config.yaml").inference.crop
    norm = NormalizeFrames()
    crops, _, _ = TopDownCrop(crop.width, crop.height, crop.margin)(
        torch.from_numpy(frames).float().permute(0, 3, 1, 2),
        torch.from_numpy(parity_boxes(frames, 2)))
    train_heatmap_peaks(model, (crops - norm.mean) * norm.scale)
    torch.save({"metadata": {"epoch": 5}, "model": model.state_dict()},
               dest / "snapshot-005.pt")
    return dest


# slow: the fp16 export of a two-graph bundle stays in the fast tier through CTD's
# (tests/test_export_ctd_artifacts.py).
@pytest.mark.slow
def test_fp16_pose_artifact_on_cpu(td_project, tmp_path):
    """fp16 is the pose network's precision (the detector stays fp32), allowed on the CPU as
    for bottom-up bundles."""
    from dlc_runtime import make_backend
    from dlc_runtime.bundle import Bundle

    frames = textured_frames(2, 120, 160)
    train = peaked_pose_snapshot(td_project[1], tmp_path / "train", frames)
    result = export_bundle(train / "pytorch_config.yaml", train / "snapshot-005.pt",
                           tmp_path / "td.bundle", frames=frames, simplify=False,
                           torch_precisions=("fp16",))
    bundle = Bundle.load(result.bundle_dir)
    assert {"detector_torch_fp32", "pose_torch_fp16"} <= set(bundle.manifest.graphs)
    assert "pose_torch_fp32" not in bundle.manifest.graphs
    boxes = parity_boxes(frames, 2)
    with make_backend(bundle, "torch", graph="pose", precision="fp16") as half, \
            make_backend(bundle, "torch", graph="detector", precision="fp16") as det, \
            make_backend(bundle, "onnxruntime", graph="pose") as ort:
        assert half.name == "torch-cpu-fp16" and det.name == "torch-cpu-fp32"
        out = half.run(frames, boxes=boxes)["keypoints"]
        assert out.dtype == np.float32
        ref = ort.run(frames, boxes=boxes)["keypoints"]
        assert np.abs(out[..., :2] - ref[..., :2]).max() <= 0.5
        # The pipeline opens the pose graph with the detector backend's options (precision).
        from dlc_runtime.pipelines import make_pipeline

        pipeline = make_pipeline(bundle, det)
        assert pipeline.backend_name == "torch-cpu-fp32 (detector), torch-cpu-fp16 (pose)"
        pipeline.close()


# -- TensorRT (the real engines need TensorRT and a GPU: skipped elsewhere, never a pass) ------

def test_tensorrt_without_tensorrt_is_one_line_and_writes_nothing(td_project, td_torch_bundle,
                                                                 tmp_path, monkeypatch):
    import sys

    from dlc_export.tensorrt_build import TENSORRT_MISSING
    from dlc_runtime import BackendError, make_backend
    from dlc_runtime.bundle import Bundle

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` -> ImportError
    _, train = td_project
    with pytest.raises(ExportError) as info:
        export_bundle(train / "pytorch_config.yaml", train / "snapshot-005.pt",
                               tmp_path / "x.bundle", frames=textured_frames(2, 120, 160),
                               simplify=False, tensorrt_precision="fp16")
    assert str(info.value) == TENSORRT_MISSING  # said before any graph is exported
    assert not list(tmp_path.iterdir())
    with pytest.raises(ExportError, match="unknown torch precision 'int8'"):
        export_bundle(train / "pytorch_config.yaml", train / "snapshot-005.pt",
                               tmp_path / "x.bundle", frames=textured_frames(2, 120, 160),
                               torch_precisions=("int8",))
    assert not list(tmp_path.iterdir())
    with pytest.raises(BackendError, match="no TensorRT engine for graph 'detector'"):
        make_backend(Bundle.load(td_torch_bundle.bundle_dir), "tensorrt", device="cuda",
                     graph="detector")


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_tensorrt_engines_match_onnxruntime(td_project, tmp_path, precision):
    pytest.importorskip("tensorrt")
    from dlc_runtime import analyze_video
    from dlc_runtime.bundle import Bundle

    proj, train = td_project
    frames = textured_frames(4, 120, 160)
    result = export_bundle(
        train / "pytorch_config.yaml", train / "snapshot-005.pt", tmp_path / "td.bundle",
        frames=frames, tensorrt_precision=precision, input_size=(120, 160),
        calibration_videos=(proj.video_path,) if precision == "int8" else (),
        # int8 of random weights has no meaningful gate: it must build, run and report.
        allow_parity_failure=precision == "int8")
    report = __import__("json").loads(
        (result.bundle_dir / f"parity.tensorrt_{precision}.json").read_text())
    assert report["backend"] == f"tensorrt-{precision}"
    assert report["passed"] or precision == "int8"
    engines = {e["graph"]: e for e in Bundle.load(result.bundle_dir).manifest.engines}
    assert engines["detector"]["file"] == "detector.engine"
    assert engines["pose"]["file"] == "pose.engine"
    profile = engines["pose"]["profiles"][0]
    assert profile["max"][1:] == [120, 160, 3]
    assert profile["extra_inputs"]["boxes"]["max"] == [profile["max"][0], 2, 4]
    assert all(e["precision"] == precision and e["compute_capability"] for e in
               engines.values())
    ort = analyze_video(result.bundle_dir, proj.video_path, tmp_path / "ort", batch_size=2,
                        progress=False)
    trt = analyze_video(result.bundle_dir, proj.video_path, tmp_path / "trt", batch_size=2,
                        progress=False, backend="tensorrt", device="cuda")
    a = pd.read_hdf(ort.h5_path).to_numpy().reshape(5, -1, 3)
    b = pd.read_hdf(trt.h5_path).to_numpy().reshape(5, -1, 3)
    assert b.shape == a.shape and np.isfinite(b[..., 2]).all()
    if precision == "fp32":  # int8 of random weights is only checked to build and run
        assert np.array_equal(np.isnan(a[..., 0]), np.isnan(b[..., 0]))
        found = ~np.isnan(a[..., 0])
        assert np.abs(a[found][:, :2] - b[found][:, :2]).max() <= 0.5


@pytest.mark.gpu
def test_cuda_fp16_torch_artifacts_match_onnxruntime(td_project, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU visible to torch")
    from dlc_runtime import analyze_video

    proj, train = td_project
    result = export_bundle(train / "pytorch_config.yaml", train / "snapshot-005.pt",
                                    tmp_path / "td.bundle", frames=textured_frames(4, 120, 160),
                                    torch_precisions=("fp16",), device="cuda")
    ort = analyze_video(result.bundle_dir, proj.video_path, tmp_path / "ort", batch_size=2,
                        progress=False)
    pt = analyze_video(result.bundle_dir, proj.video_path, tmp_path / "pt", batch_size=2,
                       progress=False, backend="torch", device="cuda")
    assert pd.read_pickle(pt.meta_path)["data"]["dlc-deploy"]["backend"] == \
        "torch-cuda-fp32 (detector), torch-cuda-fp16 (pose)"
    a = pd.read_hdf(ort.h5_path).to_numpy().reshape(5, -1, 3)
    b = pd.read_hdf(pt.h5_path).to_numpy().reshape(5, -1, 3)
    assert np.array_equal(np.isnan(a[..., 0]), np.isnan(b[..., 0]))
    found = ~np.isnan(a[..., 0])
    assert np.abs(a[found][:, :2] - b[found][:, :2]).max() <= 0.5


def test_crop_margin_comes_from_top_down_crop_not_bbox_margin():
    """DeepLabCut's inference runner widens detector boxes by top_down_crop.margin (default 0);
    data.bbox_margin only makes boxes from keypoints."""
    cfg = _pose_config("top_down_resnet_tiny", (64, 80))
    cfg["data"]["bbox_margin"] = 20

    def crop():
        c = view_config(cfg, "pytorch_config.yaml").inference.crop
        return c.width, c.height, c.margin

    assert crop() == (64, 80, 0.0)
    cfg["data"]["inference"]["top_down_crop"]["margin"] = 7
    assert crop() == (64, 80, 7.0)


def test_crop_without_context_is_refused(td_project, tmp_path):
    _, train = td_project
    cfg = read_config_as_dict(train / "pytorch_config.yaml")
    cfg["data"]["inference"]["top_down_crop"]["crop_with_context"] = False
    write_config(tmp_path / "pytorch_config.yaml", cfg)
    with pytest.raises(ExportError, match="crop_with_context: false is not supported"):
        export_bundle(tmp_path / "pytorch_config.yaml", train / "snapshot-005.pt",
                      tmp_path / "x.bundle", frames=textured_frames())
    assert not (tmp_path / "x.bundle").exists()


# slow: CTD's fp16 ONNX test covers the two-graph path in the fast tier.
@pytest.mark.slow
def test_fp16_onnx_pose_graph_on_cpu(td_project, tmp_path):
    """The fp16 ONNX variant: the pose network in half (the detector stays fp32), checked on
    the CPU with the detector's and the pose graph's gates; the runtime runs it by precision."""
    from dlc_runtime import make_backend
    from dlc_runtime.bundle import Bundle
    from dlc_runtime.pipelines import make_pipeline

    frames = textured_frames(2, 120, 160)
    train = peaked_pose_snapshot(td_project[1], tmp_path / "train", frames)
    result = export_bundle(train / "pytorch_config.yaml", train / "snapshot-005.pt",
                           tmp_path / "td.bundle", frames=frames, simplify=False,
                           onnx_precisions=("fp16",))
    report = result.reports["onnx_fp16"]
    assert report.passed and report.details["detector_min_matched_iou"] >= 0.95, \
        report.summary()
    graphs = Bundle.load(result.bundle_dir).manifest.graphs
    assert graphs["pose_onnx_fp16"].file == "pose.fp16.onnx"
    assert "detector_onnx_fp16" not in graphs  # no half network: the fp32 graph serves
    bundle = Bundle.load(result.bundle_dir)
    with make_backend(bundle, "onnxruntime", graph="detector", precision="fp16") as half, \
            make_backend(bundle, "onnxruntime", graph="detector") as full:
        pipelines = make_pipeline(bundle, half), make_pipeline(bundle, full)
        try:
            a, b = (p(frames).keypoints for p in pipelines)
        finally:
            for p in pipelines:
                p.close()
    found = ~np.isnan(b[..., 0])
    assert found.any() and np.array_equal(np.isnan(a[..., 0]), ~found)
    assert np.abs(a[found][:, :2] - b[found][:, :2]).max() <= 0.5
