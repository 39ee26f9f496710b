"""Identity head decoding: which individual each predicted keypoint belongs to.

DeepLabCut 3 splits this in three steps:

1. ``IdentityPredictor`` (the identity head's predictor): sigmoid of the head's per-individual
   maps, bilinearly resized to input resolution, laid out (B, H, W, num_individuals);
2. its post-processor samples those maps at every predicted keypoint, rounded to the nearest
   pixel and clipped to the map: identity scores (N, K, num_individuals) per image;
3. a maximum assignment between predicted animals and identities, on the keypoint-confidence
   weighted mean of those scores, reorders the animals.

``IdentityPredictor.forward`` is step 1 with DeepLabCut's output. ``keypoint_scores`` is steps
1 + 2 fused: it samples the low-resolution maps directly (``grid_sample`` at the point where the
resize would have read them), which gives the same numbers without ever building the
full-resolution map, with tensor ops only, so it traces into ONNX. ``assign_identity`` is step
3, numpy only, for the host (``dlc_runtime.postprocess.identity``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from dlc_train.models.predictors.base import PREDICTORS, BasePredictor
# Step 3 is the runtime's numpy code, re-exported here: training evaluation and deployment
# assign identities with the same function (see docs/architecture.md, dependency rule).
from dlc_runtime.postprocess.identity import assign_identity


@PREDICTORS.register_module
class IdentityPredictor(BasePredictor):
    """Args:
        apply_sigmoid: the head outputs logits (its loss is a BCE on logits).
    """

    def __init__(self, apply_sigmoid: bool = True):
        super().__init__()
        self.apply_sigmoid = apply_sigmoid

    def forward(self, stride: float, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """{"heatmap": (B, num_ids, h, w)} -> {"heatmap": (B, h * stride, w * stride, num_ids)}.

        As DeepLabCut: resize first, then sigmoid; the size is ``int(h * stride)``.
        """
        heatmap = outputs["heatmap"]
        h, w = heatmap.shape[2:]
        size = (int(h * stride), int(w * stride))
        # antialias changes nothing when upsampling; kept to match DeepLabCut's resize call.
        heatmap = F.interpolate(heatmap, size=size, mode="bilinear", align_corners=False,
                                antialias=True)
        if self.apply_sigmoid:
            heatmap = torch.sigmoid(heatmap)
        return {"heatmap": heatmap.permute(0, 2, 3, 1)}

    def keypoint_scores(self, stride: float, outputs: dict[str, torch.Tensor],
                        poses: torch.Tensor) -> torch.Tensor:
        """Identity scores at predicted keypoints, as DeepLabCut's post-processor reads them.

        Args:
            stride: input pixels per cell of the identity maps.
            outputs: the identity head's outputs, {"heatmap": (B, num_ids, h, w)}.
            poses: (B, N, K, 2 or 3) keypoints in input pixels (the bodypart head's poses);
                NaN or negative coordinates read the map's border, like DeepLabCut's clip.

        Returns:
            (B, N, K, num_ids) scores (probabilities with ``apply_sigmoid``).
        """
        heatmap = outputs["heatmap"]
        batch, _, h, w = heatmap.shape
        # No int(): sizes stay traced for ONNX. Equal to DeepLabCut's int(h * stride) whenever
        # h * stride is whole, which holds for every head here (integer strides).
        size_h, size_w = h * stride, w * stride
        xy = torch.nan_to_num(poses[..., :2].to(heatmap.dtype), nan=-1.0)
        # DeepLabCut: np.rint (half to even, as torch.round), then clip to the resized map.
        # The low clip is explicit; the high one is the "border" padding below: for stride >= 1
        # every x >= size_w - 1 reads the last column, as the clipped pixel would.
        x = torch.round(xy[..., 0]).clamp(min=0)
        y = torch.round(xy[..., 1]).clamp(min=0)
        # Where the bilinear resize (align_corners=False) reads the low-resolution map for that
        # output pixel, in grid_sample's normalized coordinates: u = (2 * src + 1) / w - 1 with
        # src = (x + 0.5) * w / size_w - 0.5. "border" padding is the resize's edge clamp.
        u = 2.0 * (x + 0.5) / size_w - 1.0
        v = 2.0 * (y + 0.5) / size_h - 1.0
        grid = torch.stack((u, v), dim=-1).reshape(batch, 1, -1, 2)  # (B, 1, N*K, 2)
        sampled = F.grid_sample(heatmap, grid, mode="bilinear", padding_mode="border",
                                align_corners=False)                     # (B, ids, 1, N*K)
        if self.apply_sigmoid:
            sampled = torch.sigmoid(sampled)
        return sampled[:, :, 0].transpose(1, 2).reshape(*poses.shape[:3], heatmap.shape[1])


__all__ = ["IdentityPredictor", "assign_identity"]
