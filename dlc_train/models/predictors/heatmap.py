"""Single-animal heatmap decoding: argmax per keypoint plus location refinement."""
from __future__ import annotations

import torch

from dlc_train.models.predictors.base import PREDICTORS, BasePredictor


@PREDICTORS.register_module
class HeatmapPredictor(BasePredictor):
    """Decodes (B, K, h, w) heatmaps and (B, 2K, h, w) locref maps into (B, 1, K, 3) poses.

    Same numbers as DeepLabCut 3's HeatmapPredictor, written with flatten + argmax + gather only
    (no loops, no ``.item()``), so it traces into ONNX with dynamic batch and H/W.

    Args:
        apply_sigmoid: score = sigmoid(heatmap peak) instead of the raw peak.
        clip_scores: clip scores to [0, 1] (for heads trained without a sigmoid).
        location_refinement: add the locref offset at the peak cell.
        locref_std: scale of the locref maps, in input pixels.
    """

    def __init__(self, apply_sigmoid: bool = True, clip_scores: bool = False,
                 location_refinement: bool = True, locref_std: float = 7.2801):
        super().__init__()
        self.apply_sigmoid = apply_sigmoid
        self.clip_scores = clip_scores
        self.location_refinement = location_refinement
        self.locref_std = locref_std

    def forward(self, stride: float, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        heatmap = outputs["heatmap"]
        if self.apply_sigmoid:
            heatmap = torch.sigmoid(heatmap)
        batch, num_kpts, _, width = heatmap.shape
        flat = heatmap.flatten(2)                                  # (B, K, h*w), row-major
        # torch.argmax and ONNX ArgMax (select_last_index=0) both return the first maximum.
        index = flat.argmax(dim=2, keepdim=True)                   # (B, K, 1)
        score = flat.gather(2, index).squeeze(2)                   # (B, K)
        index = index.squeeze(2)
        y = torch.div(index, width, rounding_mode="floor")
        x = index - y * width
        x = x.to(heatmap.dtype) * stride + 0.5 * stride
        y = y.to(heatmap.dtype) * stride + 0.5 * stride

        if self.location_refinement:
            locref = outputs["locref"]
            # channel 2k is x, 2k + 1 is y of keypoint k (DeepLabCut's (h, w, K, 2) layout).
            locref = locref.reshape(batch, num_kpts, 2, -1)        # (B, K, 2, h*w)
            offset = locref.gather(3, index[:, :, None, None].expand(-1, -1, 2, 1)).squeeze(3)
            x = x + offset[..., 0] * self.locref_std
            y = y + offset[..., 1] * self.locref_std

        if self.clip_scores:
            score = score.clamp(0.0, 1.0)
        poses = torch.stack((x, y, score), dim=-1)[:, None]        # (B, 1, K, 3)
        return {"poses": poses}
