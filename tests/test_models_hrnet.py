"""HRNet backbone: DeepLabCut 3 state_dict layout (timm's HRNet features), shapes, branch fusion."""
from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from dlc_train.models import BACKBONES, PoseModel
from dlc_train.models.backbones.hrnet import HRNet, UpsampleTo
from conftest import dlc3_file as _dlc3, reference_keys
from helpers.variants import key_file_net_type, tiered
_reference_keys = reference_keys


DLC3 = Path(__file__).resolve().parents[1].parent / "shared" / "dlc3"


def _model_cfg(name: str) -> dict:
    return yaml.safe_load(_dlc3(f"pytorch_configs/{name}.yaml").read_text())["model"]


def _hrnet_w18_bu_cfg() -> dict:
    """DeepLabCut's hrnet_w18 single-animal config differs from the w32 one only in these."""
    cfg = copy.deepcopy(_model_cfg("hrnet_w32_BU_sa"))
    cfg["backbone"]["model_name"] = "hrnet_w18"
    cfg["backbone_output_channels"] = 18
    head = cfg["heads"]["bodypart"]
    head["heatmap_config"]["channels"][0] = 18
    head["locref_config"]["channels"][0] = 18
    return cfg


def _assert_matches(model: nn.Module, name: str) -> None:
    ours = [(key, tuple(value.shape)) for key, value in model.state_dict().items()]
    reference = _reference_keys(name)
    assert [k for k, _ in ours] == [k for k, _ in reference]  # same keys, same order
    assert ours == reference                                   # same shapes
    model.load_state_dict({k: torch.zeros(s) for k, s in reference}, strict=True)


@pytest.mark.parametrize("name", tiered(["hrnet_w18_BU_sa", "hrnet_w32_BU_sa", "hrnet_w32_TD_ma",
                                         "dekr_w18_BU_ma"], net_type=key_file_net_type))
def test_state_dict_matches_deeplabcut(name):
    # ../shared/dlc3 has no hrnet_w18 config: it is derived from the w32 one.
    cfg = _hrnet_w18_bu_cfg() if name == "hrnet_w18_BU_sa" else _model_cfg(name)
    _assert_matches(PoseModel.build(cfg), name)


@pytest.mark.parametrize("size", [(64, 64), (96, 128)])
def test_pose_model_forward_sizes(size):
    torch.manual_seed(0)
    model = PoseModel.build(_hrnet_w18_bu_cfg()).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, *size))["bodypart"]
    h, w = size[0] // 4, size[1] // 4
    # stride-4 features, then DeepLabCut's kernel-3 stride-2 deconvolution: 2n + 1
    assert out["heatmap"].shape == (1, 4, 2 * h + 1, 2 * w + 1)
    assert out["locref"].shape == (1, 8, 2 * h + 1, 2 * w + 1)
    assert model.get_stride("bodypart") == 2.0
    poses = model.get_predictions({"bodypart": out})["bodypart"]["poses"]
    assert poses.shape == (1, 1, 4, 3) and torch.isfinite(poses).all()


def test_top_down_head_keeps_stride_4():
    torch.manual_seed(0)
    cfg = copy.deepcopy(_model_cfg("hrnet_w32_TD_ma"))
    cfg["backbone"]["model_name"] = "hrnet_w18_small"   # same family, 10x cheaper for the test
    for branch in ("heatmap_config", "locref_config"):
        cfg["heads"]["bodypart"][branch]["channels"] = [16]
    model = PoseModel.build(cfg).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 96))["bodypart"]
    assert out["heatmap"].shape == (2, 4, 16, 24) and out["locref"].shape == (2, 8, 16, 24)
    assert model.get_stride("bodypart") == 4.0


@pytest.mark.parametrize("model_name, widths", tiered([
    ("hrnet_w18", (18, 36, 72, 144)),
    ("hrnet_w32", (32, 64, 128, 256)),
    ("hrnet_w48", (48, 96, 192, 384)),
], net_type=lambda case: case[0]))
def test_branch_widths(model_name, widths):
    backbone = HRNet(model_name, interpolate_branches=True)
    assert backbone.model.out_channels == widths
    assert backbone.num_features == sum(widths)
    assert HRNet(model_name).num_features == widths[0]
    sd = backbone.state_dict()
    w = widths
    # the spec family: Bottleneck stage 1 (256 channels), then 4 basic blocks per branch;
    # 1 / 4 / 3 modules in stages 2 / 3 / 4
    assert sd["model.transition1.0.0.weight"].shape == (w[0], 256, 3, 3)
    assert sd["model.transition1.1.0.0.weight"].shape == (w[1], 256, 3, 3)
    assert sd["model.transition2.2.0.0.weight"].shape == (w[2], w[1], 3, 3)
    assert sd["model.transition3.3.0.0.weight"].shape == (w[3], w[2], 3, 3)
    assert sd["model.stage4.2.branches.3.3.conv2.weight"].shape == (w[3], w[3], 3, 3)
    assert sd["model.stage4.2.fuse_layers.3.0.2.0.weight"].shape == (w[3], w[0], 3, 3)
    assert sd["model.stage4.2.fuse_layers.0.3.0.weight"].shape == (w[0], w[3], 1, 1)
    assert "model.stage2.1.branches.0.0.conv1.weight" not in sd
    assert "model.stage3.3.branches.0.0.conv1.weight" in sd
    assert "model.stage4.3.branches.0.0.conv1.weight" not in sd
    assert not any("incre" in k or "final_layer" in k or "classifier" in k for k in sd)


@pytest.mark.slow  # the family's largest size; hrnet_w18 runs forward in the fast tier
def test_w48_forward_shapes():
    torch.manual_seed(0)
    backbone = HRNet("hrnet_w48").eval()
    with torch.no_grad():
        branches = backbone.model(torch.randn(1, 3, 64, 64))
    assert [tuple(b.shape) for b in branches] == [
        (1, 48, 16, 16), (1, 96, 8, 8), (1, 192, 4, 4), (1, 384, 2, 2)]


@pytest.mark.parametrize("size", [(64, 96), (70, 90)])
def test_interpolated_branches(size):
    """DEKR's features: the four branches, bilinearly resized to stride 4 and concatenated."""
    torch.manual_seed(0)
    backbone = HRNet("hrnet_w18_small", interpolate_branches=True).eval()
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        out = backbone(x)
        branches = backbone.model(x)
    h, w = math.ceil(size[0] / 4), math.ceil(size[1] / 4)
    assert out.shape == (1, 16 + 32 + 64 + 128, h, w)
    expected = torch.cat([branches[0]] + [F.interpolate(b, size=(h, w), mode="bilinear")
                                          for b in branches[1:]], dim=1)
    torch.testing.assert_close(out, expected)
    # interpolation, not padding: the coarsest branch's mean survives the resize
    assert out[:, -128:].abs().sum() > 0


def test_fusion_upsampling_is_timms_nearest():
    """At DeepLabCut's padded sizes (multiples of 32) the size-driven upsampling equals timm's
    ``nn.Upsample(scale_factor=2**k, mode="nearest")``."""
    x = torch.randn(1, 3, 2, 3)
    for k in (1, 2, 3):
        ours = UpsampleTo(2 ** k)(x, (2 * 2 ** k, 3 * 2 ** k))
        torch.testing.assert_close(ours, nn.Upsample(scale_factor=2 ** k, mode="nearest")(x))


def test_increased_channel_count():
    backbone = HRNet("hrnet_w18_small", increased_channel_count=True)
    assert backbone.num_features == 128
    sd = backbone.state_dict()
    assert sd["model.incre_modules.0.0.conv1.weight"].shape == (32, 16, 1, 1)
    assert sd["model.incre_modules.3.0.downsample.0.weight"].shape == (1024, 128, 1, 1)
    with torch.no_grad():
        out = backbone.eval()(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 128, 16, 16)
    both = HRNet("hrnet_w18_small", increased_channel_count=True, interpolate_branches=True)
    assert both.num_features == 128 + 256 + 512 + 1024


def test_registered_built_from_config_and_frozen_bn():
    backbone = BACKBONES.build({"type": "HRNet", "model_name": "hrnet_w18_small",
                                "freeze_bn_stats": True, "freeze_bn_weights": True,
                                "interpolate_branches": False, "increased_channel_count": False})
    assert isinstance(backbone, HRNet) and backbone.stride == 4
    backbone.train()
    bns = [m for m in backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(not m.training and not m.weight.requires_grad for m in bns)
    before = bns[0].running_mean.clone()
    backbone(torch.randn(2, 3, 32, 32))
    torch.testing.assert_close(bns[0].running_mean, before)


def test_unknown_model_and_pretrained_outside_training(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown HRNet"):
        HRNet("hrnet_w17")
    # ImageNet weights load only when built for training (tests/test_pretrained_weights.py);
    # offline with an empty cache, any attempt would raise MissingWeightsError.
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert HRNet("hrnet_w18_small.ms_in1k", pretrained=True).stride == 4
