"""MobileNetV3-Large feature layers with torchvision's layout (``features.0`` ... ``features.16``).

Used by SSDLite (split at C4, see ``ssdlite.py``) and by Faster R-CNN MobileNetV3-FPN. The
classifier is not built: detectors only use ``features``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dlc_train.models.detectors.layers import (ConvNormAct, NormFactory, SqueezeExcitation,
                                               make_divisible)


@dataclass(frozen=True)
class BlockSpec:
    in_channels: int
    kernel: int
    expanded: int
    out_channels: int
    use_se: bool
    use_hs: bool
    stride: int
    dilation: int = 1


def large_specs(reduced_tail: bool = False, dilated: bool = False) -> list[BlockSpec]:
    """MobileNetV3-Large's inverted residual settings (Table 1 of the paper).

    Args:
        reduced_tail: halve the channels of the last stage (what torchvision's SSDLite uses when
            no ImageNet backbone is loaded, and so what DeepLabCut's default detector has).
        dilated: dilate the last stage instead of striding it.
    """
    r = 2 if reduced_tail else 1
    d = 2 if dilated else 1
    return [
        BlockSpec(16, 3, 16, 16, False, False, 1),
        BlockSpec(16, 3, 64, 24, False, False, 2),
        BlockSpec(24, 3, 72, 24, False, False, 1),
        BlockSpec(24, 5, 72, 40, True, False, 2),
        BlockSpec(40, 5, 120, 40, True, False, 1),
        BlockSpec(40, 5, 120, 40, True, False, 1),
        BlockSpec(40, 3, 240, 80, False, True, 2),
        BlockSpec(80, 3, 200, 80, False, True, 1),
        BlockSpec(80, 3, 184, 80, False, True, 1),
        BlockSpec(80, 3, 184, 80, False, True, 1),
        BlockSpec(80, 3, 480, 112, True, True, 1),
        BlockSpec(112, 3, 672, 112, True, True, 1),
        BlockSpec(112, 5, 672, 160 // r, True, True, 2, d),
        BlockSpec(160 // r, 5, 960 // r, 160 // r, True, True, 1, d),
        BlockSpec(160 // r, 5, 960 // r, 160 // r, True, True, 1, d),
    ]


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise (kxk) -> [SE] -> project (1x1), residual when shapes allow.

    Args:
        spec: the block's setting.
        norm_layer: normalization factory.
    """

    def __init__(self, spec: BlockSpec, norm_layer: NormFactory):
        super().__init__()
        act = nn.Hardswish if spec.use_hs else nn.ReLU
        stride = 1 if spec.dilation > 1 else spec.stride
        layers: list[nn.Module] = []
        if spec.expanded != spec.in_channels:
            layers.append(ConvNormAct(spec.in_channels, spec.expanded, 1, norm_layer=norm_layer,
                                      act_layer=act))
        layers.append(ConvNormAct(spec.expanded, spec.expanded, spec.kernel, stride=stride,
                                  dilation=spec.dilation, groups=spec.expanded,
                                  norm_layer=norm_layer, act_layer=act))
        if spec.use_se:
            layers.append(SqueezeExcitation(spec.expanded, make_divisible(spec.expanded // 4)))
        layers.append(ConvNormAct(spec.expanded, spec.out_channels, 1, norm_layer=norm_layer,
                                  act_layer=None))
        self.block = nn.Sequential(*layers)
        self.out_channels = spec.out_channels
        self.is_strided = spec.stride > 1  # torchvision's `_is_cn`: marks a new stage
        self.use_res_connect = spec.stride == 1 and spec.in_channels == spec.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return out + x if self.use_res_connect else out


def mobilenet_v3_large_features(norm_layer: NormFactory, reduced_tail: bool = False,
                                dilated: bool = False) -> nn.Sequential:
    """The 17 ``features`` modules: stem, 15 inverted residuals, last 1x1 conv (6x expansion).

    Args:
        norm_layer: normalization factory (torchvision: BatchNorm2d(eps=1e-3, momentum=0.01),
            SSDLite: eps=1e-3, momentum=0.03, pretrained Faster R-CNN: FrozenBatchNorm2d).
        reduced_tail, dilated: see ``large_specs``.
    """
    specs = large_specs(reduced_tail, dilated)
    layers: list[nn.Module] = [ConvNormAct(3, 16, 3, stride=2, norm_layer=norm_layer,
                                           act_layer=nn.Hardswish)]
    layers += [InvertedResidual(spec, norm_layer) for spec in specs]
    last_in = specs[-1].out_channels
    layers.append(ConvNormAct(last_in, 6 * last_in, 1, norm_layer=norm_layer,
                              act_layer=nn.Hardswish))
    return nn.Sequential(*layers)


def stage_indices(features: nn.Sequential | list[nn.Module]) -> list[int]:
    """Indices of the stem, every strided block, and the last layer (torchvision's C0..Cn)."""
    strided = [i for i, block in enumerate(features) if getattr(block, "is_strided", False)]
    return [0] + strided + [len(features) - 1]


def init_mobilenet(module: nn.Module) -> None:
    """torchvision's MobileNetV3 initialization (Kaiming fan-out convs, unit norms)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
