"""DEKR training targets: keypoint + centre heatmaps and centre-to-keypoint offsets.

Same numbers as DeepLabCut 3's DEKRGenerator, computed for the whole batch with broadcasting over
(B, individuals, keypoints, h, w) instead of nested Python loops over pixels.
"""
from __future__ import annotations

import torch

from dlc_train.models.target_generators.base import TARGET_GENERATORS, BaseGenerator


def _centres_and_areas(keypoints: torch.Tensor, bbox_margin: float
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, N, K, 3) -> centre keypoints (B, N, 1, 3) and areas (B, N).

    The centre is the mean of the labelled keypoints (visibility 2; 0 when none is labelled),
    the area that of their bounding box grown by ``bbox_margin`` on each side.
    """
    labelled = keypoints[..., 2] > 0                                       # (B, N, K)
    count = labelled.sum(-1, keepdim=True)
    xy = torch.nan_to_num(keypoints[..., :2]) * labelled[..., None]
    centre = xy.sum(2) / count.clamp(min=1)                                # (B, N, 2)
    vis = torch.where(count > 0, 2.0, 0.0).to(keypoints.dtype)
    big = torch.finfo(keypoints.dtype).max
    lo = torch.where(labelled[..., None], xy, big).amin(2)
    hi = torch.where(labelled[..., None], xy, -big).amax(2)
    size = (hi - lo + 2 * bbox_margin).clamp(min=1.0)
    area = torch.where(count[..., 0] > 0, size[..., 0] * size[..., 1], 1.0)
    return torch.cat((centre, vis), dim=-1)[:, :, None], area


@TARGET_GENERATORS.register_module
class DEKRGenerator(BaseGenerator):
    """Targets for DEKRHead: {"heatmap": K + 1 maps (centre last), "offset": 2K maps}.

    Heatmaps: Gaussians in heatmap-cell units, sigma = pos_dist_thresh / 2 / stride for the
    keypoints and pos_dist_thresh / stride for the centre, cut to a box of about +-3 sigma;
    maximum over individuals. Heatmap weights: 1 inside those boxes, ``bg_weight`` elsewhere, 0
    over a whole channel for a keypoint marked -1 (unless a later individual's box covers it,
    as in DeepLabCut's sequential writes).

    Offsets: within ``pos_dist_thresh / stride`` cells (a square) of an individual's centre,
    each labelled keypoint's offset ``cell - keypoint`` (cells), weighted 1 / sqrt(area).
    Where individuals overlap, the smaller one wins (ties: the later one).

    Labels: ``keypoints`` (B, N, K, 3) in input pixels; with DeepLabCut's centre keypoint
    appended (B, N, K + 1, 3) it is used as given, otherwise computed as the mean of the
    labelled keypoints. ``area`` (B, N) when given, otherwise the keypoints' bounding box grown
    by ``bbox_margin``.

    Args:
        num_joints: K.
        pos_dist_thresh: input pixels; 2 sigma of the keypoint Gaussians and the offset radius.
        bg_weight: heatmap loss weight away from keypoints.
        bbox_margin: margin (pixels) of the boxes giving the areas when labels have none.
        label_keypoint_key: the labels entry holding the keypoints.
    """

    def __init__(self, num_joints: int, pos_dist_thresh: float, bg_weight: float = 0.1,
                 bbox_margin: float = 20.0, label_keypoint_key: str = "keypoints"):
        super().__init__()
        self.num_joints = int(num_joints)
        self.num_heatmaps = self.num_joints + 1
        self.pos_dist_thresh = float(pos_dist_thresh)
        self.bg_weight = float(bg_weight)
        self.bbox_margin = float(bbox_margin)
        self.label_keypoint_key = label_keypoint_key

    def forward(self, stride: float, outputs: dict[str, torch.Tensor],
                labels: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
        heatmap_out = outputs["heatmap"]
        batch, _, height, width = heatmap_out.shape
        device, dtype = heatmap_out.device, heatmap_out.dtype
        kpts = torch.as_tensor(labels[self.label_keypoint_key], device=device).to(dtype)
        if kpts.dim() == 3:
            kpts = kpts[:, None]
        area = labels.get("area")
        if kpts.shape[2] == self.num_joints:
            centre, computed_area = _centres_and_areas(kpts, self.bbox_margin)
            kpts = torch.cat((kpts, centre), dim=2)
            area = computed_area if area is None else area
        elif kpts.shape[2] != self.num_heatmaps:
            raise ValueError(f"DEKRGenerator expects {self.num_joints} keypoints (or "
                             f"{self.num_heatmaps} with the centre), got {kpts.shape[2]}")
        if area is None:
            area = _centres_and_areas(kpts[:, :, :-1], self.bbox_margin)[1]
        area = torch.as_tensor(area, device=device).to(dtype).reshape(batch, -1)
        num_ind = kpts.shape[1]
        if num_ind == 0:
            zeros = heatmap_out.new_zeros(heatmap_out.shape)
            return {"heatmap": {"target": zeros, "weights": zeros + self.bg_weight},
                    "offset": {"target": outputs["offset"].new_zeros(outputs["offset"].shape),
                               "weights": outputs["offset"].new_zeros(outputs["offset"].shape)}}

        vis = kpts[..., 2]                                                 # (B, N, J)
        xy = torch.nan_to_num(kpts[..., :2])
        x_sm = (xy[..., 0] - stride / 2) / stride                          # heatmap cells
        y_sm = (xy[..., 1] - stride / 2) / stride
        inside = (x_sm >= 0) & (y_sm >= 0) & (x_sm < width) & (y_sm < height)
        valid = (vis > 0) & inside                                         # (B, N, J)

        sigma = torch.full((self.num_heatmaps,), self.pos_dist_thresh / 2 / stride,
                           device=device, dtype=dtype)
        sigma[-1] = self.pos_dist_thresh / stride
        cols = torch.arange(width, device=device, dtype=dtype)
        rows = torch.arange(height, device=device, dtype=dtype)
        dx = cols - x_sm[..., None]                                        # (B, N, J, w)
        dy = rows - y_sm[..., None]                                        # (B, N, J, h)
        # DeepLabCut's box: [floor(c - 3 sigma - 1), ceil(c + 3 sigma + 2)) in cells
        reach_lo, reach_hi = 3 * sigma + 1, 3 * sigma + 2
        in_x = (cols >= torch.floor(x_sm - reach_lo)[..., None]) & \
            (cols < torch.ceil(x_sm + reach_hi)[..., None])
        in_y = (rows >= torch.floor(y_sm - reach_lo)[..., None]) & \
            (rows < torch.ceil(y_sm + reach_hi)[..., None])
        box = in_y[..., :, None] & in_x[..., None, :] & valid[..., None, None]  # (B,N,J,h,w)
        gauss = torch.exp(-(dy[..., :, None] ** 2 + dx[..., None, :] ** 2)
                          / (2 * sigma[:, None, None] ** 2))
        heatmaps = torch.where(box, gauss, torch.zeros((), device=device, dtype=dtype))
        heatmaps = heatmaps.amax(dim=1)                                    # (B, J, h, w)

        # Weights: the last individual (in label order) that touches a cell decides it: its box
        # gives 1, its "-1" (fully masked keypoint) gives 0; untouched cells get bg_weight.
        masked = (vis == -1)[..., None, None].expand_as(box)
        touched = box | masked
        order = torch.arange(1, num_ind + 1, device=device)[None, :, None, None, None]
        last = torch.where(touched, order, 0).amax(dim=1)                  # (B, J, h, w)
        last_box = box.gather(1, (last - 1).clamp(min=0)[:, None]).squeeze(1)
        weights = torch.where(last == 0, self.bg_weight, last_box.to(dtype)).to(dtype)

        offsets, offset_weights = self._offsets(x_sm, y_sm, xy[:, :, -1], valid, area, stride,
                                                height, width)
        return {"heatmap": {"target": heatmaps, "weights": weights},
                "offset": {"target": offsets, "weights": offset_weights}}

    def _offsets(self, x_sm: torch.Tensor, y_sm: torch.Tensor, centre_xy: torch.Tensor,
                 valid: torch.Tensor, area: torch.Tensor, stride: float, height: int,
                 width: int) -> tuple[torch.Tensor, torch.Tensor]:
        batch, num_ind, _ = x_sm.shape
        device, dtype = x_sm.device, x_sm.dtype
        radius = self.pos_dist_thresh / stride
        # DeepLabCut truncates the centre to whole pixels before converting it to cells.
        ct_x = (torch.trunc(centre_xy[..., 0]) - stride / 2) / stride
        ct_y = (torch.trunc(centre_xy[..., 1]) - stride / 2) / stride
        start_x = torch.trunc(ct_x - radius).clamp(min=0)
        end_x = torch.trunc(ct_x + radius).clamp(max=width)
        start_y = torch.trunc(ct_y - radius).clamp(min=0)
        end_y = torch.trunc(ct_y + radius).clamp(max=height)
        cols = torch.arange(width, device=device, dtype=dtype)
        rows = torch.arange(height, device=device, dtype=dtype)
        region = (((rows >= start_y[..., None]) & (rows < end_y[..., None]))[..., :, None]
                  & ((cols >= start_x[..., None]) & (cols < end_x[..., None]))[..., None, :])
        covers = region[:, :, None] & valid[..., :-1, None, None]          # (B, N, K, h, w)

        # Per cell and keypoint the smallest individual wins; ties go to the later one.
        inf = torch.tensor(float("inf"), device=device, dtype=dtype)
        area_b = area[:, :, None, None, None]
        cand_area = torch.where(covers, area_b, inf)
        smallest = cand_area.amin(dim=1, keepdim=True)
        winner_mask = covers & (cand_area == smallest)
        order = torch.arange(1, num_ind + 1, device=device)[None, :, None, None, None]
        winner = torch.where(winner_mask, order, 0).amax(dim=1)            # (B, K, h, w)
        has = winner > 0
        pick = (winner - 1).clamp(min=0)                                   # (B, K, h, w)

        kx = x_sm[..., :-1].transpose(1, 2)                                # (B, K, N)
        ky = y_sm[..., :-1].transpose(1, 2)
        flat = pick.flatten(2)
        wx = kx.gather(2, flat).view_as(pick)
        wy = ky.gather(2, flat).view_as(pick)
        w_area = area[:, None, :].expand(-1, kx.shape[1], -1).gather(2, flat).view_as(pick)
        zero = torch.zeros((), device=device, dtype=dtype)
        off_x = torch.where(has, cols - wx, zero)
        off_y = torch.where(has, rows[:, None] - wy, zero)
        weight = torch.where(has, w_area.clamp(min=1e-6).rsqrt(), zero)
        offsets = torch.stack((off_x, off_y), dim=2).flatten(1, 2)         # (B, 2K, h, w)
        weights = torch.stack((weight, weight), dim=2).flatten(1, 2)
        return offsets, weights
