"""Feature pyramid network and the backbone+FPN wrappers of torchvision's R-CNN detectors.

Keys follow torchvision: ``backbone.body.*`` (the trunk, cut after its last returned stage),
``backbone.fpn.inner_blocks.i.*`` (1x1 laterals), ``backbone.fpn.layer_blocks.i.*`` (3x3 outputs);
the top level is max-pooled once more ("pool", stride x2) for the RPN only.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from dlc_train.models.backbones.resnet import Bottleneck, ResNetFeatures
from dlc_train.models.detectors.layers import ConvNormAct, FrozenBatchNorm2d, NormFactory
from dlc_train.models.detectors.mobilenetv3 import (init_mobilenet, mobilenet_v3_large_features,
                                                    stage_indices)


class FeaturePyramidNetwork(nn.Module):
    """Top-down pathway: nearest upsampling + lateral 1x1, then a 3x3 per level.

    Args:
        in_channels_list: channels of the input levels, finest first.
        out_channels: channels of every output level.
        norm_layer: None (convs with bias, v1) or a norm factory (v2: BatchNorm).
        extra_pool: append a max-pooled coarsest level named "pool".
    """

    def __init__(self, in_channels_list: list[int], out_channels: int = 256,
                 norm_layer: NormFactory | None = None, extra_pool: bool = True):
        super().__init__()
        self.inner_blocks = nn.ModuleList([ConvNormAct(c, out_channels, 1, norm_layer=norm_layer,
                                                       act_layer=None) for c in in_channels_list])
        self.layer_blocks = nn.ModuleList([ConvNormAct(out_channels, out_channels, 3,
                                                       norm_layer=norm_layer, act_layer=None)
                                           for _ in in_channels_list])
        self.extra_pool = extra_pool
        for m in self.modules():  # torchvision's FPN init
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        names = list(x.keys())
        feats = list(x.values())
        last_inner = self.inner_blocks[-1](feats[-1])
        results = [self.layer_blocks[-1](last_inner)]
        for idx in range(len(feats) - 2, -1, -1):
            lateral = self.inner_blocks[idx](feats[idx])
            top_down = F.interpolate(last_inner, size=lateral.shape[-2:], mode="nearest")
            last_inner = lateral + top_down
            results.insert(0, self.layer_blocks[idx](last_inner))
        if self.extra_pool:
            results.append(F.max_pool2d(results[-1], 1, 2, 0))
            names.append("pool")
        return OrderedDict(zip(names, results))


class ResNetBody(nn.Module):
    """torchvision ResNet-50 trunk (conv1, bn1, layer1..4) returning layer1..4 as "0".."3".

    The module layout is the project's timm-style ResNet (same keys as torchvision's).
    """

    def __init__(self, norm_layer: NormFactory = nn.BatchNorm2d):
        super().__init__()
        trunk = ResNetFeatures(Bottleneck, (3, 4, 6, 3), output_stride=32, norm_layer=norm_layer)
        # torchvision does not zero-init the last norm of the residual branches.
        for m in trunk.modules():
            if isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
        self.conv1, self.bn1, self.act1, self.maxpool = (trunk.conv1, trunk.bn1, trunk.act1,
                                                         trunk.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = (trunk.layer1, trunk.layer2,
                                                              trunk.layer3, trunk.layer4)
        self.out_channels_list = [256, 512, 1024, 2048]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        out = OrderedDict()
        for i, layer in enumerate((self.layer1, self.layer2, self.layer3, self.layer4)):
            x = layer(x)
            out[str(i)] = x
        return out


class MobileNetBody(nn.Sequential):
    """MobileNetV3-Large ``features`` (children "0".."16") returning the last two stages
    (stride 16, 160 channels; stride 32, 960 channels) as "0", "1"."""

    def __init__(self, norm_layer: NormFactory = FrozenBatchNorm2d):
        features = mobilenet_v3_large_features(norm_layer)
        init_mobilenet(features)
        super().__init__(*features)
        stages = stage_indices(features)
        self.return_layers = {stages[-2]: "0", stages[-1]: "1"}
        self.out_channels_list = [features[i].out_channels for i in self.return_layers]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = OrderedDict()
        for i, layer in enumerate(self):
            x = layer(x)
            if i in self.return_layers:
                out[self.return_layers[i]] = x
        return out


class BackboneWithFPN(nn.Module):
    """``body`` -> ``fpn``: an ordered dict of 256-channel levels.

    Args:
        body: a trunk returning named levels, with ``out_channels_list``.
        fpn_norm_layer: norm inside the FPN (None in v1 / MobileNet, BatchNorm in v2).
    """

    def __init__(self, body: nn.Module, fpn_norm_layer: NormFactory | None = None,
                 out_channels: int = 256):
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(body.out_channels_list, out_channels, fpn_norm_layer)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.fpn(self.body(x))
