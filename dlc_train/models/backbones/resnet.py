"""ResNet backbones with timm's module layout, as DeepLabCut 3 wraps them.

DeepLabCut 3 builds ``timm.create_model(model_name, output_stride=...)``, drops ``fc`` and calls
``forward_features``; its snapshots therefore hold ``backbone.model.conv1.weight``,
``backbone.model.layer1.0.downsample.1.bias``, ... This file rebuilds the same modules under the
same names (no timm here), so such snapshots load with strict keys.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from dlc_train.models.backbones.base import BACKBONES, BaseBackbone
from dlc_train.models.layers import DropBlock2d, DropPath, NormFactory, get_norm_layer

logger = logging.getLogger(__name__)


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34).

    Args:
        inplanes: input channels.
        planes: output channels (expansion 1).
        stride: stride of the first conv.
        downsample: projection for the shortcut, when shapes change.
        dilation: dilation of the second conv (and of the first in later blocks of the stage).
        first_dilation: dilation of the first conv; the previous stage's dilation in the first
            block of a dilated stage, as in timm.
        norm_layer: normalization factory.
        drop_block: DropBlock module or None.
        drop_path: DropPath module or None.
    """

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, dilation: int = 1,
                 first_dilation: int | None = None, norm_layer: NormFactory = nn.BatchNorm2d,
                 drop_block: nn.Module | None = None, drop_path: nn.Module | None = None):
        super().__init__()
        first_dilation = first_dilation or dilation
        outplanes = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=first_dilation,
                               dilation=first_dilation, bias=False)
        self.bn1 = norm_layer(planes)
        self.drop_block = drop_block if drop_block is not None else nn.Identity()
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, outplanes, 3, padding=dilation, dilation=dilation,
                               bias=False)
        self.bn2 = norm_layer(outplanes)
        self.act2 = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.drop_path = drop_path

    def zero_init_last(self) -> None:
        if getattr(self.bn2, "weight", None) is not None:
            nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.act1(self.drop_block(self.bn1(self.conv1(x))))
        x = self.bn2(self.conv2(x))
        if self.drop_path is not None:
            x = self.drop_path(x)
        if self.downsample is not None:
            shortcut = self.downsample(shortcut)
        return self.act2(x + shortcut)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 -> 1x1 expand (ResNet-50/101/152). Same Args as BasicBlock; the 3x3
    conv carries the stride and dilation."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, dilation: int = 1,
                 first_dilation: int | None = None, norm_layer: NormFactory = nn.BatchNorm2d,
                 drop_block: nn.Module | None = None, drop_path: nn.Module | None = None):
        super().__init__()
        first_dilation = first_dilation or dilation
        outplanes = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = norm_layer(planes)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=first_dilation,
                               dilation=first_dilation, bias=False)
        self.bn2 = norm_layer(planes)
        self.drop_block = drop_block if drop_block is not None else nn.Identity()
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(planes, outplanes, 1, bias=False)
        self.bn3 = norm_layer(outplanes)
        self.act3 = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.drop_path = drop_path

    def zero_init_last(self) -> None:
        if getattr(self.bn3, "weight", None) is not None:
            nn.init.zeros_(self.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.drop_block(self.bn2(self.conv2(x))))
        x = self.bn3(self.conv3(x))
        if self.drop_path is not None:
            x = self.drop_path(x)
        if self.downsample is not None:
            shortcut = self.downsample(shortcut)
        return self.act3(x + shortcut)


@dataclass(frozen=True)
class ResNetSpec:
    block: type[nn.Module]
    layers: tuple[int, int, int, int]
    norm: str = "batchnorm"
    widths: tuple[int, int, int, int] = (64, 128, 256, 512)  # planes per stage; stem = widths[0]


RESNET_SPECS: dict[str, ResNetSpec] = {
    "resnet18": ResNetSpec(BasicBlock, (2, 2, 2, 2)),
    "resnet34": ResNetSpec(BasicBlock, (3, 4, 6, 3)),
    "resnet50": ResNetSpec(Bottleneck, (3, 4, 6, 3)),
    "resnet101": ResNetSpec(Bottleneck, (3, 4, 23, 3)),
    "resnet152": ResNetSpec(Bottleneck, (3, 8, 36, 3)),
    "resnet50_gn": ResNetSpec(Bottleneck, (3, 4, 6, 3), norm="groupnorm"),
    # Ours, not timm's: a narrow, one-block-per-stage ResNet (~1/30 of resnet18's compute) that
    # trains from scratch on 2 CPU cores in minutes. It drives `dlc demo` and fast tests; the
    # layout (conv1/bn1/layerN) is the family's, so everything downstream treats it the same.
    "resnet_tiny": ResNetSpec(BasicBlock, (1, 1, 1, 1), widths=(16, 32, 64, 128)),
}


class ResNetFeatures(nn.Module):
    """timm's ResNet without the classifier: stem (conv1, bn1, act1, maxpool) and layer1..4.

    Args:
        block: BasicBlock or Bottleneck.
        layers: blocks per stage.
        output_stride: 8, 16 or 32; stages past it trade stride for dilation.
        norm_layer: normalization factory.
        drop_path_rate: stochastic depth rate, growing linearly over the blocks.
        drop_block_rate: DropBlock rate in stages 3 and 4 (timm's placement).
    """

    def __init__(self, block: type[nn.Module], layers: tuple[int, ...], output_stride: int = 32,
                 norm_layer: NormFactory = nn.BatchNorm2d, drop_path_rate: float = 0.0,
                 drop_block_rate: float = 0.0,
                 widths: tuple[int, ...] = (64, 128, 256, 512)):
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        stem = widths[0]
        self.conv1 = nn.Conv2d(3, stem, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(stem)
        self.act1 = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        drop_blocks = [None, None,
                       (drop_block_rate, 5, 0.25) if drop_block_rate else None,
                       (drop_block_rate, 3, 1.00) if drop_block_rate else None]
        total_blocks = sum(layers)
        block_idx_net = 0
        inplanes, net_stride, dilation, prev_dilation = stem, 4, 1, 1
        for stage_idx, (planes, num_blocks) in enumerate(zip(widths, layers)):
            stride = 1 if stage_idx == 0 else 2
            if net_stride >= output_stride:
                dilation *= stride
                stride = 1
            else:
                net_stride *= stride
            outplanes = planes * block.expansion
            downsample = None
            if stride != 1 or inplanes != outplanes:
                # 1x1 projection: dilation has no effect on it, so none is set (as timm).
                downsample = nn.Sequential(
                    nn.Conv2d(inplanes, outplanes, 1, stride=stride, bias=False),
                    norm_layer(outplanes))
            blocks = []
            for i in range(num_blocks):
                dpr = drop_path_rate * block_idx_net / max(total_blocks - 1, 1)
                db = drop_blocks[stage_idx]
                blocks.append(block(
                    inplanes, planes, stride=stride if i == 0 else 1,
                    downsample=downsample if i == 0 else None, dilation=dilation,
                    first_dilation=prev_dilation, norm_layer=norm_layer,
                    drop_block=DropBlock2d(*db) if db else None,
                    drop_path=DropPath(dpr) if dpr > 0 else None))
                prev_dilation = dilation
                inplanes = outplanes
                block_idx_net += 1
            self.add_module(f"layer{stage_idx + 1}", nn.Sequential(*blocks))
        self.num_features = inplanes
        self._init_weights()

    def _init_weights(self) -> None:
        # timm's init: Kaiming convs, unit norms, last norm of each residual branch zeroed so
        # every block starts as the identity (helps training from scratch).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, (BasicBlock, Bottleneck)):
                m.zero_init_last()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)

    forward_features = forward


@BACKBONES.register_module
class ResNet(BaseBackbone):
    """ResNet backbone, DeepLabCut 3's ``ResNet`` (keys under ``model.``).

    Args:
        model_name: resnet18, resnet34, resnet50, resnet101, resnet152, resnet50_gn or our
            resnet_tiny; a timm pretrained tag (``resnet50.tv_in1k``) picks the ImageNet
            checkpoint, timm's default tag otherwise.
        output_stride: 8, 16 or 32.
        pretrained: load timm's ImageNet weights when built for training
            (``dlc_train.models.pretrained``).
        drop_path_rate: stochastic depth rate.
        drop_block_rate: DropBlock rate (stages 3 and 4).
        freeze_bn_stats, freeze_bn_weights: see BaseBackbone (BatchNorm only).
    """

    def __init__(self, model_name: str = "resnet50", output_stride: int = 32,
                 pretrained: bool = False, drop_path_rate: float = 0.0,
                 drop_block_rate: float = 0.0, freeze_bn_stats: bool = False,
                 freeze_bn_weights: bool = False, **kwargs):
        super().__init__(stride=output_stride, freeze_bn_stats=freeze_bn_stats,
                         freeze_bn_weights=freeze_bn_weights)
        if kwargs:
            logger.warning("ResNet ignores unknown arguments %s", sorted(kwargs))
        arch = model_name.split(".")[0]
        if arch not in RESNET_SPECS:
            raise ValueError(f"unknown ResNet {model_name!r} (known: {sorted(RESNET_SPECS)})")
        spec = RESNET_SPECS[arch]
        self.model_name = model_name
        self.model = ResNetFeatures(spec.block, spec.layers, output_stride=output_stride,
                                    norm_layer=get_norm_layer(spec.norm),
                                    drop_path_rate=drop_path_rate,
                                    drop_block_rate=drop_block_rate, widths=spec.widths)
        if pretrained:
            self.load_pretrained_weights(self.model, model_name)

    @property
    def num_features(self) -> int:
        return self.model.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)
