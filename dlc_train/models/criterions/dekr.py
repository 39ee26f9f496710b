"""DEKR losses, as DeepLabCut 3 computes them."""
from __future__ import annotations

import torch

from dlc_train.models.criterions.base import CRITERIONS, BaseCriterion


@CRITERIONS.register_module
class DEKRHeatmapLoss(BaseCriterion):
    """mean((output - target)^2 * weights) over every element (DEKR's weighted MSE)."""

    def forward(self, output: torch.Tensor, target: torch.Tensor,
                weights: torch.Tensor | float = 1.0) -> torch.Tensor:
        if output.shape != target.shape:
            raise ValueError(f"output {tuple(output.shape)} and target {tuple(target.shape)} "
                             f"differ in shape")
        return torch.mean((output - target.to(output.dtype)) ** 2 * weights)


@CRITERIONS.register_module
class DEKROffsetLoss(BaseCriterion):
    """Smooth L1 (``beta``) times weights, summed and divided by the number of elements with a
    positive weight (at least 1). DEKR's weights are 1 / sqrt(area), so large animals do not
    dominate the offset loss.

    Args:
        beta: where the loss turns from quadratic to linear (offsets are in heatmap cells).
    """

    def __init__(self, beta: float = 1 / 9):
        super().__init__()
        self.beta = beta

    def forward(self, output: torch.Tensor, target: torch.Tensor,
                weights: torch.Tensor | float = 1.0) -> torch.Tensor:
        if output.shape != target.shape:
            raise ValueError(f"output {tuple(output.shape)} and target {tuple(target.shape)} "
                             f"differ in shape")
        diff = (output - target.to(output.dtype)).abs()
        loss = torch.where(diff < self.beta, 0.5 * diff ** 2 / self.beta, diff - 0.5 * self.beta)
        weights = torch.as_tensor(weights, dtype=output.dtype, device=output.device)
        num_pos = (weights.expand_as(loss) > 0).sum().clamp(min=1)
        return (loss * weights).sum() / num_pos
