"""Anchor (default box) generators: SSD's ``DefaultBoxGenerator`` and the R-CNN ``AnchorGenerator``.

Both follow torchvision's ordering (row-major over the grid, then the boxes of one location) so
that the i-th anchor lines up with the i-th prediction of the heads.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class DefaultBoxGenerator(nn.Module):
    """SSD default boxes: per feature map k, scale s_k, an extra box of scale sqrt(s_k s_{k+1}),
    and a pair (w, h), (h, w) per aspect ratio; centres at cell centres, relative to the image.

    Args:
        aspect_ratios: per feature map, the aspect ratios (besides 1).
        min_ratio, max_ratio: scales spread linearly over the maps when ``scales`` is None.
        scales: explicit scales (one more than maps).
        steps: explicit strides in pixels (None: the cell size of each map).
        clip: clamp box sizes to [0, 1] before placing them.
    """

    def __init__(self, aspect_ratios: list[list[int]], min_ratio: float = 0.15,
                 max_ratio: float = 0.9, scales: list[float] | None = None,
                 steps: list[int] | None = None, clip: bool = True):
        super().__init__()
        self.aspect_ratios = aspect_ratios
        self.steps = steps
        self.clip = clip
        num_maps = len(aspect_ratios)
        if scales is None:
            if num_maps > 1:
                step = (max_ratio - min_ratio) / (num_maps - 1.0)
                scales = [min_ratio + step * k for k in range(num_maps)] + [1.0]
            else:
                scales = [min_ratio, max_ratio]
        self.scales = scales
        self._wh_pairs = [self._wh_pairs_for(k) for k in range(num_maps)]

    def _wh_pairs_for(self, k: int) -> torch.Tensor:
        s_k = self.scales[k]
        s_prime = math.sqrt(self.scales[k] * self.scales[k + 1])
        pairs = [[s_k, s_k], [s_prime, s_prime]]
        for ratio in self.aspect_ratios[k]:
            sq = math.sqrt(ratio)
            pairs += [[s_k * sq, s_k / sq], [s_k / sq, s_k * sq]]
        return torch.tensor(pairs, dtype=torch.float32)

    def num_anchors_per_location(self) -> list[int]:
        return [2 + 2 * len(r) for r in self.aspect_ratios]

    def cxcywh(self, grid_sizes: list[tuple[int, int]], image_size: tuple[int, int],
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Boxes as (cx, cy, w, h) relative to the image, (sum_k H_k W_k A_k, 4)."""
        boxes = []
        for k, (gh, gw) in enumerate(grid_sizes):
            if self.steps is not None:
                fy, fx = image_size[0] / self.steps[k], image_size[1] / self.steps[k]
            else:
                fy, fx = gh, gw
            cx = (torch.arange(gw, dtype=torch.float32) + 0.5) / fx
            cy = (torch.arange(gh, dtype=torch.float32) + 0.5) / fy
            yy, xx = torch.meshgrid(cy, cx, indexing="ij")
            wh = self._wh_pairs[k].clamp(0, 1) if self.clip else self._wh_pairs[k]
            centres = torch.stack((xx.reshape(-1), yy.reshape(-1)), dim=-1)  # (HW, 2)
            a = wh.shape[0]
            per_loc = torch.cat((centres[:, None, :].expand(-1, a, 2),
                                 wh[None].expand(centres.shape[0], a, 2)), dim=-1)
            boxes.append(per_loc.reshape(-1, 4))
        return torch.cat(boxes).to(dtype)

    def forward(self, image_size: tuple[int, int], grid_sizes: list[tuple[int, int]],
                device: torch.device | None = None,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Default boxes in (x1, y1, x2, y2) pixels of the (resized) network input.

        Args:
            image_size: (height, width) of the network input.
            grid_sizes: (height, width) of each feature map.
        """
        boxes = self.cxcywh(grid_sizes, image_size, dtype).to(device)
        scale = torch.tensor([image_size[1], image_size[0]], dtype=dtype, device=device)
        return torch.cat(((boxes[:, :2] - 0.5 * boxes[:, 2:]) * scale,
                          (boxes[:, :2] + 0.5 * boxes[:, 2:]) * scale), dim=-1)


class AnchorGenerator(nn.Module):
    """R-CNN anchors: per level, sizes x aspect ratios (h/w) centred on integer-stride grid
    points (the top-left of each cell, as torchvision), base anchors rounded to integers.

    Args:
        sizes: per level, anchor sizes (sqrt of area) in pixels.
        aspect_ratios: per level, height / width ratios.
    """

    def __init__(self, sizes: tuple[tuple[int, ...], ...] = ((32,), (64,), (128,), (256,), (512,)),
                 aspect_ratios: tuple[tuple[float, ...], ...] = ((0.5, 1.0, 2.0),) * 5):
        super().__init__()
        if len(sizes) != len(aspect_ratios):
            raise ValueError("sizes and aspect_ratios need one entry per feature level")
        self.sizes = sizes
        self.aspect_ratios = aspect_ratios
        self.cell_anchors = [self._base_anchors(s, r) for s, r in zip(sizes, aspect_ratios)]

    @staticmethod
    def _base_anchors(sizes: tuple[int, ...], ratios: tuple[float, ...]) -> torch.Tensor:
        scales = torch.as_tensor(sizes, dtype=torch.float32)
        ratios_t = torch.as_tensor(ratios, dtype=torch.float32)
        h_ratios = torch.sqrt(ratios_t)
        w_ratios = 1 / h_ratios
        ws = (w_ratios[:, None] * scales[None, :]).reshape(-1)
        hs = (h_ratios[:, None] * scales[None, :]).reshape(-1)
        return (torch.stack([-ws, -hs, ws, hs], dim=1) / 2).round()

    def num_anchors_per_location(self) -> list[int]:
        return [len(s) * len(r) for s, r in zip(self.sizes, self.aspect_ratios)]

    def forward(self, image_size: tuple[int, int], grid_sizes: list[tuple[int, int]],
                device: torch.device | None = None,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(sum_l H_l W_l A_l, 4) anchors in pixels of the padded network input.

        Args:
            image_size: (height, width) of the padded batch.
            grid_sizes: (height, width) of each feature level.
        """
        if len(grid_sizes) != len(self.cell_anchors):
            raise ValueError(f"{len(grid_sizes)} feature levels for {len(self.cell_anchors)} "
                             "anchor settings")
        out = []
        for (gh, gw), base in zip(grid_sizes, self.cell_anchors):
            stride_h, stride_w = image_size[0] // gh, image_size[1] // gw
            xs = torch.arange(gw, dtype=torch.int64, device=device) * stride_w
            ys = torch.arange(gh, dtype=torch.int64, device=device) * stride_h
            yy, xx = torch.meshgrid(ys, xs, indexing="ij")
            xx, yy = xx.reshape(-1), yy.reshape(-1)
            shifts = torch.stack((xx, yy, xx, yy), dim=1).to(dtype)
            out.append((shifts[:, None, :] + base.to(device, dtype)[None]).reshape(-1, 4))
        return torch.cat(out)

    def forward_fixed(self, image_hw: torch.Tensor, feature_maps: list[torch.Tensor]
                      ) -> list[torch.Tensor]:
        """``forward`` with the padded input size and grid sizes as int64 shape tensors (so an
        exported graph keeps them dynamic); the same anchors, as one (H_l W_l A_l, 4) per level.

        Args:
            image_hw: (2,) int64 (height, width) of the padded batch.
            feature_maps: the feature levels (only their shapes are read).
        """
        if len(feature_maps) != len(self.cell_anchors):
            raise ValueError(f"{len(feature_maps)} feature levels for {len(self.cell_anchors)} "
                             "anchor settings")
        out = []
        dtype, device = feature_maps[0].dtype, feature_maps[0].device
        for feature, base in zip(feature_maps, self.cell_anchors):
            grid = torch._shape_as_tensor(feature)[-2:]
            stride = torch.div(image_hw, grid, rounding_mode="floor")
            xs = torch.arange(grid[1], dtype=torch.int64, device=device) * stride[1]
            ys = torch.arange(grid[0], dtype=torch.int64, device=device) * stride[0]
            yy, xx = torch.meshgrid(ys, xs, indexing="ij")
            xx, yy = xx.reshape(-1), yy.reshape(-1)
            shifts = torch.stack((xx, yy, xx, yy), dim=1).to(dtype)
            out.append((shifts[:, None, :] + base.to(device, dtype)[None]).reshape(-1, 4))
        return out
