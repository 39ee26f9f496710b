"""Element-wise losses times per-element weights, reduced as DeepLabCut 3 does."""
from __future__ import annotations

import torch
from torch import nn

from dlc_train.models.criterions.base import CRITERIONS, BaseCriterion


class WeightedCriterion(BaseCriterion):
    """mean(loss(output, target) * weights) over every element.

    The normalisation is by the element count, not by the sum of the weights: that is what
    DeepLabCut 3 does (``torch.mean`` of the weighted loss), so loss values and the locref weight
    (0.05) in its configs keep their meaning. The consequence: masking half of the map also
    halves the loss. When every weight is 0 the loss is 0 (DeepLabCut returns a constant 0; here
    the 0 stays attached to the graph so ``backward`` still works).

    Args:
        criterion: an element-wise loss (``reduction="none"``).
    """

    def __init__(self, criterion: nn.Module):
        super().__init__()
        self.criterion = criterion

    def forward(self, output: torch.Tensor, target: torch.Tensor,
                weights: torch.Tensor | float = 1.0) -> torch.Tensor:
        target = target.to(output.dtype)
        if isinstance(weights, torch.Tensor):
            weights = weights.to(output.dtype)
            # A zero weight must silence an element even where output or target is inf / NaN
            # (masked labels); zeroing the inputs, not the loss, keeps NaN out of the gradient.
            keep = weights != 0
            zero = torch.zeros((), dtype=output.dtype, device=output.device)
            output = torch.where(keep, output, zero)
            target = torch.where(keep, target, zero)
        return torch.mean(self.criterion(output, target) * weights)


@CRITERIONS.register_module
class WeightedMSECriterion(WeightedCriterion):
    """Weighted mean squared error."""

    def __init__(self) -> None:
        super().__init__(nn.MSELoss(reduction="none"))


@CRITERIONS.register_module
class WeightedHuberCriterion(WeightedCriterion):
    """Weighted Huber loss (delta 1, PyTorch's default, as DeepLabCut)."""

    def __init__(self) -> None:
        super().__init__(nn.HuberLoss(reduction="none"))


@CRITERIONS.register_module
class WeightedBCECriterion(WeightedCriterion):
    """Weighted binary cross-entropy on logits (the head outputs no sigmoid)."""

    def __init__(self) -> None:
        super().__init__(nn.BCEWithLogitsLoss(reduction="none"))
