"""The input transform torchvision's detectors apply inside the model (GeneralizedRCNNTransform).

normalize (per-channel mean/std) -> resize (bilinear, align_corners=False) -> zero-pad to a
common size divisible by ``size_divisible``; predicted boxes are mapped back by the per-axis ratio
of original to resized size.

Resizing: either to a ``fixed_size`` (SSDLite: 320x320, aspect ratio not kept) or so that the
short side is ``min_size`` unless the long side would exceed ``max_size`` (Faster R-CNN: 800 /
1333); the size is floor(side * scale), as ``interpolate(recompute_scale_factor=True)``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class DetectionTransform(nn.Module):
    """Args:
        image_mean, image_std: per-channel normalization of the input.
        min_size, max_size: short-side target and long-side cap (when ``fixed_size`` is None).
        fixed_size: (height, width) to resize every image to.
        size_divisible: pad the batch to a multiple of this.
    """

    def __init__(self, image_mean: tuple[float, ...], image_std: tuple[float, ...],
                 min_size: int = 800, max_size: int = 1333,
                 fixed_size: tuple[int, int] | None = None, size_divisible: int = 32):
        super().__init__()
        self.image_mean = tuple(image_mean)
        self.image_std = tuple(image_std)
        self.min_size = min_size
        self.max_size = max_size
        self.fixed_size = fixed_size
        self.size_divisible = size_divisible

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        if self.fixed_size is not None:
            return self.fixed_size
        # The scale is computed in float32 as torchvision does (a float64 scale can land one
        # pixel off at some sizes); the size is then floor(side * scale) in double.
        f32 = torch.float32
        scale = torch.minimum(torch.tensor(float(self.min_size), dtype=f32)
                              / torch.tensor(float(min(height, width)), dtype=f32),
                              torch.tensor(float(self.max_size), dtype=f32)
                              / torch.tensor(float(max(height, width)), dtype=f32)).item()
        return int(math.floor(height * scale)), int(math.floor(width * scale))

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        mean = images.new_tensor(self.image_mean).view(1, -1, 1, 1)
        std = images.new_tensor(self.image_std).view(1, -1, 1, 1)
        return (images - mean) / std

    def forward(self, images: torch.Tensor, targets: list[dict[str, torch.Tensor]] | None = None
                ) -> tuple[torch.Tensor, list[tuple[int, int]], list[dict] | None]:
        """Normalizes, resizes and pads a batch (all images share one size here).

        Args:
            images: (B, 3, H, W) float.
            targets: optional per-image dicts with "boxes" (N, 4) in input pixels; scaled along.

        Returns:
            padded batch, per-image (height, width) after resize (before padding), targets.
        """
        height, width = images.shape[-2:]
        new_h, new_w = self.resized_size(int(height), int(width))
        x = self.normalize(images)
        if (new_h, new_w) != (height, width):
            x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)
        d = self.size_divisible
        pad_h = int(math.ceil(new_h / d) * d) - new_h
        pad_w = int(math.ceil(new_w / d) * d) - new_w
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        if targets is not None:
            ratio = torch.tensor([new_w / width, new_h / height] * 2, dtype=images.dtype,
                                 device=images.device)
            targets = [{**t, "boxes": t["boxes"] * ratio} for t in targets]
        return x, [(new_h, new_w)] * images.shape[0], targets

    @staticmethod
    def postprocess(boxes: torch.Tensor, resized_size: tuple[int, int],
                    original_size: tuple[int, int]) -> torch.Tensor:
        """Maps boxes from resized-image pixels back to original-image pixels."""
        ratio_h = original_size[0] / resized_size[0]
        ratio_w = original_size[1] / resized_size[1]
        return boxes * boxes.new_tensor([ratio_w, ratio_h, ratio_w, ratio_h])
