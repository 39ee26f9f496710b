"""DEKR head (Geng et al., "Bottom-Up Human Pose Estimation Via Disentangled Keypoint Regression",
CVPR 2021), with DeepLabCut 3's state_dict layout.

Two branches on the backbone features (HRNet with all branches concatenated, stride 4):
- ``heatmap_head``: K keypoint heatmaps plus one animal-centre heatmap (K + 1 channels);
- ``offset_head``: per keypoint, a private group of channels refined by adaptive (deformable)
  convolutions, regressing the offset from each pixel to that keypoint of the animal centred
  there (2K channels: x, y per keypoint).

DeepLabCut uses ``torchvision.ops.DeformConv2d`` for the adaptive convolution. Here it is written
with ``grid_sample`` + a 1x1 convolution so that it needs no torchvision and exports to ONNX
(opset >= 16, GridSample) and runs in onnxruntime / TensorRT; the numbers are the same
(bilinear sampling, zero outside the map).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dlc_train.models.backbones.resnet import BasicBlock
from dlc_train.models.criterions.base import BaseCriterion
from dlc_train.models.heads.base import HEADS, WEIGHT_INITS, BaseHead, apply_weight_init
from dlc_train.models.predictors.base import BasePredictor
from dlc_train.models.target_generators.base import BaseGenerator


def deform_conv2d(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor,
                  bias: torch.Tensor | None = None, stride: int = 1, padding: int = 0,
                  dilation: int = 1, groups: int = 1) -> torch.Tensor:
    """Deformable convolution (DCN v1, one offset group), as ``torchvision.ops.deform_conv2d``.

    Each kernel tap (i, j) of output cell (u, v) reads the input, bilinearly, at
    ``(u * stride - padding + i * dilation + dy, v * stride - padding + j * dilation + dx)``
    where ``dy = offset[:, 2k]``, ``dx = offset[:, 2k + 1]`` and ``k = i * kw + j``; samples
    outside the map read zero. All taps are gathered by one ``grid_sample`` (k*k times the input
    in memory: cheap for DEKR's 15-channel groups) and mixed by a 1x1 convolution.

    Args:
        x: (N, C, H, W) input.
        offset: (N, 2 * kh * kw, Ho, Wo) sampling offsets in input pixels, (y, x) per tap.
        weight: (O, C / groups, kh, kw) kernel.
        bias: (O,) or None.
        stride, padding, dilation: as for ``nn.Conv2d`` (one value for both axes).
        groups: convolution groups.
    """
    n, c, h, w = x.shape
    kh, kw = weight.shape[-2:]
    taps = kh * kw
    ho, wo = offset.shape[-2:]
    dtype, device = x.dtype, x.device
    ki = torch.arange(kh, device=device, dtype=dtype).repeat_interleave(kw) * dilation
    kj = torch.arange(kw, device=device, dtype=dtype).repeat(kh) * dilation
    base_y = torch.arange(ho, device=device, dtype=dtype) * stride - padding
    base_x = torch.arange(wo, device=device, dtype=dtype) * stride - padding
    offset = offset.reshape(n, taps, 2, ho, wo)
    py = base_y[None, None, :, None] + ki[None, :, None, None] + offset[:, :, 0]  # (N, T, Ho, Wo)
    px = base_x[None, None, None, :] + kj[None, :, None, None] + offset[:, :, 1]
    # Normalized for align_corners=False: pixel p <-> (2p + 1) / size - 1 (valid for size 1).
    grid = torch.stack(((2 * px + 1) / w - 1, (2 * py + 1) / h - 1), dim=-1)
    grid = grid.reshape(n, taps * ho, wo, 2)
    cols = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    cols = cols.reshape(n, c * taps, ho, wo)                   # channel-major, then tap
    return F.conv2d(cols, weight.reshape(weight.shape[0], -1, 1, 1), bias, groups=groups)


class DeformConv2d(nn.Module):
    """``torchvision.ops.DeformConv2d`` stand-in (same parameter names, so same keys).

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias: as
            ``nn.Conv2d``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 stride: int = 1, padding: int = 0, dilation: int = 1, groups: int = 1,
                 bias: bool = True):
        super().__init__()
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.weight = nn.Parameter(
            torch.empty(out_channels, in_channels // groups, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        # torchvision's default init (Kaiming uniform, a=sqrt(5), as nn.Conv2d)
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        return deform_conv2d(x, offset, self.weight, self.bias, self.stride, self.padding,
                             self.dilation, self.groups)


class AdaptBlock(nn.Module):
    """DEKR's adaptive residual block: a 3x3 deformable conv whose 9 taps are the regular grid
    moved by a per-pixel affine map (2x2 matrix + translation, both predicted by 3x3 convs).

    Args:
        in_channels, out_channels: channels (equal unless ``downsample`` is given).
        stride: stride of the adaptive conv (DEKR uses 1; the offsets live on the input grid).
        downsample: shortcut projection or None.
        dilation: dilation (and padding) of the adaptive conv.
        deformable_groups: passed as the conv ``groups`` (DeepLabCut's wiring; 1 in its configs).
    """

    expansion = 1

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1,
                 downsample: nn.Module | None = None, dilation: int = 1,
                 deformable_groups: int = 1):
        super().__init__()
        # Columns are the taps (row-major over the 3x3 kernel); rows are (dy, dx).
        regular = torch.tensor([[-1, -1, -1, 0, 0, 0, 1, 1, 1],
                                [-1, 0, 1, -1, 0, 1, -1, 0, 1]], dtype=torch.float32)
        self.register_buffer("regular_matrix", regular)
        self.downsample = downsample
        self.transform_matrix_conv = nn.Conv2d(in_channels, 4, 3, 1, 1, bias=True)
        self.translation_conv = nn.Conv2d(in_channels, 2, 3, 1, 1, bias=True)
        self.adapt_conv = DeformConv2d(in_channels, out_channels, 3, stride=stride,
                                       padding=dilation, dilation=dilation, bias=False,
                                       groups=deformable_groups)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def offsets(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 18, H, W) tap offsets: (A - I) @ regular + t, laid out (dy, dx) per tap."""
        n, _, h, w = x.shape
        regular = self.regular_matrix
        # A[r, c] = transform[2r + c]; (A @ R)[r, k] = sum_c A[r, c] R[c, k]
        matrix = self.transform_matrix_conv(x).reshape(n, 2, 2, 1, h, w)
        moved = (matrix * regular[None, None, :, :, None, None]).sum(dim=2)  # (N, 2, 9, H, W)
        offset = moved - regular[None, :, :, None, None]
        offset = offset + self.translation_conv(x)[:, :, None]             # same t for all taps
        return offset.transpose(1, 2).reshape(n, 18, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn(self.adapt_conv(x, self.offsets(x)))
        shortcut = self.downsample(x) if self.downsample is not None else x
        return self.relu(out + shortcut)


def _make_blocks(block: type[nn.Module], in_channels: int, out_channels: int, num_blocks: int,
                 dilation: int = 1) -> nn.Sequential:
    downsample = None
    if in_channels != out_channels * block.expansion:
        downsample = nn.Sequential(
            nn.Conv2d(in_channels, out_channels * block.expansion, 1, bias=False),
            nn.BatchNorm2d(out_channels * block.expansion))
    layers = [block(in_channels, out_channels, downsample=downsample, dilation=dilation)]
    layers += [block(out_channels * block.expansion, out_channels, dilation=dilation)
               for _ in range(1, num_blocks)]
    return nn.Sequential(*layers)


def _transition(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


def _final_conv(in_channels: int, out_channels: int, kernel: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel, padding=1 if kernel == 3 else 0)


class DEKRHeatmap(nn.Module):
    """Keypoint + centre heatmaps: 1x1 transition, residual blocks, final conv.

    Args:
        channels: [in, hidden, K + 1].
        num_blocks: residual (BasicBlock) blocks.
        dilation_rate: dilation of the blocks.
        final_conv_kernel: 1 or 3.
    """

    def __init__(self, channels: list[int], num_blocks: int, dilation_rate: int = 1,
                 final_conv_kernel: int = 1):
        super().__init__()
        c_in, hidden, c_out = channels
        self.transition_heatmap = _transition(c_in, hidden)
        self.head_heatmap = nn.ModuleList([
            _make_blocks(BasicBlock, hidden, hidden, num_blocks, dilation=dilation_rate),
            _final_conv(hidden, c_out, final_conv_kernel)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.transition_heatmap(x)
        return self.head_heatmap[1](self.head_heatmap[0](x))


class DEKROffset(nn.Module):
    """Per-keypoint offset regression with adaptive convolutions.

    Args:
        channels: [in, K * num_offset_per_kpt, K].
        num_offset_per_kpt: channels private to each keypoint.
        num_blocks: AdaptBlocks per keypoint.
        dilation_rate: dilation of the adaptive convs.
        final_conv_kernel: 1 or 3.
    """

    def __init__(self, channels: list[int], num_offset_per_kpt: int, num_blocks: int,
                 dilation_rate: int = 1, final_conv_kernel: int = 1):
        super().__init__()
        c_in, offset_channels, num_joints = channels
        if offset_channels != num_joints * num_offset_per_kpt:
            raise ValueError(f"offset channels {offset_channels} != {num_joints} keypoints x "
                             f"{num_offset_per_kpt} channels per keypoint")
        self.num_joints = num_joints
        self.offset_perkpt = num_offset_per_kpt
        self.transition_offset = _transition(c_in, offset_channels)
        self.offset_feature_layers = nn.ModuleList(
            _make_blocks(AdaptBlock, num_offset_per_kpt, num_offset_per_kpt, num_blocks,
                         dilation=dilation_rate) for _ in range(num_joints))
        self.offset_final_layer = nn.ModuleList(
            _final_conv(num_offset_per_kpt, 2, final_conv_kernel) for _ in range(num_joints))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.transition_offset(x)
        groups = features.split(self.offset_perkpt, dim=1)
        return torch.cat([final(layers(g)) for g, layers, final in
                          zip(groups, self.offset_feature_layers, self.offset_final_layer)], dim=1)


@HEADS.register_module
class DEKRHead(BaseHead):
    """DEKR head: {"heatmap": (B, K + 1, h, w) (centre last), "offset": (B, 2K, h, w)}.

    Args:
        predictor, target_generator, criterion, aggregator: see BaseHead.
        heatmap_config: DEKRHeatmap arguments.
        offset_config: DEKROffset arguments.
        weight_init: a WEIGHT_INITS name ("dekr"), ``{"type": name, **kwargs}`` or None.
        stride: head stride; always 1 for DEKR.
    """

    def __init__(self, predictor: BasePredictor, target_generator: BaseGenerator,
                 criterion: BaseCriterion | dict[str, BaseCriterion],
                 heatmap_config: dict, offset_config: dict, aggregator: nn.Module | None = None,
                 weight_init: str | dict | None = "dekr", stride: int | float = 1):
        super().__init__(stride, predictor, target_generator, criterion, aggregator)
        self.heatmap_head = DEKRHeatmap(**heatmap_config)
        self.offset_head = DEKROffset(**offset_config)
        apply_weight_init(self, weight_init)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"heatmap": self.heatmap_head(x), "offset": self.offset_head(x)}


@WEIGHT_INITS.register_module(name="dekr", force=True)
def init_dekr(module: nn.Module, std: float = 0.001) -> None:
    """DeepLabCut's "dekr" init: every parameter whose name holds "bias" is set to 0, every
    other one (conv and deconv kernels, and also the BatchNorm scales) drawn from N(0, std).

    It replaces the conv-only "dekr" entry of heads/base.py (registered first) because
    DeepLabCut's initializer walks ``named_parameters``, BatchNorm weights included; its
    special-casing of ``transform_matrix_conv`` / ``translation_conv`` tests attributes of
    tensors and never fires, so it is left out here too.
    """
    for name, param in module.named_parameters():
        if "bias" in name:
            nn.init.zeros_(param)
        else:
            nn.init.normal_(param, std=std)
