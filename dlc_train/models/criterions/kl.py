"""KL divergence between SimCC logits and (softened) label vectors (RTMPose's loss)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from dlc_train.models.criterions.base import CRITERIONS, BaseCriterion


@CRITERIONS.register_module
class KLDiscreteLoss(BaseCriterion):
    """KL(labels || softmax(beta * output)) per keypoint, averaged over the bins, times the
    keypoint weight, summed over the batch and divided by K (mmpose's and DeepLabCut's
    reduction: the loss grows with the batch size, the learning rates in their configs assume
    it).

    Args:
        beta: temperature multiplying the logits before the log-softmax.
        label_softmax: turn the labels into a distribution with softmax(label_beta * labels).
        label_beta: temperature of that softmax.
        use_target_weight: multiply by the per-keypoint weights.
        mask: keypoint indices whose loss is scaled by ``mask_weight``.
        mask_weight: see mask.
    """

    def __init__(self, beta: float = 1.0, label_softmax: bool = False, label_beta: float = 10.0,
                 use_target_weight: bool = True, mask: list[int] | None = None,
                 mask_weight: float = 1.0):
        super().__init__()
        self.beta = beta
        self.label_softmax = label_softmax
        self.label_beta = label_beta
        self.use_target_weight = use_target_weight
        self.mask = list(mask) if mask is not None else None
        self.mask_weight = mask_weight

    def forward(self, output: torch.Tensor, target: torch.Tensor,
                weights: torch.Tensor | float = 1.0) -> torch.Tensor:
        """Args:
            output: (B, K, bins) logits.
            target: (B, [N,] K, bins) labels; N must be 1 (top-down crops).
            weights: (B, [N,] K) per-keypoint weights, or a float.
        """
        num_kpts, bins = output.shape[1], output.shape[-1]
        pred = output.reshape(-1, bins)
        labels = target.reshape(-1, bins).to(pred.dtype)
        if pred.shape[0] != labels.shape[0]:
            raise ValueError(f"KLDiscreteLoss: {tuple(output.shape)} outputs vs "
                             f"{tuple(target.shape)} targets (one individual per crop needed)")
        log_pt = F.log_softmax(pred * self.beta, dim=1)
        if self.label_softmax:
            labels = F.softmax(labels * self.label_beta, dim=1)
        # kl_div uses xlogy: bins where the label is 0 contribute 0.
        loss = F.kl_div(log_pt, labels, reduction="none").mean(dim=1)   # (B*K,)
        if self.use_target_weight and isinstance(weights, torch.Tensor):
            loss = loss * weights.reshape(-1).to(loss.dtype)
        if self.mask is not None:
            scale = torch.ones(num_kpts, dtype=loss.dtype, device=loss.device)
            scale[self.mask] = self.mask_weight
            loss = (loss.reshape(-1, num_kpts) * scale).reshape(-1)
        return loss.sum() / num_kpts


# mmpose spells it without the "e"; accepted so mmpose-style configs build too.
CRITERIONS.register_module(KLDiscreteLoss, name="KLDiscretLoss")
