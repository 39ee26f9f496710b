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
    def load_pretrained_weights(target: nn.Module, model_name: str, family: str = "timm") -> bool:
        """``pretrained: true``: loads the published ImageNet weights of ``model_name`` into
        ``target`` when the model is built for training (see ``dlc_train.models.pretrained``);
        built for anything else, nothing is fetched. Returns whether weights were loaded."""
        from dlc_train.models.pretrained.apply import load_pretrained_backbone  # no import cycle
        return load_pretrained_backbone(target, model_name, family)

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
