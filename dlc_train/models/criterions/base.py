"""Loss registries: per-output criterions and the aggregator that sums them."""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

from dlc_train.registry import Registry

CRITERIONS = Registry("criterion")
LOSS_AGGREGATORS = Registry("loss aggregator")


class BaseCriterion(ABC, nn.Module):
    @abstractmethod
    def forward(self, output: torch.Tensor, target: torch.Tensor,
                weights: torch.Tensor | float = 1.0) -> torch.Tensor:
        """Returns a scalar loss."""


class BaseLossAggregator(ABC, nn.Module):
    @abstractmethod
    def forward(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """Combines named losses into the total loss."""


@LOSS_AGGREGATORS.register_module
class WeightedLossAggregator(BaseLossAggregator):
    """Sum of the named losses, each times its weight (1.0 when not given)."""

    def __init__(self, weights: dict[str, float]):
        super().__init__()
        self.weights = dict(weights)

    def forward(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum(self.weights.get(name, 1.0) * loss for name, loss in losses.items())
