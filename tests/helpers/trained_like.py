"""Random-weight models made to behave like trained ones where a test needs it (fp16 tests).

Two properties of untrained weights break half-precision comparisons for reasons that have
nothing to do with the export:
- BatchNorm statistics at their initial values (mean 0, variance 1) normalize nothing, so deep
  networks' activations grow layer by layer (measured: 1.6e8 inside a random HRNet-W18), far
  past fp16's 65504: the half network overflows to NaN. Trained statistics keep them small.
- Untrained heads give nearly flat heatmaps (range ~0.01), whose two best cells can differ by
  less than fp16 resolution: a half network then picks the other cell, a tie rather than an
  export fault. Trained models have clear peaks.
"""
from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, inputs: torch.Tensor, **forward_kwargs) -> None:
    """Sets every BatchNorm's running statistics to those of ``inputs`` (normalized network
    inputs), as training would; leaves the model in eval mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average: one pass gives the batch's statistics
    model.train()
    model(inputs, **forward_kwargs)
    model.eval()


def train_heatmap_peaks(model: nn.Module, inputs: torch.Tensor, head: str = "bodypart",
                        steps: int = 40, seed: int = 0, **forward_kwargs) -> None:
    """A few Adam steps towards one Gaussian per keypoint at a fixed heatmap cell, so every
    keypoint's best cell stands clear of the next (measured on resnet_tiny: smallest top-two
    gap 0.28 vs a largest fp16 heatmap error of 0.002). Leaves the model in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        n, k, h, w = model(inputs, **forward_kwargs)[head]["heatmap"].shape
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    cy = torch.randint(1, max(2, h - 1), (k,), generator=generator).float()
    cx = torch.randint(1, max(2, w - 1), (k,), generator=generator).float()
    target = torch.exp(-((yy - cy[:, None, None]) ** 2 + (xx - cx[:, None, None]) ** 2) / 2)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        heatmaps = model(inputs, **forward_kwargs)[head]["heatmap"]
        ((heatmaps - target.expand_as(heatmaps)) ** 2).mean().backward()
        optimizer.step()
    model.eval()

