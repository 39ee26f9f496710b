"""Predictor base class and registry.

A predictor turns a head's raw outputs into keypoints. Predictors are written with tensor ops
only (no Python loops over the batch or keypoints) so that the same module runs in eager PyTorch
and inside the exported ONNX graph.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

from dlc_train.registry import Registry

PREDICTORS = Registry("predictor")


class BasePredictor(ABC, nn.Module):
    @abstractmethod
    def forward(self, stride: float, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Args:
            stride: input pixels per cell of the head's output maps.
            outputs: the head's outputs (e.g. {"heatmap": (B, K, h, w), "locref": (B, 2K, h, w)}).

        Returns:
            e.g. {"poses": (B, N, K, 3)} with x, y in input-image pixels and a score.
        """
