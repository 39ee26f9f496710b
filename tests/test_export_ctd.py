"""Conditional top-down (CTD) export: the pose graph (box from conditions, crop, conditions in crop
pixels, model, map back) vs DeepLabCut's CPU steps, the runtime's choice of conditions, and a
bundle with its nested bottom-up conditions bundle through ``analyze_video``.

Random weights everywhere (seeded); frames are smoothed noise so heatmap peaks are not tied.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import onnxruntime as ort

from dlc_export import export_bundle
from dlc_export.config_view import view_config
from dlc_export.tasks.ctd_graph import (
    CondTopDownPose,
    ContextFreeCrop,
    condition_boxes,
    ctd_crop_settings,
    deeplabcut_condition_box,
    deeplabcut_ctd_crop,
    eager_ctd,
    parity_conditions,
)
from dlc_export.tasks.top_down_graph import TopDownCrop
from dlc_export.tensorrt_ops import check_tensorrt_operators
from dlc_runtime.pipelines.ctd import condition_mask, select_conditions
from dlc_train.config import (
    available_net_types,
    make_pytorch_pose_config,
    read_config_as_dict,
    write_config,
)
from dlc_train.data.dlcloader import DLCLoader
from dlc_train.models.heads.rtmcc import RTMCCHead
from dlc_train.models.loading import build_model_from_config
from helpers.frames import textured_frames
from helpers.onnx_graphs import export_graph_onnx
from helpers.variants import tiered

PROJECT = {"multianimalproject": True, "multianimalbodyparts": ["a", "b", "c", "d"],
           "individuals": ["m1", "m2", "m3"], "uniquebodyparts": [], "project_path": "/tmp/none"}


pytestmark = pytest.mark.usefixtures("one_thread")



def ctd_config(net_type: str, width: int = 64, height: int = 64, project: dict = PROJECT,
               path: str = "/tmp/none/pytorch_config.yaml", **kwargs) -> dict:
    """The net_type's config rewritten for a small crop (CTD backbones are built for it)."""
    cfg = make_pytorch_pose_config(project, path, net_type, **kwargs)
    if cfg["model"]["heads"]["bodypart"]["type"] == "RTMCCHead":
        RTMCCHead.update_input_size(cfg, (width, height))
    for split in ("inference", "train"):
        cfg["data"][split]["top_down_crop"].update(width=width, height=height)
    cfg["model"]["backbone"]["img_size"] = [height, width]
    return cfg


def _ctd_net_types() -> list[str]:
    return [n for n in available_net_types()
            if make_pytorch_pose_config(PROJECT, "/tmp/none/pytorch_config.yaml",
                                        n).get("method") == "ctd"]


CTD_NET_TYPES = _ctd_net_types()


def test_every_ctd_architecture_is_covered():
    assert set(CTD_NET_TYPES) == {"ctd_coam_w32", "ctd_coam_w48", "ctd_prenet_hrnet_w32",
                                  "ctd_prenet_hrnet_w48", "ctd_prenet_rtmpose_s",
                                  "ctd_prenet_rtmpose_m", "ctd_prenet_rtmpose_x"}


def tame(model) -> None:
    """Untrained locref outputs are huge (1e6 px) and would turn float32 noise into pixels; the
    condition pre-net's N(0, 0.001) init would make the conditions invisible: scale both so the
    check sees the conditions' transform."""
    head = model.heads["bodypart"]
    torch.manual_seed(1)
    with torch.no_grad():
        if hasattr(head, "locref_head"):
            for p in head.locref_head.parameters():
                p.mul_(1e-3)
        prenet = getattr(model.backbone, "cond_preNet", None)
        if prenet is not None:
            torch.nn.init.normal_(prenet[0].weight, std=0.05)


# -- the crop ----------------------------------------------------------------------------------

@pytest.mark.parametrize("with_context", [False, True])
@pytest.mark.parametrize("size", [(32, 32), (32, 24), (24, 40)])
def test_graph_crop_is_deeplabcuts(with_context, size):
    """Box from conditions + top_down_crop (both context modes, square and not) = DeepLabCut's
    CPU crop, pixel for pixel (float), with the same offsets and scales."""
    out_w, out_h = size
    frames = textured_frames(2, 60, 80)
    conditions = parity_conditions(frames, 4, 5)
    crop = TopDownCrop(out_w, out_h, 2.0) if with_context else ContextFreeCrop(out_w, out_h, 2.0)
    boxes = condition_boxes(torch.from_numpy(conditions), torch.tensor([60.0, 80.0]), 5.0)
    crops, offsets, scales = crop(torch.from_numpy(frames).float().permute(0, 3, 1, 2), boxes)
    crops = crops.reshape(2, 4, 3, out_h, out_w).numpy()
    for i in range(2):
        for j in range(4):
            box = deeplabcut_condition_box(conditions[i, j], 60, 80, 5.0)
            np.testing.assert_allclose(boxes[i, j].numpy(), (*box[:2], *(box[:2] + box[2:])),
                                       atol=1e-4)
            ref, offset, scale = deeplabcut_ctd_crop(frames[i], box, out_w, out_h, 2.0,
                                                     with_context)
            np.testing.assert_allclose(crops[i, j], ref.transpose(2, 0, 1), atol=2e-3)
            np.testing.assert_allclose(offsets[i, j].numpy(), offset, atol=1e-4)
            np.testing.assert_allclose(scales[i, j].numpy(), scale, rtol=1e-6)


def test_context_free_crop_pads_the_box_only():
    """crop_with_context=False keeps only the box's pixels: a tall box inside a bright frame
    is zero-padded left and right, where crop_with_context=True shows the frame."""
    frames = np.full((1, 50, 50, 3), 200, np.uint8)
    box = torch.tensor([[[20.0, 5.0, 30.0, 45.0]]])  # 10 x 40
    x = torch.from_numpy(frames).float().permute(0, 3, 1, 2)
    free, _, scale = ContextFreeCrop(40, 40)(x, box)
    context, _, _ = TopDownCrop(40, 40, 0.0)(x, box)
    assert float(scale[0, 0, 0]) == pytest.approx(1.0) and float(scale[0, 0, 1]) == 1.0
    assert float(free[0, :, :, :15].abs().max()) == 0.0  # (40 - 10) // 2 = 15 px each side
    assert float(free[0, :, :, 25:].abs().max()) == 0.0
    assert float(free[0, :, :, 15:25].min()) == pytest.approx(200.0, abs=1e-3)
    assert float(context[0].min()) == pytest.approx(200.0, abs=1e-3)


# -- the pose graph, every CTD architecture ------------------------------------------------

#: One non-square crop (pre-net HRNet runs at any multiple of 32) and one crop_with_context run.
CROPS = {"ctd_prenet_hrnet_w32": (64, 96)}
WITH_CONTEXT = {"ctd_prenet_rtmpose_s"}


@pytest.mark.parametrize("net_type", tiered(CTD_NET_TYPES))
def test_pose_graph_matches_eager(tmp_path, net_type):
    width, height = CROPS.get(net_type, (64, 64))
    cfg = ctd_config(net_type, width, height)
    if net_type in WITH_CONTEXT:
        cfg["data"]["inference"]["top_down_crop"]["crop_with_context"] = True
    torch.manual_seed(0)
    model = build_model_from_config(cfg).eval()
    tame(model)
    crop = ctd_crop_settings(view_config(cfg, "pytorch_config.yaml"))
    assert crop.with_context == (net_type in WITH_CONTEXT) and crop.bbox_margin == 25
    wrapper = CondTopDownPose(model, crop, view_config(cfg, "pytorch_config.yaml").inference.pad_divisors).eval()
    frames = textured_frames()
    conditions = parity_conditions(frames, 3, 4)
    path = export_graph_onnx(wrapper, tmp_path / "pose.onnx", frames, conditions=conditions)
    check_tensorrt_operators(path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(["keypoints"], {"images": frames, "conditions": conditions})[0]
    ref = eager_ctd(wrapper.pose, frames, conditions, crop)
    assert got.shape == ref.shape == (2, 3, 4, 3)
    assert np.isfinite(ref).all()
    assert np.abs(got[..., :2] - ref[..., :2]).max() <= 0.5
    assert np.abs(got[..., 2] - ref[..., 2]).max() <= 1e-3
    # Another batch and frame size through the same graph.
    small = np.ascontiguousarray(frames[1:, 10:100, 5:150])
    small_conditions = parity_conditions(small, 3, 4, seed=2)
    got = sess.run(["keypoints"], {"images": small, "conditions": small_conditions})[0]
    ref = eager_ctd(wrapper.pose, small, small_conditions, crop)
    assert np.abs(got[..., :2] - ref[..., :2]).max() <= 0.5
    # The conditions matter to this model: on the same crops, moved conditions give other
    # keypoints, so the check above also covers their transform into crop pixels.
    norm = wrapper.normalize
    crops = (torch.from_numpy(frames[:, :height, :width]).float().permute(0, 3, 1, 2)
             - norm.mean) * norm.scale
    local = torch.from_numpy(parity_conditions(frames[:, :height, :width], 1, 4, seed=5)[:, 0])
    with torch.no_grad():
        here = wrapper.pose(crops, local)
        moved = local.clone()
        moved[..., :2] = moved[..., :2] * 0.5 + 8.0
        there = wrapper.pose(crops, moved)
    assert float((here[..., :2] - there[..., :2]).abs().max()) > 0.5 \
        or float((here[..., 2] - there[..., 2]).abs().max()) > 1e-3


# -- which conditions the runtime hands over -------------------------------------------------

def test_select_conditions_follows_deeplabcut():
    k = 3
    good = [[10, 10, 0.9], [20, 30, 0.8], [np.nan, np.nan, 0.0]]
    kp = np.array([[
        [[-1, -1, -1]] * k,                             # padded slot: dropped
        good,                                           # kept (1st)
        [[10, 10, 0.04], [12, 12, 0.03], [0, 0, 0]],    # best score < 0.05: dropped
        [[np.nan, np.nan, 0.0]] * k,                    # nothing found: dropped
        [[50, 40, 0.5], [55, 45, 0.0], [60, 42, 0.7]],  # kept (2nd)
        [[70, 20, 0.5], [72, 25, 0.5], [74, 21, 0.5]],  # kept, but beyond m = 2
    ]], np.float32)
    chosen, valid = select_conditions(kp, 2, (60, 80), bbox_margin=5)
    assert valid.tolist() == [[True, True]]
    np.testing.assert_array_equal(chosen[0, 0], np.nan_to_num(np.array(good, np.float32)))
    np.testing.assert_array_equal(chosen[0, 1], kp[0, 4])
    assert np.isfinite(chosen).all()
    # Fewer usable individuals than slots: the rest is empty (zeros, not valid).
    chosen, valid = select_conditions(kp[:, :3], 3, (60, 80), bbox_margin=5)
    assert valid.tolist() == [[True, False, False]]
    assert not chosen[0, 1:].any()
    # More slots than the model's individuals.
    chosen, valid = select_conditions(kp[:, 1:2], 3, (60, 80), bbox_margin=5)
    assert chosen.shape == (1, 3, k, 3) and valid.tolist() == [[True, False, False]]


def test_condition_box_area_rule():
    """A box under one pixel (a keypoint at the frame's corner, no margin) is not cropped."""
    kp = np.array([[[[0.5, 0.5, 0.9]], [[100.0, 0.5, 0.9]], [[10.0, 10.0, 0.9]]]], np.float32)
    # x, y > 0 both; the second one's box is clipped to the frame (width 80): empty
    assert condition_mask(kp, (60, 80), bbox_margin=0).tolist() == [[False, False, False]]
    assert condition_mask(kp, (60, 80), bbox_margin=1).tolist() == [[True, False, True]]


# -- bundle + runtime ---------------------------------------------------------------------------

BU_NET = "resnet_tiny"
CTD_NET = "ctd_prenet_rtmpose_s"


def _brighten_heatmaps(model) -> None:
    """An untrained PAF head's peaks sit at ~0.5 everywhere; bias the heatmaps up so the
    assembly finds animals and the CTD model gets conditions."""
    with torch.no_grad():
        for name, p in model.heads["bodypart"].named_parameters():
            if "heatmap" in name and name.endswith("bias"):
                p.add_(2.0)


@pytest.fixture(scope="module")
def ctd_project(tmp_path_factory):
    from dlc_train.synthetic import SyntheticSpec, generate_project

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("ctd")
    proj = generate_project(root, SyntheticSpec(num_animals=2, num_labeled_frames=2,
                                                num_video_frames=4, width=160, height=120,
                                                body_length=0.25))
    project_cfg = read_config_as_dict(proj.config_path)
    project_cfg["project_path"] = str(proj.project_dir)
    trains = {}
    for shuffle, net in ((1, BU_NET), (2, CTD_NET)):
        # where DeepLabCut puts the shuffle: <Task><date>-trainset<pct>shuffle<n>/train
        train = DLCLoader(proj.config_path, shuffle=shuffle).train_folder
        train.mkdir(parents=True)
        if net == CTD_NET:
            cfg = ctd_config(net, 64, 64, project_cfg, str(train / "pytorch_config.yaml"),
                             ctd_conditions=1)
        else:
            cfg = make_pytorch_pose_config(project_cfg, train / "pytorch_config.yaml", net)
        write_config(train / "pytorch_config.yaml", cfg)
        torch.manual_seed(shuffle)
        model = build_model_from_config(cfg)
        if net == CTD_NET:
            tame(model)
        else:
            _brighten_heatmaps(model)
        torch.save({"metadata": {"epoch": 5}, "model": model.state_dict()},
                   train / "snapshot-005.pt")
        trains[shuffle] = train
    return proj, trains


@pytest.fixture(scope="module")
def ctd_bundle(ctd_project, tmp_path_factory):

    _, trains = ctd_project
    out = tmp_path_factory.mktemp("bundles") / "ctd.bundle"
    # Through export_bundle (method: ctd routes to the CTD exporter), conditions found from
    # inference.conditions: {shuffle: 1}.
    result = export_bundle(trains[2] / "pytorch_config.yaml", trains[2] / "snapshot-005.pt",
                           out, frames=textured_frames(2, 120, 160), simplify=False)
    return result


# 4 (below the old fixed opt of 8) in the fast tier; 16 in the full one.
@pytest.mark.parametrize("batch", [4, pytest.param(16, marks=pytest.mark.slow)])
def test_batch_sets_the_batch_range_of_both_bundles(ctd_project, tmp_path, batch):
    """--batch N: opt = max = N in the CTD manifest and in its nested conditions bundle."""
    from dlc_runtime.bundle import Bundle

    _, trains = ctd_project
    result = export_bundle(trains[2] / "pytorch_config.yaml", trains[2] / "snapshot-005.pt",
                           tmp_path / "ctd.bundle", frames=textured_frames(2, 120, 160),
                           batch=batch, simplify=False)
    expected = {"min": 1, "opt": batch, "max": batch}
    assert Bundle.load(result.bundle_dir).input.batch.to_dict() == expected
    assert Bundle.load(result.bundle_dir / "conditions").input.batch.to_dict() == expected


def test_bundle_layout(ctd_bundle, ctd_project):
    from dlc_runtime.bundle import Bundle

    _, trains = ctd_project
    assert ctd_bundle.parity.passed, ctd_bundle.parity.summary()
    bundle = Bundle.load(ctd_bundle.bundle_dir)
    assert bundle.task == "cond_top_down" and bundle.individuals == ["mouse1", "mouse2"]
    assert bundle.manifest.decoder["max_individuals"] == 2
    assert bundle.manifest.decoder["crop"]["crop_with_context"] is False
    nested = Bundle.load(ctd_bundle.bundle_dir / "conditions")
    assert nested.task == "bottom_up" and nested.bodyparts == bundle.bodyparts
    assert (ctd_bundle.bundle_dir / "conditions" / "parity.json").is_file()
    assert bundle.graph_path("conditions") == nested.graph_path("pose")
    assert bundle.manifest.source["conditions_snapshot"] == \
        str((trains[1] / "snapshot-005.pt").resolve())
    check_tensorrt_operators(ctd_bundle.bundle_dir / "pose.onnx")


def test_pipeline_matches_deeplabcut_steps(ctd_bundle, ctd_project):
    """Runtime pipeline = nested conditions pipeline -> DeepLabCut's selection -> DeepLabCut's
    CPU crop + the PyTorch CTD model on the chosen conditions."""
    from dlc_runtime.bundle import Bundle
    from dlc_runtime.pipelines import make_pipeline
    from dlc_train.models.loading import build_model_from_snapshot

    _, trains = ctd_project
    bundle = Bundle.load(ctd_bundle.bundle_dir)
    pipeline = make_pipeline(bundle, None)
    frames = textured_frames(3, 120, 160, seed=3)
    try:
        got = pipeline(frames).keypoints
        found = pipeline.conditions(frames).keypoints
    finally:
        pipeline.close()
    chosen, valid = select_conditions(found, 2, (120, 160), bbox_margin=25)
    assert valid.any(), "the conditions model found no animal: the check would be empty"
    cfg = read_config_as_dict(trains[2] / "pytorch_config.yaml")
    wrapper = CondTopDownPose(build_model_from_snapshot(cfg, trains[2] / "snapshot-005.pt"),
                              ctd_crop_settings(view_config(cfg, "pytorch_config.yaml"))).eval()
    assert got.shape == (3, 2, len(bundle.bodyparts), 3)
    for i in range(3):
        slots = np.flatnonzero(valid[i])
        assert np.isnan(got[i, ~valid[i], :, :2]).all() and (got[i, ~valid[i], :, 2] == 0).all()
        if len(slots):
            ref = eager_ctd(wrapper.pose, frames[i:i + 1], chosen[i:i + 1, slots],
                            wrapper.settings)[0]
            assert np.abs(got[i, slots, :, :2] - ref[..., :2]).max() <= 0.5


def test_analyze_video_writes_deeplabcut_h5(ctd_bundle, ctd_project, tmp_path):
    from dlc_runtime import analyze_video
    from dlc_runtime.bundle import Bundle

    proj, _ = ctd_project
    out = analyze_video(ctd_bundle.bundle_dir, proj.video_path, tmp_path / "out", batch_size=2,
                        progress=False)
    df = pd.read_hdf(out.h5_path)
    assert len(df) == 4
    assert df.columns.names == ["scorer", "individuals", "bodyparts", "coords"]
    assert list(df.columns.get_level_values("scorer").unique()) == \
        [Bundle.load(ctd_bundle.bundle_dir).scorer]
    assert list(df.columns.get_level_values("individuals").unique()) == ["mouse1", "mouse2"]
    assert list(df.columns.get_level_values("bodyparts").unique()) == \
        read_config_as_dict(proj.config_path)["multianimalbodyparts"]
    lik = df.xs("likelihood", level="coords", axis=1).to_numpy()
    xy = df.drop("likelihood", level="coords", axis=1).to_numpy().reshape(4, -1, 2)
    assert np.all((lik == 0) | np.isfinite(xy).all(-1))
