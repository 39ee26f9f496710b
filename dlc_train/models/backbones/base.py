"""Backbone base class and registry."""
from __future__ import annotations

import logging
from abc import ABC, abstractmethod

import torch
from torch import nn

from dlc_train.registry import Registry

BACKBONES = Registry("backbone")
logger = logging.getLogger(__name__)


class BaseBackbone(ABC, nn.Module):
    """A feature extractor: image batch (B, 3, H, W) -> feature map (B, C, H/stride, W/stride).

    Args:
        stride: the backbone's output stride (input pixels per feature-map cell).
        freeze_bn_stats: keep normalization running statistics fixed while training.
        freeze_bn_weights: keep normalization affine parameters fixed while training.
    """

    def __init__(self, stride: int | float, freeze_bn_stats: bool = False,
                 freeze_bn_weights: bool = False):
        super().__init__()
        self.stride = stride
        self.freeze_bn_stats = freeze_bn_stats
        self.freeze_bn_weights = freeze_bn_weights

    @abstractmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ...

    @staticmethod
    def warn_pretrained_unavailable(model_name: str) -> None:
        """``pretrained: true`` in a config: there is no network here to fetch ImageNet weights."""
        logger.warning("ImageNet weights for %s are not available offline; the backbone starts "
                       "from random initialization (load a snapshot instead).", model_name)

    def train(self, mode: bool = True) -> "BaseBackbone":
        super().train(mode)
        if mode and (self.freeze_bn_stats or self.freeze_bn_weights):
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    if self.freeze_bn_stats:
                        module.eval()
                    if self.freeze_bn_weights:
                        module.weight.requires_grad_(False)
                        module.bias.requires_grad_(False)
        return self
