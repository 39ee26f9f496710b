"""Conditional top-down (CTD) export: the pose graph (box from conditions, crop, conditions in crop
pixels, model, map back) vs DeepLabCut's CPU steps, the runtime's choice of conditions, and a
bundle with its nested bottom-up conditions bundle through ``analyze_video``.

Random weights everywhere (seeded); frames are smoothed noise so heatmap peaks are not tied.
"""
from __future__ import annotations

import copy
import itertools
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

import onnxruntime as ort

from dlc_export import export_bundle
from dlc_export.config_view import view_config
from dlc_export.errors import ExportError
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


# -- clear errors ----------------------------------------------------------------------------

_SPARE_SHUFFLES = itertools.count(90)


def _copy_ctd(trains, tmp_path, conditions) -> tuple:
    """The CTD shuffle copied beside the real ones with another inference.conditions."""
    name = trains[2].parent.name.replace("shuffle2", f"shuffle{next(_SPARE_SHUFFLES)}")
    folder = trains[2].parent.parent / name
    train = folder / "train"
    train.mkdir(parents=True, exist_ok=True)
    cfg = read_config_as_dict(trains[2] / "pytorch_config.yaml")
    cfg["inference"]["conditions"] = conditions
    write_config(train / "pytorch_config.yaml", cfg)
    shutil.copy(trains[2] / "snapshot-005.pt", train / "snapshot-005.pt")
    return train / "pytorch_config.yaml", train / "snapshot-005.pt"


@pytest.mark.parametrize("conditions, match", [
    (None, "inference.conditions is not set"),
    ("/data/bu_predictions.h5", "predictions file"),
    ({"shuffle": 7}, "conditions shuffle 7 was not found"),
    ({"shuffle": 1, "snapshot_index": 3}, "snapshot index 3 is out of range"),
    ({"shuffle": 2}, "must come from a bottom-up model"),
    ({"shuffle": 1, "modelprefix": "other"}, "modelprefix"),
    ({"shuffle": 1, "trainset_index": 4}, "trainset_index 4"),
])
def test_conditions_model_errors(ctd_project, tmp_path, conditions, match):
    _, trains = ctd_project
    config, snapshot = _copy_ctd(trains, tmp_path, conditions)
    with pytest.raises(ExportError, match=match):
        export_bundle(config, snapshot, tmp_path / "x.bundle", frames=textured_frames())
    assert not (tmp_path / "x.bundle").exists()
    assert not list(tmp_path.glob(".x.bundle.partial-*"))


@pytest.mark.parametrize("conditions", [
    {"shuffle": 1}, {"shuffle": 1, "snapshot_index": -1}, {"shuffle": 1, "trainset_index": 0},
    {"shuffle": 1, "snapshot": "snapshot-005.pt"}])
def test_conditions_model_is_found(ctd_project, conditions):
    from dlc_export.tasks.ctd_conditions import find_conditions_model

    _, trains = ctd_project
    cfg = read_config_as_dict(trains[2] / "pytorch_config.yaml")
    cfg["inference"]["conditions"] = conditions
    found = find_conditions_model(view_config(cfg, trains[2] / "pytorch_config.yaml"))
    assert found == (trains[1] / "pytorch_config.yaml", trains[1] / "snapshot-005.pt")


def test_explicit_conditions_model_errors(ctd_project, tmp_path):
    _, trains = ctd_project
    config, snapshot = _copy_ctd(trains, tmp_path, "/data/bu_predictions.h5")
    with pytest.raises(ExportError, match="together"):
        export_bundle(config, snapshot, tmp_path / "x.bundle",
                          conditions_config=trains[1] / "pytorch_config.yaml")
    other = copy.deepcopy(read_config_as_dict(trains[1] / "pytorch_config.yaml"))
    other["metadata"]["bodyparts"] = ["x", "y", "z", "w"]
    write_config(tmp_path / "bu.yaml", other)
    with pytest.raises(ExportError, match="bodyparts"):
        export_bundle(config, snapshot, tmp_path / "x.bundle",
                          conditions_config=tmp_path / "bu.yaml",
                          conditions_snapshot=trains[1] / "snapshot-005.pt")
    assert not (tmp_path / "x.bundle").exists()


def test_cli_export_with_explicit_conditions_model(ctd_project, tmp_path):
    """`dlc export SNAPSHOT --conditions-config --conditions-snapshot`: a CTD shuffle whose
    inference.conditions is a predictions file exports with the model given explicitly."""
    from click.testing import CliRunner

    from dlc_cli.main import cli
    from dlc_runtime.bundle import Bundle

    proj, trains = ctd_project
    _, snapshot = _copy_ctd(trains, tmp_path, "/data/bu_predictions.h5")
    runner = CliRunner()
    refused = runner.invoke(cli, ["export", str(snapshot), "-o", str(tmp_path / "x.bundle"),
                                  "--frames", str(proj.video_path)])
    assert refused.exit_code == 1 and "predictions file" in refused.output
    out = tmp_path / "cli.bundle"
    res = runner.invoke(cli, ["export", str(snapshot), "-o", str(out), "--frames",
                              str(proj.video_path), "--batch", "4",
                              "--conditions-config", str(trains[1] / "pytorch_config.yaml"),
                              "--conditions-snapshot", str(trains[1] / "snapshot-005.pt")],
                        catch_exceptions=False)
    assert res.exit_code == 0, res.output
    bundle = Bundle.load(out)
    assert bundle.task == "cond_top_down" and bundle.input.batch.max == 4
    assert Bundle.load(out / "conditions").input.batch.max == 4


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
