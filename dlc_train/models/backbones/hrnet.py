"""HRNet backbones with timm's module layout, as DeepLabCut 3 wraps them.

DeepLabCut 3 builds ``timm.create_model("hrnet_w32", features_only=True, out_indices=(1, 2, 3, 4),
feature_location="incre" if increased_channel_count else "")`` and keeps the stride-4 branch (or,
for DEKR, all four branches upsampled to stride 4 and concatenated). Its snapshots therefore hold
``backbone.model.conv1.weight``, ``backbone.model.stage2.0.fuse_layers.1.0.0.0.weight``, ... This
file rebuilds the same modules under the same names (no timm here), so such snapshots load with
strict keys. The residual blocks are the ResNet family's (timm's HRNet reuses them as well).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dlc_train.models.backbones.base import BACKBONES, BaseBackbone
from dlc_train.models.backbones.resnet import BasicBlock, Bottleneck

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HRNetStageSpec:
    num_modules: int
    block: type[nn.Module]
    num_blocks: tuple[int, ...]
    num_channels: tuple[int, ...]  # planes per branch (times block.expansion = channels)


@dataclass(frozen=True)
class HRNetSpec:
    stem_width: int
    stages: tuple[HRNetStageSpec, HRNetStageSpec, HRNetStageSpec, HRNetStageSpec]


def _hrnet_spec(width: int, stage1_planes: int = 64, stage1_blocks: int = 4,
                blocks: int = 4, modules: tuple[int, int, int] = (1, 4, 3)) -> HRNetSpec:
    """timm's HRNet family: branch widths W, 2W, 4W, 8W after a Bottleneck stage 1."""
    widths = (width, 2 * width, 4 * width, 8 * width)
    return HRNetSpec(stem_width=64, stages=(
        HRNetStageSpec(1, Bottleneck, (stage1_blocks,), (stage1_planes,)),
        HRNetStageSpec(modules[0], BasicBlock, (blocks,) * 2, widths[:2]),
        HRNetStageSpec(modules[1], BasicBlock, (blocks,) * 3, widths[:3]),
        HRNetStageSpec(modules[2], BasicBlock, (blocks,) * 4, widths),
    ))


HRNET_SPECS: dict[str, HRNetSpec] = {
    "hrnet_w18_small": HRNetSpec(stem_width=64, stages=(
        HRNetStageSpec(1, Bottleneck, (1,), (32,)),
        HRNetStageSpec(1, BasicBlock, (2, 2), (16, 32)),
        HRNetStageSpec(1, BasicBlock, (2, 2, 2), (16, 32, 64)),
        HRNetStageSpec(1, BasicBlock, (2, 2, 2, 2), (16, 32, 64, 128)),
    )),
    "hrnet_w18_small_v2": _hrnet_spec(18, stage1_blocks=2, blocks=2, modules=(1, 3, 2)),
    "hrnet_w18": _hrnet_spec(18),
    "hrnet_w30": _hrnet_spec(30),
    "hrnet_w32": _hrnet_spec(32),
    "hrnet_w40": _hrnet_spec(40),
    "hrnet_w44": _hrnet_spec(44),
    "hrnet_w48": _hrnet_spec(48),
    "hrnet_w64": _hrnet_spec(64),
}

# Planes of the "incre" modules (one Bottleneck per branch: x4 -> 128, 256, 512, 1024 channels).
INCRE_PLANES = (32, 64, 128, 256)


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int, relu: bool) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _make_layer(block: type[nn.Module], inplanes: int, planes: int, num_blocks: int,
                stride: int = 1) -> nn.Sequential:
    """A run of residual blocks; the first projects the shortcut when the shape changes."""
    outplanes = planes * block.expansion
    downsample = None
    if stride != 1 or inplanes != outplanes:
        downsample = nn.Sequential(nn.Conv2d(inplanes, outplanes, 1, stride=stride, bias=False),
                                   nn.BatchNorm2d(outplanes))
    layers = [block(inplanes, planes, stride=stride, downsample=downsample)]
    layers += [block(outplanes, planes) for _ in range(1, num_blocks)]
    return nn.Sequential(*layers)


class UpsampleTo(nn.Module):
    """Nearest upsampling by ``scale`` (timm's ``nn.Upsample(scale_factor=2**k)``).

    The output size is taken from the target branch rather than computed as ``scale * size``:
    identical where the input is a multiple of 32 (DeepLabCut pads to that), and it keeps the
    branches summable at any other size instead of failing, as timm does.

    Args:
        scale: upsampling factor (kept for the record; the target size decides).
    """

    def __init__(self, scale: int):
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
        return F.interpolate(x, size=size, mode="nearest")

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


class HighResolutionModule(nn.Module):
    """Parallel branches of residual blocks, then every branch fused into every output branch
    (sum of upsampled 1x1 projections from coarser and strided 3x3 convs from finer ones).

    Args:
        block: residual block of the branches.
        num_blocks: blocks per branch.
        in_channels: input channels per branch.
        planes: planes per branch (output channels = planes * block.expansion).
    """

    def __init__(self, block: type[nn.Module], num_blocks: tuple[int, ...],
                 in_channels: tuple[int, ...], planes: tuple[int, ...]):
        super().__init__()
        self.num_branches = len(planes)
        self.branches = nn.ModuleList(
            _make_layer(block, c_in, p, n) for c_in, p, n in zip(in_channels, planes, num_blocks))
        self.out_channels = tuple(p * block.expansion for p in planes)
        chs = self.out_channels
        if self.num_branches == 1:
            self.fuse_layers: nn.Module = nn.Identity()
        else:
            fuse_layers = []
            for i in range(self.num_branches):
                fuse: list[nn.Module] = []
                for j in range(self.num_branches):
                    if j > i:    # coarser: 1x1 to branch i's width, then upsample
                        fuse.append(nn.Sequential(
                            nn.Conv2d(chs[j], chs[i], 1, bias=False), nn.BatchNorm2d(chs[i]),
                            UpsampleTo(2 ** (j - i))))
                    elif j == i:
                        fuse.append(nn.Identity())
                    else:        # finer: i - j strided 3x3 convs, ReLU between them only
                        steps = [_conv_bn(chs[j], chs[j], 3, 2, relu=True)
                                 for _ in range(i - j - 1)]
                        steps.append(_conv_bn(chs[j], chs[i], 3, 2, relu=False))
                        fuse.append(nn.Sequential(*steps))
                fuse_layers.append(nn.ModuleList(fuse))
            self.fuse_layers = nn.ModuleList(fuse_layers)
        self.fuse_act = nn.ReLU(inplace=False)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        if self.num_branches == 1:
            return xs
        fused = []
        for i, fuse in enumerate(self.fuse_layers):
            y = None
            for j, f in enumerate(fuse):
                z = f[:-1](xs[j]) if j > i else f(xs[j])
                if j > i:
                    z = f[-1](z, xs[i].shape[-2:])
                y = z if y is None else y + z
            fused.append(self.fuse_act(y))
        return fused


class HRNetFeatures(nn.Module):
    """timm's ``HighResolutionNetFeatures`` returning the four branches (strides 4, 8, 16, 32).

    Args:
        spec: stage layout.
        incre: add timm's "incre" modules (a Bottleneck per branch: 128/256/512/1024 channels).
    """

    def __init__(self, spec: HRNetSpec, incre: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(3, spec.stem_width, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(spec.stem_width)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(spec.stem_width, 64, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.act2 = nn.ReLU(inplace=True)

        s1 = spec.stages[0]
        self.layer1 = _make_layer(s1.block, 64, s1.num_channels[0], s1.num_blocks[0])
        channels: tuple[int, ...] = (s1.num_channels[0] * s1.block.expansion,)
        # Registration order (layer1, transition1, stage2, transition2, ...) fixes the
        # state_dict order, which must match DeepLabCut's key files.
        for idx, stage in enumerate(spec.stages[1:], start=1):
            wanted = tuple(p * stage.block.expansion for p in stage.num_channels)
            self.add_module(f"transition{idx}", self._make_transition(channels, wanted))
            modules = []
            in_chs = wanted
            for _ in range(stage.num_modules):
                module = HighResolutionModule(stage.block, stage.num_blocks, in_chs,
                                              stage.num_channels)
                in_chs = module.out_channels
                modules.append(module)
            self.add_module(f"stage{idx + 1}", nn.Sequential(*modules))
            channels = in_chs
        self.incre_modules: nn.ModuleList | None = None
        if incre:
            self.incre_modules = nn.ModuleList(
                _make_layer(Bottleneck, c, p, 1) for c, p in zip(channels, INCRE_PLANES))
            channels = tuple(p * Bottleneck.expansion for p in INCRE_PLANES)
        self.out_channels = channels
        self._init_weights()

    @staticmethod
    def _make_transition(prev: tuple[int, ...], wanted: tuple[int, ...]) -> nn.ModuleList:
        layers: list[nn.Module] = []
        for i, c in enumerate(wanted):
            if i < len(prev):
                layers.append(nn.Identity() if prev[i] == c
                              else _conv_bn(prev[i], c, 3, 1, relu=True))
            else:  # a new, coarser branch grown from the last one by strided 3x3 convs
                steps = [_conv_bn(prev[-1], c if k == i - len(prev) else prev[-1], 3, 2,
                                  relu=True) for k in range(i + 1 - len(prev))]
                layers.append(nn.Sequential(*steps))
        return nn.ModuleList(layers)

    def _init_weights(self) -> None:
        # timm's HRNet init (no zero-init of the last norm, unlike its ResNets).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @staticmethod
    def _transition(transition: nn.ModuleList, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        # As timm: kept branches pass through; new ones grow from the last (coarsest) branch.
        return [xs[i] if isinstance(t, nn.Identity) else t(xs[min(i, len(xs) - 1)])
                for i, t in enumerate(transition)]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.layer1(x)
        xs = [t(x) for t in self.transition1]
        xs = self.stage2(xs)
        xs = self.stage3(self._transition(self.transition2, xs))
        xs = self.stage4(self._transition(self.transition3, xs))
        if self.incre_modules is not None:
            xs = [m(f) for m, f in zip(self.incre_modules, xs)]
        return xs


@BACKBONES.register_module
class HRNet(BaseBackbone):
    """HRNet backbone, DeepLabCut 3's ``HRNet`` (keys under ``model.``), output stride 4.

    Args:
        model_name: hrnet_w18, hrnet_w32, hrnet_w48 (DeepLabCut's) or another timm HRNet
            (hrnet_w18_small[_v2], w30, w40, w44, w64); a timm tag after "." picks the ImageNet
            checkpoint.
        pretrained: load timm's ImageNet weights when built for training
            (``dlc_train.models.pretrained``).
        interpolate_branches: return all four branches bilinearly upsampled to stride 4 and
            concatenated (DEKR), instead of the stride-4 branch alone.
        increased_channel_count: use timm's "incre" features (128 channels at stride 4, or
            1920 with ``interpolate_branches``).
        stride: output stride; always 4 (accepted for DeepLabCut config compatibility).
        freeze_bn_stats, freeze_bn_weights: see BaseBackbone.
    """

    def __init__(self, model_name: str = "hrnet_w32", pretrained: bool = False,
                 interpolate_branches: bool = False, increased_channel_count: bool = False,
                 stride: int = 4, freeze_bn_stats: bool = False, freeze_bn_weights: bool = False,
                 **kwargs):
        super().__init__(stride=stride, freeze_bn_stats=freeze_bn_stats,
                         freeze_bn_weights=freeze_bn_weights)
        if kwargs:
            logger.warning("HRNet ignores unknown arguments %s", sorted(kwargs))
        if stride != 4:
            raise ValueError(f"HRNet's output stride is 4, got stride={stride}")
        arch = model_name.split(".")[0]
        if arch not in HRNET_SPECS:
            raise ValueError(f"unknown HRNet {model_name!r} (known: {sorted(HRNET_SPECS)})")
        self.model_name = model_name
        self.interpolate_branches = interpolate_branches
        self.increased_channel_count = increased_channel_count
        self.model = HRNetFeatures(HRNET_SPECS[arch], incre=increased_channel_count)
        if pretrained:
            self.load_pretrained_weights(self.model, model_name)

    @property
    def num_features(self) -> int:
        chs = self.model.out_channels
        return sum(chs) if self.interpolate_branches else chs[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs = self.model(x)
        if not self.interpolate_branches:
            return xs[0]
        size = xs[0].shape[-2:]
        # bilinear, align_corners=False: F.interpolate's default, which DeepLabCut relies on.
        return torch.cat([xs[0]] + [F.interpolate(f, size=size, mode="bilinear",
                                                  align_corners=False) for f in xs[1:]], dim=1)
