"""RoIAlign in plain torch (bilinear sampling with ``grid_sample``) and the multi-scale pooler.

Matches torchvision.ops.roi_align for a fixed ``sampling_ratio`` > 0, which is what
``MultiScaleRoIAlign`` uses (2): every output bin averages sampling_ratio^2 bilinear samples at
regular positions inside the bin. torchvision's bilinear rule: a sample further than one pixel
outside the map is 0; otherwise coordinates are clamped to the map (so [-1, 0] reads row/col 0).
``grid_sample(padding_mode="border")`` does exactly the clamping, and a mask zeroes the far
samples. ``grid_sample`` is an ONNX op (opset >= 16), so this also exports.

Trade-off: the adaptive ``sampling_ratio <= 0`` (ceil(roi size / output size) samples per bin,
different for each RoI) is not supported; it needs ragged sampling grids.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dlc_train.models.detectors.box_ops import box_area


def roi_align(features: torch.Tensor, rois: torch.Tensor, output_size: int | tuple[int, int],
              spatial_scale: float = 1.0, sampling_ratio: int = 2,
              aligned: bool = False) -> torch.Tensor:
    """Pools a fixed-size feature patch for each region.

    Args:
        features: (B, C, H, W).
        rois: (R, 5) rows ``(batch_index, x1, y1, x2, y2)`` in input-image pixels.
        output_size: pooled (height, width) or one int for both.
        spatial_scale: feature cells per input pixel (1 / stride).
        sampling_ratio: samples per bin along each axis (> 0).
        aligned: shift by half a pixel (Detectron2's corrected convention); torchvision's
            detectors use False.

    Returns:
        (R, C, out_h, out_w).
    """
    if sampling_ratio <= 0:
        raise NotImplementedError("adaptive sampling_ratio (<= 0) is not supported")
    out_h, out_w = (output_size, output_size) if isinstance(output_size, int) else output_size
    b, c, height, width = features.shape
    r = rois.shape[0]
    if r == 0:
        return features.new_zeros((0, c, out_h, out_w))
    rois = rois.to(features.dtype)
    offset = 0.5 if aligned else 0.0
    x1 = rois[:, 1] * spatial_scale - offset
    y1 = rois[:, 2] * spatial_scale - offset
    roi_w = rois[:, 3] * spatial_scale - offset - x1
    roi_h = rois[:, 4] * spatial_scale - offset - y1
    if not aligned:  # torchvision's legacy rule: regions are at least one cell
        roi_w = roi_w.clamp(min=1.0)
        roi_h = roi_h.clamp(min=1.0)
    s = sampling_ratio
    # Sample positions within a region, in units of the region size: (bin + (k + .5) / s) / n.
    fy = ((torch.arange(out_h, dtype=features.dtype, device=features.device)[:, None]
           + (torch.arange(s, dtype=features.dtype, device=features.device)[None] + 0.5) / s)
          / out_h).reshape(-1)  # (out_h * s,)
    fx = ((torch.arange(out_w, dtype=features.dtype, device=features.device)[:, None]
           + (torch.arange(s, dtype=features.dtype, device=features.device)[None] + 0.5) / s)
          / out_w).reshape(-1)
    ys = y1[:, None] + fy[None] * roi_h[:, None]  # (R, out_h * s) in feature pixels
    xs = x1[:, None] + fx[None] * roi_w[:, None]  # (R, out_w * s)
    inside_y = (ys >= -1.0) & (ys <= height)
    inside_x = (xs >= -1.0) & (xs <= width)
    # Pixel coordinate p -> grid_sample's normalized coordinate (align_corners=False).
    gy = (2 * ys + 1) / height - 1
    gx = (2 * xs + 1) / width - 1
    grid = torch.stack((gx[:, None, :].expand(r, ys.shape[1], xs.shape[1]),
                        gy[:, :, None].expand(r, ys.shape[1], xs.shape[1])), dim=-1)
    mask = (inside_y[:, :, None] & inside_x[:, None, :]).to(features.dtype)  # (R, Hs, Ws)

    batch_idx = rois[:, 0].to(torch.int64)
    out = features.new_zeros((r, c, ys.shape[1], xs.shape[1]))
    # One grid_sample per image, over all of that image's regions stacked along the height.
    for i in range(b):
        sel = torch.where(batch_idx == i)[0]
        if sel.numel() == 0:
            continue
        g = grid[sel].reshape(1, -1, xs.shape[1], 2)
        sampled = F.grid_sample(features[i:i + 1], g, mode="bilinear", padding_mode="border",
                                align_corners=False)  # (1, C, n * Hs, Ws)
        sampled = sampled.reshape(c, sel.numel(), ys.shape[1], xs.shape[1]).transpose(0, 1)
        out[sel] = sampled * mask[sel, None]
    return out.reshape(r, c, out_h, s, out_w, s).mean(dim=(3, 5))


def roi_align_fixed(features: torch.Tensor, boxes: torch.Tensor, output_size: int,
                    spatial_scale: torch.Tensor, sampling_ratio: int = 2) -> torch.Tensor:
    """``roi_align`` (aligned=False) for K boxes per image, in one ``grid_sample`` over the
    batch: fixed shapes, no per-image loop, sizes from shape tensors (for export). Each region
    is sampled at the same positions, with the same rule, as ``roi_align``.

    Args:
        features: (B, C, H, W).
        boxes: (B, K, 4) x1, y1, x2, y2 in input-image pixels.
        spatial_scale: 0-dim tensor, feature cells per input pixel.

    Returns:
        (B, K, C, output_size, output_size).
    """
    s, n = sampling_ratio, output_size
    dtype, device = features.dtype, features.device
    hw = torch._shape_as_tensor(features)[2:4].to(dtype)
    height, width = hw[0], hw[1]
    x1 = boxes[..., 0] * spatial_scale
    y1 = boxes[..., 1] * spatial_scale
    roi_w = (boxes[..., 2] * spatial_scale - x1).clamp(min=1.0)
    roi_h = (boxes[..., 3] * spatial_scale - y1).clamp(min=1.0)
    f = ((torch.arange(n, dtype=dtype, device=device)[:, None]
          + (torch.arange(s, dtype=dtype, device=device)[None] + 0.5) / s) / n).reshape(-1)
    ys = y1[..., None] + f * roi_h[..., None]  # (B, K, n * s)
    xs = x1[..., None] + f * roi_w[..., None]
    mask = (((ys >= -1.0) & (ys <= height))[..., :, None]
            & ((xs >= -1.0) & (xs <= width))[..., None, :]).to(dtype)  # (B, K, ns, ns)
    gy = (2 * ys + 1) / height - 1
    gx = (2 * xs + 1) / width - 1
    m = n * s
    grid = torch.stack((gx[..., None, :].expand(-1, -1, m, m),
                        gy[..., :, None].expand(-1, -1, m, m)), dim=-1)  # (B, K, ns, ns, 2)
    b, k, c = boxes.shape[0], boxes.shape[1], features.shape[1]
    sampled = F.grid_sample(features, grid.reshape(b, k * m, m, 2), mode="bilinear",
                            padding_mode="border", align_corners=False)  # (B, C, K * ns, ns)
    sampled = sampled.reshape(b, c, k, m, m).transpose(1, 2) * mask[:, :, None]
    return sampled.reshape(b, k, c, n, s, n, s).mean(dim=(4, 6))


def boxes_to_rois(boxes: list[torch.Tensor]) -> torch.Tensor:
    """Per-image (N_i, 4) boxes -> (sum N_i, 5) rows ``(image index, x1, y1, x2, y2)``."""
    rows = [torch.cat((torch.full_like(b[:, :1], i), b), dim=1) for i, b in enumerate(boxes)]
    return torch.cat(rows, dim=0)


class MultiScaleRoIAlign(nn.Module):
    """RoIAlign over an FPN: each box is pooled from the level its size selects
    (``floor(4 + log2(sqrt(area) / 224))``, clamped to the available levels; FPN paper eq. 1).

    Args:
        featmap_names: names of the levels to pool from (others, e.g. "pool", are ignored).
        output_size: pooled size.
        sampling_ratio: samples per bin along each axis.
        canonical_scale, canonical_level: the level-mapping constants.
    """

    def __init__(self, featmap_names: list[str], output_size: int = 7, sampling_ratio: int = 2,
                 canonical_scale: int = 224, canonical_level: int = 4):
        super().__init__()
        self.featmap_names = featmap_names
        self.output_size = output_size
        self.sampling_ratio = sampling_ratio
        self.canonical_scale = canonical_scale
        self.canonical_level = canonical_level

    @staticmethod
    def infer_scale(feature_size: tuple[int, int], image_size: tuple[int, int]) -> float:
        """The power of two closest to feature height / image height (torchvision takes the
        first axis too)."""
        return 2.0 ** round(math.log2(feature_size[0] / image_size[0]))

    def forward_fixed(self, features: dict[str, torch.Tensor], boxes: torch.Tensor,
                      resized_hw: torch.Tensor) -> torch.Tensor:
        """``forward`` for K boxes per image (B, K, 4), graph friendly: level scales come from
        shape tensors, and every level pools every box, the box's own level selected after
        (fixed shapes instead of ``forward``'s per-level subsets; same values).

        Args:
            resized_hw: (2,) int64 size of the images before batch padding.

        Returns:
            (B * K, C, out, out), image-major like ``forward``.
        """
        maps = [features[name] for name in self.featmap_names if name in features]
        # infer_scale on tensors: 2 ** round(log2(feature height / image height)).
        image_h = resized_hw[0].to(maps[0].dtype)
        log_scales = [torch.round(torch.log2(torch._shape_as_tensor(m)[2].to(image_h.dtype)
                                             / image_h)) for m in maps]
        size = torch.sqrt(box_area(boxes))
        levels = torch.floor(self.canonical_level + torch.log2(size / self.canonical_scale)
                             + 1e-6)
        k_min, k_max = -log_scales[0], -log_scales[-1]
        levels = torch.minimum(torch.maximum(levels, k_min), k_max) - k_min
        out = roi_align_fixed(maps[0], boxes, self.output_size, 2.0 ** log_scales[0],
                              self.sampling_ratio)
        for i in range(1, len(maps)):
            pooled = roi_align_fixed(maps[i], boxes, self.output_size, 2.0 ** log_scales[i],
                                     self.sampling_ratio)
            out = torch.where((levels == i)[..., None, None, None], pooled, out)
        return out.flatten(0, 1)

    def forward(self, features: dict[str, torch.Tensor], boxes: list[torch.Tensor],
                image_sizes: list[tuple[int, int]]) -> torch.Tensor:
        """Pools (sum N_i, C, out, out) features for per-image boxes in network-input pixels.

        Args:
            features: FPN levels by name.
            boxes: per image, (N_i, 4) boxes.
            image_sizes: per image, the (height, width) before batch padding.
        """
        maps = [features[name] for name in self.featmap_names if name in features]
        max_size = (max(s[0] for s in image_sizes), max(s[1] for s in image_sizes))
        scales = [self.infer_scale(tuple(m.shape[-2:]), max_size) for m in maps]
        rois = boxes_to_rois(boxes)
        if len(maps) == 1:
            return roi_align(maps[0], rois, self.output_size, scales[0], self.sampling_ratio)
        k_min = int(-math.log2(scales[0]))
        k_max = int(-math.log2(scales[-1]))
        size = torch.sqrt(box_area(rois[:, 1:]))
        levels = torch.floor(self.canonical_level + torch.log2(size / self.canonical_scale)
                             + 1e-6).clamp(k_min, k_max).to(torch.int64) - k_min
        out = rois.new_zeros((rois.shape[0], maps[0].shape[1], self.output_size,
                              self.output_size))
        for level, (feature, scale) in enumerate(zip(maps, scales)):
            idx = torch.where(levels == level)[0]
            if idx.numel():
                out[idx] = roi_align(feature, rois[idx], self.output_size, scale,
                                     self.sampling_ratio)
        return out
