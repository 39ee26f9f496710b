"""Target generator base class and registry."""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

from dlc_train.registry import Registry

TARGET_GENERATORS = Registry("target generator")


class BaseGenerator(ABC, nn.Module):
    @abstractmethod
    def forward(self, stride: float, outputs: dict[str, torch.Tensor],
                labels: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
        """Args:
            stride: input pixels per cell of the head's output maps.
            outputs: the head's outputs (their shapes fix the target shapes).
            labels: the batch's annotations; "keypoints" is (B, N, K, 3): x, y in input-image
                pixels and visibility (> 0 labelled, <= 0 missing).

        Returns:
            {output_name: {"target": tensor, "weights": tensor}} for each output to supervise.
        """
