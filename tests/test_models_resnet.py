"""ResNet backbone: DeepLabCut 3 state_dict layout, output strides, dilation as timm does it."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from dlc_train.models import BACKBONES, PoseModel
from dlc_train.models.backbones.resnet import ResNet

from conftest import dlc3_file as _dlc3, reference_keys
from helpers.variants import key_file_net_type, tiered
_reference_keys = reference_keys

DLC3 = Path(__file__).resolve().parents[1].parent / "shared" / "dlc3"


@pytest.mark.parametrize("name", tiered(["resnet_50_BU_sa", "resnet_101_BU_sa", "resnet_50_TD_ma"],
                                        net_type=key_file_net_type))
def test_state_dict_matches_deeplabcut(name):
    cfg = yaml.safe_load(_dlc3(f"pytorch_configs/{name}.yaml").read_text())
    model = PoseModel.build(cfg["model"])
    ours = [(key, tuple(value.shape)) for key, value in model.state_dict().items()]
    reference = _reference_keys(name)
    assert [k for k, _ in ours] == [k for k, _ in reference]  # same keys, same order
    assert ours == reference                                   # same shapes
    # and a snapshot with those keys loads strictly
    model.load_state_dict({k: torch.zeros(s) for k, s in reference}, strict=True)


@pytest.mark.parametrize("output_stride", [8, 16, 32])
@pytest.mark.parametrize("size", [(64, 96), (70, 81)])
def test_feature_map_size(output_stride, size):
    torch.manual_seed(0)
    backbone = ResNet("resnet18", output_stride=output_stride).eval()
    assert backbone.stride == output_stride
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, *size))
    # Every stride-2 op (7x7 pad 3, maxpool 3 pad 1, 3x3 pad 1) maps n to ceil(n / 2).
    assert out.shape == (1, 512, math.ceil(size[0] / output_stride),
                         math.ceil(size[1] / output_stride))


def _dilations(stage: nn.Sequential, conv: str) -> list[int]:
    return [getattr(block, conv).dilation[0] for block in stage]


@pytest.mark.parametrize("output_stride, strides, dilations", [
    (32, [1, 2, 2, 2], [1, 1, 1, 1]),
    (16, [1, 2, 2, 1], [1, 1, 1, 2]),
    (8, [1, 2, 1, 1], [1, 1, 2, 4]),
])

def test_dilation_follows_timm(output_stride, strides, dilations):
    model = ResNet("resnet50", output_stride=output_stride).model
    prev = 1
    for idx, (stride, dilation) in enumerate(zip(strides, dilations)):
        stage = getattr(model, f"layer{idx + 1}")
        first = stage[0]
        assert first.conv2.stride == (stride, stride)
        # first 3x3 of a stage keeps the previous stage's dilation; the rest use the new one
        assert _dilations(stage, "conv2") == [prev] + [dilation] * (len(stage) - 1)
        assert first.conv2.padding == (prev, prev)
        down = first.downsample[0]
        assert down.kernel_size == (1, 1) and down.dilation == (1, 1) and down.padding == (0, 0)
        assert down.stride == (stride, stride)
        for block in stage[1:]:
            assert block.conv2.stride == (1, 1) and block.downsample is None
        prev = dilation


def test_basic_block_dilation_resnet34():
    model = ResNet("resnet34", output_stride=8).model
    assert [b.conv1.dilation[0] for b in model.layer3] == [1] + [2] * 5
    assert [b.conv2.dilation[0] for b in model.layer3] == [2] * 6
    assert [b.conv1.dilation[0] for b in model.layer4] == [2, 4, 4]
    assert model.layer3[0].downsample[0].stride == (1, 1)


def test_groupnorm_variant():
    backbone = ResNet("resnet50_gn", output_stride=16)
    norms = [m for m in backbone.modules() if isinstance(m, nn.GroupNorm)]
    assert norms and all(m.num_groups == 32 for m in norms)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in backbone.modules())
    keys = backbone.state_dict().keys()
    assert "model.layer2.0.bn3.weight" in keys
    assert not any("running_mean" in k for k in keys)
    with torch.no_grad():
        out = backbone.eval()(torch.randn(1, 3, 32, 48))
    assert out.shape == (1, 2048, 2, 3)


def test_registered_and_built_from_config():
    backbone = BACKBONES.build({"type": "ResNet", "model_name": "resnet18", "output_stride": 16,
                                "freeze_bn_stats": False, "freeze_bn_weights": False})
    assert isinstance(backbone, ResNet) and backbone.stride == 16
    assert backbone.num_features == 512
    assert not any(k.startswith("model.fc") for k in backbone.state_dict())


def test_pretrained_outside_training_fetches_nothing(tmp_path, monkeypatch):
    # ImageNet weights load only when built for training (tests/test_pretrained_weights.py);
    # offline with an empty cache, any attempt would raise MissingWeightsError.
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert ResNet("resnet18", pretrained=True).model.num_features == 512


def test_unknown_model_name():
    with pytest.raises(ValueError, match="unknown ResNet"):
        ResNet("resnet7")
    with pytest.raises(ValueError, match="output_stride"):
        ResNet("resnet18", output_stride=4)


def test_freeze_bn_stats_keeps_running_stats():
    torch.manual_seed(0)
    backbone = ResNet("resnet18", output_stride=32, freeze_bn_stats=True,
                      freeze_bn_weights=True).train()
    before = backbone.model.bn1.running_mean.clone()
    backbone(torch.randn(2, 3, 64, 64))
    assert torch.equal(before, backbone.model.bn1.running_mean)
    assert not backbone.model.bn1.weight.requires_grad


def test_drop_path_and_drop_block_train_and_eval():
    torch.manual_seed(0)
    backbone = ResNet("resnet18", output_stride=16, drop_path_rate=0.2, drop_block_rate=0.2)
    x = torch.randn(2, 3, 48, 48)
    out = backbone.train()(x)
    assert out.shape == (2, 512, 3, 3) and torch.isfinite(out).all()
    backbone.eval()
    with torch.no_grad():
        assert torch.equal(backbone(x), backbone(x))  # deterministic at eval time
