"""CSPNeXt backbones (RTMDet / RTMPose), with DeepLabCut 3's module layout.

DeepLabCut 3 reimplements mmdet's CSPNeXt without mmcv; its snapshots hold
``backbone.stem.0.conv.weight``, ``backbone.stage1.1.blocks.0.conv2.depthwise_conv.norm.bias``,
``backbone.stage4.1.conv2.conv.weight`` (the SPP bottleneck), ... This file builds the same
modules under the same names, so such snapshots load with strict keys.

Variants differ only in ``deepen_factor`` (blocks per stage) and ``widen_factor`` (channels);
see ``CSPNEXT_VARIANTS``. DeepLabCut's configs always spell the factors out.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from dlc_train.models.backbones.base import BACKBONES, BaseBackbone

logger = logging.getLogger(__name__)

# (deepen_factor, widen_factor) of the P5 variants, as mmdet/mmpose and DeepLabCut configure them.
# Output channels: 1024 * widen_factor (s 512, m 768, x 1280).
CSPNEXT_VARIANTS: dict[str, tuple[float, float]] = {
    "cspnext_t": (0.167, 0.375),
    "cspnext_s": (0.33, 0.5),
    "cspnext_m": (0.67, 0.75),
    "cspnext_l": (1.0, 1.0),
    "cspnext_x": (1.33, 1.25),
}


def _activation(name: str | None) -> nn.Module | None:
    if name is None:
        return None
    if name == "SiLU":
        return nn.SiLU(inplace=True)
    if name == "ReLU":
        return nn.ReLU(inplace=True)
    raise ValueError(f"unknown CSPNeXt activation {name!r} (known: 'SiLU', 'ReLU')")


def _norm(name: str | None, channels: int) -> nn.Module | None:
    if name is None:
        return None
    # "SyncBN" is what DeepLabCut's configs name; a SyncBatchNorm outside a distributed run is a
    # BatchNorm2d with the same state_dict, so BatchNorm2d is built for both: it runs on CPU,
    # exports to ONNX and BaseBackbone's freeze_bn_* applies to it. Multi-GPU training would
    # convert it with nn.SyncBatchNorm.convert_sync_batchnorm.
    if name in ("SyncBN", "BN"):
        return nn.BatchNorm2d(channels)
    raise ValueError(f"unknown CSPNeXt norm_layer {name!r} (known: 'SyncBN', 'BN')")


class ConvModule(nn.Module):
    """Conv -> norm -> activation, mmcv's ConvModule layout (``conv``, ``norm``).

    Args:
        in_channels, out_channels: channels.
        kernel_size, stride, padding, groups: of the convolution.
        norm_layer: "SyncBN", "BN" or None (then the conv has a bias).
        activation_fn: "SiLU", "ReLU" or None.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, groups: int = 1, norm_layer: str | None = "SyncBN",
                 activation_fn: str | None = "SiLU"):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                              padding=padding, groups=groups, bias=norm_layer is None)
        self.norm = _norm(norm_layer, out_channels)
        self.activate = _activation(activation_fn)
        # mmcv's init, as DeepLabCut: Kaiming normal (fan_in, ReLU gain), unit norms.
        nn.init.kaiming_normal_(self.conv.weight, a=0, nonlinearity="relu")
        if self.conv.bias is not None:
            nn.init.zeros_(self.conv.bias)
        if self.norm is not None:
            nn.init.ones_(self.norm.weight)
            nn.init.zeros_(self.norm.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        if self.activate is not None:
            x = self.activate(x)
        return x


class DepthwiseSeparableConv(nn.Module):
    """Depthwise k x k ConvModule then pointwise 1x1 ConvModule (each with norm and act).

    Args:
        in_channels, out_channels: channels.
        kernel_size, padding: of the depthwise conv.
        norm_layer, activation_fn: see ConvModule.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0,
                 norm_layer: str | None = "SyncBN", activation_fn: str | None = "SiLU"):
        super().__init__()
        self.depthwise_conv = ConvModule(in_channels, in_channels, kernel_size, padding=padding,
                                         groups=in_channels, norm_layer=norm_layer,
                                         activation_fn=activation_fn)
        self.pointwise_conv = ConvModule(in_channels, out_channels, 1, norm_layer=norm_layer,
                                         activation_fn=activation_fn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise_conv(self.depthwise_conv(x))


class CSPNeXtBlock(nn.Module):
    """3x3 ConvModule -> depthwise-separable 5x5, with an identity shortcut.

    Args:
        in_channels, out_channels: channels (the shortcut needs them equal).
        expansion: hidden channels = out_channels * expansion.
        add_identity: add the input to the output (when shapes allow).
        kernel_size: depthwise kernel.
        norm_layer, activation_fn: see ConvModule.
    """

    def __init__(self, in_channels: int, out_channels: int, expansion: float = 0.5,
                 add_identity: bool = True, kernel_size: int = 5,
                 norm_layer: str | None = "SyncBN", activation_fn: str | None = "SiLU"):
        super().__init__()
        hidden = int(out_channels * expansion)
        self.conv1 = ConvModule(in_channels, hidden, 3, padding=1, norm_layer=norm_layer,
                                activation_fn=activation_fn)
        self.conv2 = DepthwiseSeparableConv(hidden, out_channels, kernel_size,
                                            padding=kernel_size // 2, norm_layer=norm_layer,
                                            activation_fn=activation_fn)
        self.add_identity = add_identity and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))
        return out + x if self.add_identity else out


class ChannelAttention(nn.Module):
    """Squeeze-excite without reduction: global average pool -> 1x1 conv -> hard sigmoid gate.

    Args:
        channels: input (and output) channels.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.global_avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Conv2d(channels, channels, 1, bias=True)
        self.act = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.act(self.fc(self.global_avgpool(x)))


class CSPLayer(nn.Module):
    """Cross-stage partial layer: a main branch through the blocks, a 1x1 short branch,
    concatenated, optionally gated by channel attention, then fused by a 1x1 conv.

    Args:
        in_channels, out_channels: channels.
        expand_ratio: each branch has out_channels * expand_ratio channels.
        num_blocks: CSPNeXtBlocks in the main branch.
        add_identity: residual shortcuts inside the blocks.
        channel_attention: gate the concatenation with ChannelAttention.
        norm_layer, activation_fn: see ConvModule.
    """

    def __init__(self, in_channels: int, out_channels: int, expand_ratio: float = 0.5,
                 num_blocks: int = 1, add_identity: bool = True, channel_attention: bool = False,
                 norm_layer: str | None = "SyncBN", activation_fn: str | None = "SiLU"):
        super().__init__()
        mid = int(out_channels * expand_ratio)
        kw = dict(norm_layer=norm_layer, activation_fn=activation_fn)
        self.main_conv = ConvModule(in_channels, mid, 1, **kw)
        self.short_conv = ConvModule(in_channels, mid, 1, **kw)
        self.final_conv = ConvModule(2 * mid, out_channels, 1, **kw)
        self.blocks = nn.Sequential(*[CSPNeXtBlock(mid, mid, 1.0, add_identity, **kw)
                                      for _ in range(num_blocks)])
        self.attention = ChannelAttention(2 * mid) if channel_attention else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat((self.blocks(self.main_conv(x)), self.short_conv(x)), dim=1)
        if self.attention is not None:
            x = self.attention(x)
        return self.final_conv(x)


class SPPBottleneck(nn.Module):
    """Spatial pyramid pooling: 1x1 reduce, max pools of several sizes (stride 1), concat,
    1x1 fuse.

    Args:
        in_channels, out_channels: channels.
        kernel_sizes: max-pool kernels.
        norm_layer, activation_fn: see ConvModule.
    """

    def __init__(self, in_channels: int, out_channels: int,
                 kernel_sizes: tuple[int, ...] = (5, 9, 13), norm_layer: str | None = "SyncBN",
                 activation_fn: str | None = "SiLU"):
        super().__init__()
        mid = in_channels // 2
        self.conv1 = ConvModule(in_channels, mid, 1, norm_layer=norm_layer,
                                activation_fn=activation_fn)
        self.poolings = nn.ModuleList([nn.MaxPool2d(k, stride=1, padding=k // 2)
                                       for k in kernel_sizes])
        self.conv2 = ConvModule(mid * (len(kernel_sizes) + 1), out_channels, 1,
                                norm_layer=norm_layer, activation_fn=activation_fn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        return self.conv2(torch.cat([x] + [pool(x) for pool in self.poolings], dim=1))


@dataclass(frozen=True)
class CSPStageSpec:
    in_channels: int
    out_channels: int
    num_blocks: int
    add_identity: bool
    use_spp: bool


CSPNEXT_ARCHS: dict[str, tuple[CSPStageSpec, ...]] = {
    "P5": (CSPStageSpec(64, 128, 3, True, False),
           CSPStageSpec(128, 256, 6, True, False),
           CSPStageSpec(256, 512, 6, True, False),
           CSPStageSpec(512, 1024, 3, False, True)),
    "P6": (CSPStageSpec(64, 128, 3, True, False),
           CSPStageSpec(128, 256, 6, True, False),
           CSPStageSpec(256, 512, 6, True, False),
           CSPStageSpec(512, 768, 3, True, False),
           CSPStageSpec(768, 1024, 3, False, True)),
}


@BACKBONES.register_module
class CSPNeXt(BaseBackbone):
    """CSPNeXt backbone, DeepLabCut 3's ``CSPNeXt`` (keys ``stem.*``, ``stage1.*``, ...).

    Output stride 32 (P5) or 64 (P6); ``num_features`` = 1024 * widen_factor for P5.

    Args:
        model_name: the variant's name (cspnext_s, cspnext_m, cspnext_x, ...): the factors
            below define the network, as in DeepLabCut; the name picks the ImageNet weights.
        pretrained: load DeepLabCut's ImageNet weights for ``model_name`` when built for
            training (``dlc_train.models.pretrained``).
        arch: "P5" or "P6".
        expand_ratio: channel ratio of the CSP layers' branches.
        deepen_factor: multiplies the blocks per stage (rounded, at least 1).
        widen_factor: multiplies the channels.
        out_indices: -1 or an int for one feature map (the last stage by default), a tuple for
            a tuple of maps; index 0 is the stem.
        channel_attention: ChannelAttention in every CSP layer.
        norm_layer: "SyncBN" (built as BatchNorm2d, see ``_norm``) or "BN".
        activation_fn: "SiLU" or "ReLU".
        freeze_bn_stats, freeze_bn_weights: see BaseBackbone.
    """

    def __init__(self, model_name: str = "cspnext_m", pretrained: bool = False,
                 arch: str = "P5", expand_ratio: float = 0.5, deepen_factor: float = 0.67,
                 widen_factor: float = 0.75, out_indices: int | tuple[int, ...] = -1,
                 channel_attention: bool = True, norm_layer: str = "SyncBN",
                 activation_fn: str = "SiLU", freeze_bn_stats: bool = False,
                 freeze_bn_weights: bool = False, **kwargs):
        if arch not in CSPNEXT_ARCHS:
            raise ValueError(f"unknown CSPNeXt arch {arch!r} (known: {sorted(CSPNEXT_ARCHS)})")
        specs = CSPNEXT_ARCHS[arch]
        super().__init__(stride=2 ** (len(specs) + 1), freeze_bn_stats=freeze_bn_stats,
                         freeze_bn_weights=freeze_bn_weights)
        if kwargs:
            logger.warning("CSPNeXt ignores unknown arguments %s", sorted(kwargs))
        self.model_name = model_name
        kw = dict(norm_layer=norm_layer, activation_fn=activation_fn)

        stem = specs[0].in_channels
        half, full = int(stem * widen_factor // 2), int(stem * widen_factor)
        self.stem = nn.Sequential(ConvModule(3, half, 3, stride=2, padding=1, **kw),
                                  ConvModule(half, half, 3, padding=1, **kw),
                                  ConvModule(half, full, 3, padding=1, **kw))
        self.layers = ["stem"]
        out_channels = full
        for i, spec in enumerate(specs):
            in_channels = int(spec.in_channels * widen_factor)
            out_channels = int(spec.out_channels * widen_factor)
            num_blocks = max(round(spec.num_blocks * deepen_factor), 1)
            stage: list[nn.Module] = [ConvModule(in_channels, out_channels, 3, stride=2,
                                                 padding=1, **kw)]
            if spec.use_spp:
                stage.append(SPPBottleneck(out_channels, out_channels, **kw))
            stage.append(CSPLayer(out_channels, out_channels, expand_ratio=expand_ratio,
                                  num_blocks=num_blocks, add_identity=spec.add_identity,
                                  channel_attention=channel_attention, **kw))
            self.add_module(f"stage{i + 1}", nn.Sequential(*stage))
            self.layers.append(f"stage{i + 1}")

        self.single_output = isinstance(out_indices, int)
        if self.single_output:
            out_indices = (len(self.layers) - 1 if out_indices == -1 else out_indices,)
        self.out_indices = tuple(out_indices)
        self._num_features = out_channels
        if pretrained:
            self.load_pretrained_weights(self, model_name, family="cspnext")

    @property
    def num_features(self) -> int:
        return self._num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        outs = []
        for i, name in enumerate(self.layers):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
        return outs[-1] if self.single_output else tuple(outs)
