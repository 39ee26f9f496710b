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

    def resized_size_fixed(self, hw: torch.Tensor) -> torch.Tensor:
        """``resized_size`` on a (2,) int64 (height, width) tensor, in tensor ops whose integer
        values all stay below 2^31 (TensorRT 8 computes shapes in int32).

        ``resized_size`` is floor(side * scale) with scale = fl32(num / den) (num: min_size or
        max_size, den: the short or long side). With n0 = floor(side * num / den) (exact in
        integers), floor(side * scale) is n0, less one when side * num / den is a whole number
        and fl32 rounded the quotient down (the rounding error is below 1 / den otherwise).
        "Rounded down", scale * den < num, is decided exactly in integers: scale * 2^37 is a
        whole number (scales >= 2^-14), split in two 18-bit-scaled halves so the products stay
        small. Valid for frame sides below 8192 px and min_size / max_size below 4096.
        """
        f32, i64 = torch.float32, torch.int64
        short, long = torch.minimum(hw[0], hw[1]), torch.maximum(hw[0], hw[1])
        # Real divisions (``number / tensor`` would multiply by a reciprocal), as eager mode.
        by_short = torch.div(torch.tensor(float(self.min_size)), short.to(f32))
        by_long = torch.div(torch.tensor(float(self.max_size)), long.to(f32))
        use_short = by_short <= by_long
        scale = torch.where(use_short, by_short, by_long)
        num = torch.where(use_short, torch.tensor(self.min_size), torch.tensor(self.max_size))
        den = torch.where(use_short, short, long)
        v = scale * 2.0 ** 37                  # a whole number, exact in float32
        v_hi = torch.floor(v / 2.0 ** 18)      # v = v_hi * 2^18 + v_lo, both exact
        v_lo = (v - v_hi * 2.0 ** 18).to(i64)
        v_hi = v_hi.to(i64)
        # scale * den * 2^19 = v_hi * den + v_lo * den / 2^18, compared with num * 2^19.
        low = v_hi * den + torch.div(v_lo * den, 2 ** 18, rounding_mode="floor")
        rounded_down = low < num * 2 ** 19
        product = hw * num
        n0 = torch.div(product, den, rounding_mode="floor")
        whole = torch.remainder(product, den) == 0
        return n0 - (whole & rounded_down).to(i64)

    def forward_fixed(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward`` (no targets, min/max-size resize) with every size taken from shape
        tensors, so an exported graph keeps a dynamic frame size.

        The resized side is floor(side * scale) with ``scale`` in float32, exactly as
        ``resized_size`` (see ``resized_size_fixed``). Graph friendly: no double, no Python
        number read from the input's shape.

        Returns:
            padded batch, (2,) int64 resized (height, width) before padding.
        """
        if self.fixed_size is not None:
            raise NotImplementedError("forward_fixed serves the min/max-size resize only")
        new_hw = self.resized_size_fixed(torch._shape_as_tensor(images)[2:4])
        x = self.normalize(images)
        x = F.interpolate(x, size=(new_hw[0], new_hw[1]), mode="bilinear", align_corners=False)
        d = self.size_divisible
        pad = torch.div(new_hw + (d - 1), d, rounding_mode="floor") * d - new_hw
        return F.pad(x, (0, pad[1], 0, pad[0])), new_hw

    @staticmethod
    def postprocess(boxes: torch.Tensor, resized_size: tuple[int, int],
                    original_size: tuple[int, int]) -> torch.Tensor:
        """Maps boxes from resized-image pixels back to original-image pixels."""
        ratio_h = original_size[0] / resized_size[0]
        ratio_w = original_size[1] / resized_size[1]
        return boxes * boxes.new_tensor([ratio_w, ratio_h, ratio_w, ratio_h])
