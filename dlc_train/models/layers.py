"""Small layers shared by several model families (normalization, stochastic depth, DropBlock).

They follow timm's definitions so that state_dicts and behaviour match the timm models DeepLabCut
wraps, without depending on timm.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


class GroupNorm(nn.GroupNorm):
    """GroupNorm taking the channel count first, so it can stand in for a BatchNorm2d factory.

    Args:
        num_channels: channels to normalize.
        num_groups: groups (32, as timm's ``resnet50_gn``).
        eps: numerical stabilizer.
        affine: learn a per-channel scale and shift.
    """

    def __init__(self, num_channels: int, num_groups: int = 32, eps: float = 1e-5,
                 affine: bool = True):
        super().__init__(num_groups, num_channels, eps=eps, affine=affine)


NormFactory = Callable[[int], nn.Module]


def get_norm_layer(name: str) -> NormFactory:
    """Returns a ``f(num_channels) -> nn.Module`` factory for "batchnorm" or "groupnorm"."""
    factories: dict[str, NormFactory] = {"batchnorm": nn.BatchNorm2d, "groupnorm": GroupNorm}
    try:
        return factories[name]
    except KeyError:
        raise ValueError(f"unknown norm layer {name!r} (known: {sorted(factories)})") from None


def drop_path(x: torch.Tensor, drop_prob: float = 0.0, training: bool = False) -> torch.Tensor:
    """Drops whole residual branches per sample (stochastic depth), rescaling the kept ones."""
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1.0 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    mask = x.new_empty(shape).bernoulli_(keep_prob)
    return x * mask / keep_prob


class DropPath(nn.Module):
    """Stochastic depth on the residual branch (identity at eval time).

    Args:
        drop_prob: probability of dropping a sample's branch.
    """

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.3f}"


class DropBlock2d(nn.Module):
    """DropBlock (Ghiasi et al. 2018), the "fast" variant timm uses: seeds dropped at rate gamma,
    grown to ``block_size`` squares by max pooling, kept activations rescaled.

    Args:
        drop_prob: target fraction of dropped activations.
        block_size: side of the dropped squares (odd).
        gamma_scale: scale on the seed rate (timm uses 0.25 in stage 3 and 1.0 in stage 4).
    """

    def __init__(self, drop_prob: float = 0.1, block_size: int = 7, gamma_scale: float = 1.0):
        super().__init__()
        self.drop_prob = drop_prob
        self.block_size = block_size
        self.gamma_scale = gamma_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x
        _, _, h, w = x.shape
        block = min(self.block_size, h, w)
        valid = max((w - block + 1) * (h - block + 1), 1)
        gamma = self.gamma_scale * self.drop_prob * (h * w) / block ** 2 / valid
        seeds = torch.empty_like(x).bernoulli_(min(gamma, 1.0))
        dropped = F.max_pool2d(seeds, kernel_size=block, stride=1, padding=block // 2)
        # An even block grows the map by one cell; crop back to the input size.
        keep = 1.0 - dropped[..., :h, :w]
        return x * keep * (keep.numel() / (keep.sum() + 1e-7))
