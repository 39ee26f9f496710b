"""Faster R-CNN detector export: one graph (dynamic batch and frame size) vs the eager model.

Both DeepLabCut variants, random weights spread so scores are distinct (untrained heads give
near-equal scores, whose ties would make the comparison arbitrary). For CPU speed the configs
resize to a short side of 128 (DeepLabCut: 800) and keep fewer RPN proposals (150 per level
before NMS, 32 after; DeepLabCut: 1000 / 1000): the graph's structure does not depend on them.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

import onnxruntime as ort

from test_detectors import calibrate_fasterrcnn_scores

from dlc_export.tasks.detector import DetectorGraph, build_detector, eager_detections, matched_iou
from helpers.onnx_graphs import export_detector_onnx
from dlc_export.tensorrt_ops import check_tensorrt_operators
from dlc_train.config import make_pytorch_pose_config, read_config_as_dict, write_config
from dlc_train.config.detectors import detector_config
from dlc_train.models.detectors import FasterRCNN, deeplabcut_detector_input
from helpers.frames import textured_frames

VARIANTS = ("fasterrcnn_mobilenet_v3_large_fpn", "fasterrcnn_resnet50_fpn_v2")
#: Small-input settings (see the module docstring).
FAST = {"min_size": 128, "max_size": 213, "rpn_pre_nms_top_n_test": 150,
        "rpn_post_nms_top_n_test": 32}


pytestmark = pytest.mark.usefixtures("one_thread")



def fast_detector_section(variant: str) -> dict:
    section = detector_config(variant)
    section["model"].update(FAST)
    return section


def spread_fasterrcnn(det: FasterRCNN, frames: np.ndarray, seed: int = 0) -> None:
    """Random weights with spread (fan-in scaled), then the classifier calibrated on these
    frames' proposals so foreground scores are distinct and some exceed 0.1."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in det.named_parameters():
            if p.ndim > 1:
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p[0].numel()))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    calibrate_fasterrcnn_scores(
        det, deeplabcut_detector_input(torch.from_numpy(frames).permute(0, 3, 1, 2)))


# The ResNet-50 FPN variant is the full-size case: 8 s to build and export, so the full tier's.
@pytest.fixture(scope="module", params=[VARIANTS[0],
                                        pytest.param(VARIANTS[1], marks=pytest.mark.slow)])
def exported(request, tmp_path_factory):
    """(detector, path of its exported graph), exported once per variant from 2 x 120 x 160."""
    torch.set_num_threads(1)
    frames = textured_frames()
    det = build_detector({"detector": fast_detector_section(request.param)})
    spread_fasterrcnn(det, frames)
    graph = DetectorGraph(det, max_detections=16).eval()
    path = export_detector_onnx(graph, frames, tmp_path_factory.mktemp("frcnn") / "detector.onnx")
    return det, path


def test_graph_matches_eager_across_sizes_and_batches(exported):
    det, path = exported
    check_tensorrt_operators(path)  # also ran inside the export
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    cases = [textured_frames(),                                   # batch 2, the export size
             np.ascontiguousarray(textured_frames()[:1, :100, :150]),  # batch 1, smaller
             textured_frames(2, 96, 200, seed=3)]                  # batch 2, wide: max_size binds
    for frames in cases:
        ref = eager_detections(det, frames, 16)
        boxes, scores = sess.run(["boxes", "scores"], {"images": frames})
        assert boxes.shape == (len(frames), 16, 4) and scores.shape == (len(frames), 16)
        for rs in ref["scores"]:
            strong = rs[rs > 0.1]
            assert len(strong) >= 2 and len(np.unique(strong)) == len(strong)  # not vacuous
        assert matched_iou(ref["boxes"], ref["scores"], boxes) >= 0.99
        np.testing.assert_allclose(scores, ref["scores"], atol=2e-3)  # float noise only
        # Boxes are in frame pixels of each size (not of the export example's).
        assert boxes[..., 2].max() <= frames.shape[2] + 1e-3
        assert boxes[..., 3].max() <= frames.shape[1] + 1e-3


# -- top-down bundle with a Faster R-CNN detector -------------------------------------------

@pytest.mark.slow  # 10 s; the SSDLite top-down bundle runs end to end in the fast tier
def test_top_down_bundle_with_fasterrcnn(tmp_path):
    from dlc_export import export_bundle
    from dlc_runtime import analyze_video
    from dlc_runtime.bundle import Bundle
    from dlc_train.models.loading import build_model_from_config
    from dlc_train.synthetic import SyntheticSpec, generate_project

    proj = generate_project(tmp_path / "proj", SyntheticSpec(
        num_animals=2, num_labeled_frames=2, num_video_frames=3, width=160, height=120,
        body_length=0.2))
    project_cfg = read_config_as_dict(proj.config_path)
    project_cfg["project_path"] = str(proj.project_dir)
    train = proj.project_dir / "dlc-models-pytorch/iteration-0/synthJan1-trainset95shuffle1/train"
    train.mkdir(parents=True)
    variant = VARIANTS[0]
    cfg = make_pytorch_pose_config(project_cfg, train / "pytorch_config.yaml",
                                   "top_down_resnet_tiny",
                                   detector_type=variant)
    assert cfg["detector"]["model"]["variant"] == variant
    cfg["detector"]["model"].update(FAST)
    cfg["data"]["inference"]["top_down_crop"] = {"width": 64, "height": 64}
    write_config(train / "pytorch_config.yaml", cfg)
    torch.manual_seed(0)
    model = build_model_from_config(cfg)
    torch.save({"metadata": {"epoch": 5}, "model": model.state_dict()}, train / "snapshot-005.pt")
    frames = textured_frames(2, 120, 160)
    det = build_detector(cfg)
    spread_fasterrcnn(det, frames)
    torch.save({"metadata": {"epoch": 5}, "model": det.state_dict()},
               train / "snapshot-detector-005.pt")

    result = export_bundle(train / "pytorch_config.yaml", train / "snapshot-005.pt",
                           tmp_path / "td.bundle", frames=frames)  # onnxslim too
    assert result.parity.passed, result.parity.summary()
    bundle = Bundle.load(result.bundle_dir)
    assert bundle.task == "top_down"
    assert result.manifest.source["detector_type"] == "FasterRCNN"
    check_tensorrt_operators(result.bundle_dir / "detector.onnx")
    # The bundled detector graph is the one that matched eager on these frames.
    sess = ort.InferenceSession(str(result.bundle_dir / "detector.onnx"),
                                providers=["CPUExecutionProvider"])
    assert result.manifest.decoder["detector_input"] == {"width": 213, "height": 128,
                                                         "resize": "short_side"}
    ref = eager_detections(det, frames, result.manifest.decoder["max_detections"])
    boxes, _ = sess.run(["boxes", "scores"], {"images": frames})
    assert (ref["scores"] > 0.1).any()
    assert matched_iou(ref["boxes"], ref["scores"], boxes) >= 0.99
    # The runtime runs it like any detector graph (video frames: batches of 2, then 1).
    out = analyze_video(bundle, proj.video_path, tmp_path / "out", batch_size=2,
                        progress=False)
    df = pd.read_hdf(out.h5_path)
    assert len(df) == 3
    lik = df.xs("likelihood", level="coords", axis=1).to_numpy()
    assert (lik > 0).any()  # the detector's boxes reached the pose graph
