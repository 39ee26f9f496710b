"""Top-down export: detector graph, crop-inside pose graph, bundle, runtime pipeline.

Random weights everywhere; frames are smoothed noise so heatmap peaks are not tied.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

cv2 = pytest.importorskip("cv2")

from dlc_export.detector import (
    DetectorGraph,
    build_detector,
    eager_detections,
    export_detector_onnx,
    matched_iou,
)
from dlc_export.onnx_export import ExportError
from dlc_export.tensorrt_ops import check_tensorrt_operators
from dlc_export.top_down import (
    TopDownPose,
    crop_settings,
    eager_top_down,
    export_pose_onnx,
    export_top_down_bundle,
    parity_boxes,
)
from dlc_train.config import make_pytorch_pose_config, read_config_as_dict, write_config
from dlc_train.config.detectors import detector_config
from dlc_train.models.loading import build_model_from_config

PROJECT = {"multianimalproject": True, "multianimalbodyparts": ["a", "b", "c"],
           "individuals": ["m1", "m2"], "uniquebodyparts": [], "project_path": "/tmp/none"}


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def textured_frames(n: int = 2, h: int = 120, w: int = 160, seed: int = 0) -> np.ndarray:
    """Upsampled noise: smooth enough to look like an image, varied enough to avoid ties."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 4, w // 4, 3 * n), dtype=np.uint8)
    big = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(big.reshape(h, w, n, 3).transpose(2, 0, 1, 3))


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


@pytest.mark.parametrize("net_type,crop", [
    ("top_down_resnet_tiny", (64, 80)),   # non-square crop
    ("top_down_hrnet_w32", (64, 64)),
    ("rtmpose_s", (64, 64)),
])
def test_pose_graph_matches_eager_crop(tmp_path, net_type, crop):
    cfg = _pose_config(net_type, crop)
    torch.manual_seed(0)
    model = build_model_from_config(cfg).eval()
    head = model.heads["bodypart"]
    if hasattr(head, "locref_head"):
        # Untrained locref outputs are huge (1e6 px) and would turn float32 noise into pixels.
        with torch.no_grad():
            for p in head.locref_head.parameters():
                p.mul_(1e-3)
    w, h, margin = crop_settings(cfg)
    pad = (32, 32) if cfg["data"]["inference"].get("auto_padding") else (1, 1)
    wrapper = TopDownPose(model, w, h, margin, pad).eval()
    frames = textured_frames()
    boxes = parity_boxes(frames, 4)  # inside, across both corners, flat, tall
    path = export_pose_onnx(wrapper, frames, boxes, tmp_path / "pose.onnx")
    check_tensorrt_operators(path)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(["keypoints"], {"images": frames, "boxes": boxes})[0]
    ref = eager_top_down(wrapper.pose, frames, boxes, w, h, margin)
    assert got.shape == (2, 4, 3, 3)
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
    result = export_top_down_bundle(train / "pytorch_config.yaml", train / "snapshot-005.pt",
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


def test_missing_detector_snapshot_is_a_clear_error(td_project, tmp_path):
    import shutil

    _, train = td_project
    alone = tmp_path / "train"
    alone.mkdir()
    for name in ("pytorch_config.yaml", "snapshot-005.pt"):
        shutil.copy(train / name, alone / name)
    with pytest.raises(ExportError, match="snapshot-detector-XXX.pt"):
        export_top_down_bundle(alone / "pytorch_config.yaml", alone / "snapshot-005.pt",
                               tmp_path / "x.bundle", frames=textured_frames())
    assert not (tmp_path / "x.bundle").exists()


def test_config_without_detector_is_a_clear_error(td_project, tmp_path):
    _, train = td_project
    cfg = read_config_as_dict(train / "pytorch_config.yaml")
    del cfg["detector"]
    write_config(tmp_path / "pytorch_config.yaml", cfg)
    with pytest.raises(ExportError, match="no 'detector' section"):
        export_top_down_bundle(tmp_path / "pytorch_config.yaml", train / "snapshot-005.pt",
                               tmp_path / "x.bundle", frames=textured_frames(),
                               random_detector=True)
