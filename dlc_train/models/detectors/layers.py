"""Small layers with torchvision's module layout (so detector snapshots load with strict keys).

``ConvNormAct`` is torchvision's ``Conv2dNormActivation``: an ``nn.Sequential`` of conv (index 0),
norm (1) and activation, with the conv bias only when there is no norm. ``FrozenBatchNorm2d``
keeps its statistics and affine parameters as buffers (no ``num_batches_tracked``), which is what
torchvision puts in backbones that start from pretrained weights.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

NormFactory = Callable[[int], nn.Module]
ActFactory = Callable[..., nn.Module]


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine parameters (all buffers).

    Args:
        num_features: channels.
        eps: numerical stabilizer (torchvision uses 1e-5).
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # A regular BatchNorm2d snapshot carries num_batches_tracked; it means nothing here.
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class ConvNormAct(nn.Sequential):
    """Conv -> norm -> activation with torchvision's indices (0, 1, 2).

    Args:
        in_channels, out_channels: channels.
        kernel_size: square kernel; padding keeps "same" size at stride 1.
        stride, groups, dilation: conv arguments.
        norm_layer: ``f(channels)`` or None (then the conv has a bias).
        act_layer: activation class or None.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 groups: int = 1, dilation: int = 1,
                 norm_layer: NormFactory | None = nn.BatchNorm2d,
                 act_layer: ActFactory | None = nn.ReLU):
        padding = (kernel_size - 1) // 2 * dilation
        layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel_size, stride,
                                             padding, dilation=dilation, groups=groups,
                                             bias=norm_layer is None)]
        if norm_layer is not None:
            layers.append(norm_layer(out_channels))
        if act_layer is not None:
            layers.append(act_layer(inplace=True))
        super().__init__(*layers)
        self.out_channels = out_channels


class SqueezeExcitation(nn.Module):
    """Squeeze-and-excitation with 1x1 convs ``fc1``/``fc2`` (torchvision's names).

    Args:
        channels: input (and output) channels.
        squeeze_channels: bottleneck width.
    """

    def __init__(self, channels: int, squeeze_channels: int):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = F.adaptive_avg_pool2d(x, 1)
        scale = F.hardsigmoid(self.fc2(F.relu(self.fc1(scale))))
        return x * scale


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Rounds channel counts to a multiple of ``divisor`` without losing more than 10%."""
    min_value = min_value or divisor
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value
