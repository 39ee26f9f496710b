"""Heatmap and location-refinement targets (Gaussian or plateau), as DeepLabCut 3 makes them.

Computed for the whole batch at once with broadcasting over (B, heatmaps, members, h, w): no
Python loops, so target generation stays cheap next to the forward pass on CPU.
"""
from __future__ import annotations

from enum import Enum

import torch

from dlc_train.models.target_generators.base import TARGET_GENERATORS, BaseGenerator


class HeatmapMode(str, Enum):
    """KEYPOINT: one heatmap per bodypart (pose heads); INDIVIDUAL: one per individual
    (identity heads; needs ``labels["individual_ids"]``)."""

    KEYPOINT = "KEYPOINT"
    INDIVIDUAL = "INDIVIDUAL"


class HeatmapGenerator(BaseGenerator):
    """Base for heatmap targets; subclasses define ``heatmap_values(dist_sq)``. Several keypoints
    on one heatmap (individuals) combine by maximum, as in DeepLabCut.

    Args:
        num_heatmaps: heatmap channels to generate (K).
        pos_dist_thresh: radius (input pixels) of the positive region; the Gaussian's sigma is
            2/3 of it, as in DeepLabCut.
        heatmap_mode: "KEYPOINT" or "INDIVIDUAL".
        gradient_masking: weight the heatmap loss only near labelled keypoints (1 within
            ``pos_dist_thresh``, ``background_weight`` elsewhere); a keypoint left unlabelled on
            an individual that has other labels masks its whole heatmap (weight 0).
        background_weight: heatmap weight away from keypoints when ``gradient_masking``.
        generate_locref: also make the locref target (2K channels: x, y per heatmap).
        locref_std: locref maps hold offsets divided by this (input pixels).
        learned_id_target: accepted for config compatibility (DeepLabCut's identity heads);
            INDIVIDUAL mode already gives identity targets.
    """

    def __init__(self, num_heatmaps: int, pos_dist_thresh: float,
                 heatmap_mode: str | HeatmapMode = HeatmapMode.KEYPOINT,
                 gradient_masking: bool = False, background_weight: float = 0.0,
                 generate_locref: bool = True, locref_std: float = 7.2801,
                 learned_id_target: bool = False, label_keypoint_key: str = "keypoints"):
        super().__init__()
        self.num_heatmaps = num_heatmaps
        self.dist_thresh = float(pos_dist_thresh)
        self.dist_thresh_sq = self.dist_thresh ** 2
        # DeepLabCut reads pos_dist_thresh as 3 "diameters": sigma = 2 * thresh / 3.
        self.std = 2.0 * self.dist_thresh / 3.0
        self.heatmap_mode = HeatmapMode(str(getattr(heatmap_mode, "value", heatmap_mode)).upper())
        self.gradient_masking = gradient_masking
        self.background_weight = float(background_weight)
        self.generate_locref = generate_locref
        self.locref_std = float(locref_std)
        self.learned_id_target = learned_id_target
        self.label_keypoint_key = label_keypoint_key

    def heatmap_values(self, dist_sq: torch.Tensor) -> torch.Tensor:
        """Heatmap value of each cell given its squared distance to the nearest keypoint (inf
        where none); must not increase with distance."""
        raise NotImplementedError

    def _grouped_keypoints(self, keypoints: torch.Tensor,
                           labels: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, N, K, 3) -> (B, num_heatmaps, M, 3): the keypoints each heatmap is made of."""
        if keypoints.dim() == 3:  # single animal without the individual axis
            keypoints = keypoints[:, None]
        if self.heatmap_mode is HeatmapMode.KEYPOINT:
            return keypoints.transpose(1, 2)
        ids = torch.as_tensor(labels["individual_ids"], device=keypoints.device).long()
        batch, _, num_kpts, _ = keypoints.shape
        grouped = keypoints.new_full((batch, self.num_heatmaps, num_kpts, 3), -1.0)
        valid = (ids >= 0) & (ids < self.num_heatmaps)
        b_idx = torch.arange(batch, device=keypoints.device)[:, None].expand_as(ids)
        grouped[b_idx[valid], ids[valid]] = keypoints[valid].to(grouped.dtype)
        return grouped

    def forward(self, stride: float, outputs: dict[str, torch.Tensor],
                labels: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
        heatmap_out = outputs["heatmap"]
        batch, _, height, width = heatmap_out.shape
        device, dtype = heatmap_out.device, heatmap_out.dtype
        coords = self._grouped_keypoints(
            torch.as_tensor(labels[self.label_keypoint_key], device=device).to(dtype), labels)
        coords = coords[:, : self.num_heatmaps]
        if coords.shape[2] == 0:  # no individuals at all: one unlabelled placeholder
            coords = coords.new_full((*coords.shape[:2], 1, 3), -1.0)
        labelled = coords[..., 2] > 0                                   # (B, K, M)
        # Missing keypoints may hold NaN coordinates; keep them out of the arithmetic.
        coords = torch.nan_to_num(coords * labelled[..., None])

        centre_x = torch.arange(width, device=device, dtype=dtype) * stride + stride / 2
        centre_y = torch.arange(height, device=device, dtype=dtype) * stride + stride / 2
        # Squared distance of every cell to every keypoint of its group, (B, K, M, h, w); the
        # only full-size tensor. Heatmap values fall with distance, so the max over a group is
        # the value at its nearest keypoint: reduce to (B, K, h, w) first, then evaluate.
        dist_sq = ((coords[..., 0, None, None] - centre_x) ** 2
                   + (coords[..., 1, None, None] - centre_y[:, None]) ** 2)
        inf = torch.tensor(float("inf"), device=device, dtype=dtype)
        dist_sq = torch.where(labelled[..., None, None], dist_sq, inf)
        min_dist_sq, nearest = dist_sq.min(dim=2)                       # (B, K, h, w)

        heatmap = _pad_channels(self.heatmap_values(min_dist_sq), self.num_heatmaps)
        in_reach = min_dist_sq <= self.dist_thresh_sq                   # (B, K, h, w)
        if self.gradient_masking:
            weights = torch.where(in_reach, 1.0, self.background_weight).to(dtype)
            # A bodypart left unlabelled on an annotated individual: DeepLabCut masks the whole
            # heatmap. Padding individuals (nothing labelled) do not count.
            individual_seen = labelled.any(dim=1, keepdim=True)         # (B, 1, M)
            missing = (~labelled & individual_seen).any(dim=2)          # (B, K)
            if self.heatmap_mode is HeatmapMode.KEYPOINT:
                weights = weights * (~missing)[..., None, None].to(dtype)
        else:
            weights = torch.ones_like(in_reach, dtype=dtype)
        weights = _pad_channels(weights, self.num_heatmaps)
        targets = {"heatmap": {"target": heatmap, "weights": weights}}

        if self.generate_locref:
            # Where several keypoints are in reach, refine towards the nearest one: the same
            # keypoint that gives the heatmap its value there. (DeepLabCut lets the last
            # individual written win.)
            index = nearest.flatten(2)                                  # (B, K, h*w)
            near_x = coords[..., 0].gather(2, index).view_as(nearest)
            near_y = coords[..., 1].gather(2, index).view_as(nearest)
            zero = torch.zeros((), device=device, dtype=dtype)
            loc_x = torch.where(in_reach, near_x - centre_x, zero)
            loc_y = torch.where(in_reach, near_y - centre_y[:, None], zero)
            locref = torch.stack((loc_x, loc_y), dim=2).flatten(1, 2) / self.locref_std
            locref_weights = in_reach.to(dtype).repeat_interleave(2, dim=1)  # x, y per heatmap
            targets["locref"] = {"target": _pad_channels(locref, 2 * self.num_heatmaps),
                                 "weights": _pad_channels(locref_weights, 2 * self.num_heatmaps)}
        return targets


def _pad_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    if x.shape[1] >= channels:
        return x
    pad = x.new_zeros((x.shape[0], channels - x.shape[1], *x.shape[2:]))
    return torch.cat((x, pad), dim=1)


@TARGET_GENERATORS.register_module
class HeatmapGaussianGenerator(HeatmapGenerator):
    """Gaussian heatmaps exp(-d^2 / (2 sigma^2)), sigma = 2 * pos_dist_thresh / 3; max over
    individuals."""

    def heatmap_values(self, dist_sq: torch.Tensor) -> torch.Tensor:
        return torch.exp(-dist_sq / (2.0 * self.std ** 2))


@TARGET_GENERATORS.register_module
class HeatmapPlateauGenerator(HeatmapGenerator):
    """Heatmaps of 1 within ``pos_dist_thresh`` of a labelled keypoint, 0 elsewhere."""

    def heatmap_values(self, dist_sq: torch.Tensor) -> torch.Tensor:
        return (dist_sq <= self.dist_thresh_sq).to(dist_sq.dtype)
