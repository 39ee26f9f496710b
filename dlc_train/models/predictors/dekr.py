"""DEKR decoding: animal centres from the centre heatmap, keypoints from the offsets there."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from dlc_train.models.predictors.base import PREDICTORS, BasePredictor


def _peak_mask(heatmaps: torch.Tensor, kernel: int = 5) -> torch.Tensor:
    """Keeps only local maxima (kernel x kernel window), other cells set to 0."""
    pooled = F.max_pool2d(heatmaps, kernel, stride=1, padding=kernel // 2)
    return heatmaps * (pooled == heatmaps).to(heatmaps.dtype)


@PREDICTORS.register_module
class DEKRPredictor(BasePredictor):
    """Decodes DEKR outputs into (B, num_animals, K, 3) poses (x, y in input pixels, score).

    1. Centres: the ``num_animals`` highest 5x5 local maxima of the centre heatmap (last channel).
    2. Each centre's keypoints: cell position minus the offsets predicted there.
    3. ``use_heatmap``: a keypoint within ``max_absorb_distance`` heatmap cells of one of the
       ``num_animals`` highest peaks of its heatmap snaps to the nearest such peak.
    4. Scores (``keypoint_score_type``): "center" (the centre peak), "heatmap" (the keypoint
       heatmap at the keypoint's cell) or "combined" (their product).
    5. ``apply_pose_nms``: poses that duplicate a higher-ranked one are dropped (see
       ``pose_nms``); the kept poses move to the front and the rest is padding (x = y = -1,
       score 0), so the output shape never changes.

    Tensor ops only (no loop over the batch, keypoints or pixels; the NMS loop runs over the
    ``num_animals`` slots, a constant), so it runs inside an exported ONNX graph.

    Args:
        num_animals: animals to decode per image.
        detection_threshold: accepted for DeepLabCut config compatibility (unused there too).
        apply_sigmoid: apply a sigmoid to the heatmaps first.
        clip_scores: clip scores to [0, 1].
        use_heatmap: snap keypoints to heatmap peaks (step 3).
        keypoint_score_type: "heatmap", "center" or "combined".
        max_absorb_distance: snapping radius, in heatmap cells (DeepLabCut's unit).
        nms_threshold: two keypoints coincide when closer than this fraction of the pose's size
            (the diagonal of its keypoints' bounding box).
        apply_pose_nms: run the pose NMS.
        nms_keypoint_fraction: a pose duplicates another when more than this fraction of its
            keypoints coincide.
    """

    def __init__(self, num_animals: int, detection_threshold: float = 0.01,
                 apply_sigmoid: bool = True, clip_scores: bool = False, use_heatmap: bool = True,
                 keypoint_score_type: str = "combined", max_absorb_distance: float = 75,
                 nms_threshold: float = 0.05, apply_pose_nms: bool = True,
                 nms_keypoint_fraction: float = 0.5):
        super().__init__()
        if keypoint_score_type not in ("heatmap", "center", "combined"):
            raise ValueError(f"unknown keypoint_score_type {keypoint_score_type!r}")
        self.num_animals = int(num_animals)
        self.detection_threshold = detection_threshold
        self.apply_sigmoid = apply_sigmoid
        self.clip_scores = clip_scores
        self.use_heatmap = use_heatmap
        self.keypoint_score_type = keypoint_score_type
        self.max_absorb_distance = float(max_absorb_distance)
        self.nms_threshold = float(nms_threshold)
        self.apply_pose_nms = apply_pose_nms
        self.nms_keypoint_fraction = float(nms_keypoint_fraction)

    def forward(self, stride: float, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        heatmaps, offsets = outputs["heatmap"], outputs["offset"]
        if self.apply_sigmoid:
            heatmaps = torch.sigmoid(heatmaps)
        batch, channels, _, width = heatmaps.shape
        num_kpts = channels - 1
        n = self.num_animals

        centres = _peak_mask(heatmaps[:, -1:]).flatten(1)                  # (B, h*w)
        centre_scores, index = centres.topk(n, dim=1)                      # (B, N), sorted
        cy = torch.div(index, width, rounding_mode="floor")
        cx = index - cy * width
        # offsets channel 2k is x, 2k + 1 is y of keypoint k; keypoint = cell - offset
        off = offsets.flatten(2).reshape(batch, num_kpts, 2, -1)
        off = off.gather(3, index[:, None, None, :].expand(-1, num_kpts, 2, -1))  # (B, K, 2, N)
        x = cx[:, None, :].to(off.dtype) - off[:, :, 0]
        y = cy[:, None, :].to(off.dtype) - off[:, :, 1]
        poses = torch.stack((x, y), dim=-1).transpose(1, 2)                # (B, N, K, 2) cells

        kpt_heatmaps = heatmaps[:, :-1]
        if self.use_heatmap:
            # DeepLabCut peak-masks the keypoint heatmaps in place here, so its keypoint scores
            # below read the masked maps: a keypoint left off a peak scores 0. Reproduced.
            kpt_heatmaps = _peak_mask(kpt_heatmaps)
            poses = self._absorb(poses, kpt_heatmaps)

        if self.keypoint_score_type == "center":
            scores = centre_scores[:, :, None].expand(-1, -1, num_kpts)
        else:
            scores = self._heat_values(poses, kpt_heatmaps)
            if self.keypoint_score_type == "combined":
                scores = scores * centre_scores[:, :, None]
        if self.clip_scores:
            scores = scores.clamp(0.0, 1.0)

        poses = poses * stride + 0.5 * stride
        result = torch.cat((poses, scores[..., None]), dim=-1)              # (B, N, K, 3)
        if self.apply_pose_nms and n > 1:
            result = self.pose_nms(result)
        return {"poses": result}

    def _absorb(self, poses: torch.Tensor, kpt_heatmaps: torch.Tensor) -> torch.Tensor:
        """Moves each keypoint onto the nearest of its heatmap's top peaks when close enough."""
        width = kpt_heatmaps.shape[-1]
        _, index = kpt_heatmaps.flatten(2).topk(self.num_animals, dim=2)   # (B, K, P)
        py = torch.div(index, width, rounding_mode="floor")
        peaks = torch.stack((index - py * width, py), dim=-1).to(poses.dtype)  # (B, K, P, 2)
        per_kpt = poses.transpose(1, 2)                                    # (B, K, N, 2)
        dist = (per_kpt[:, :, :, None] - peaks[:, :, None]).pow(2).sum(-1).sqrt()  # (B,K,N,P)
        best_dist, best = dist.min(dim=3)                                  # (B, K, N)
        nearest = peaks.gather(2, best[..., None].expand(-1, -1, -1, 2))   # (B, K, N, 2)
        moved = torch.where((best_dist < self.max_absorb_distance)[..., None], nearest, per_kpt)
        return moved.transpose(1, 2)

    @staticmethod
    def _heat_values(poses: torch.Tensor, kpt_heatmaps: torch.Tensor) -> torch.Tensor:
        """Heatmap value at each keypoint's cell (floor, clamped into the map): (B, N, K)."""
        height, width = kpt_heatmaps.shape[-2:]
        x = poses[..., 0].floor().clamp(0, width - 1).long()
        y = poses[..., 1].floor().clamp(0, height - 1).long()
        flat_index = (y * width + x).transpose(1, 2)                       # (B, K, N)
        return kpt_heatmaps.flatten(2).gather(2, flat_index).transpose(1, 2)

    def pose_nms(self, poses: torch.Tensor) -> torch.Tensor:
        """Greedy pose NMS over the slots (already in decreasing centre score).

        Pose j duplicates a kept pose i when more than ``nms_keypoint_fraction`` of their
        keypoints lie closer than ``nms_threshold * diag_i``, diag_i being the diagonal of pose
        i's keypoint bounding box (DEKR's rule, with a fraction in place of its fixed count).
        """
        batch, _, num_kpts, _ = poses.shape
        # The slot count is the configured one: a constant K for TopK, which TensorRT needs
        # (a K read from the tensor's shape would be a run-time value in the exported graph).
        n = self.num_animals
        xy = poses[..., :2]
        extent = xy.amax(dim=2) - xy.amin(dim=2)                           # (B, N, 2)
        diag = extent.pow(2).sum(-1).sqrt()                                # (B, N)
        dist = (xy[:, :, None] - xy[:, None]).pow(2).sum(-1).sqrt()        # (B, N, N, K)
        close = (dist < self.nms_threshold * diag[:, :, None, None]).sum(-1)
        duplicate = close.to(poses.dtype) > self.nms_keypoint_fraction * num_kpts  # (B, N, N)
        keep = [torch.ones_like(duplicate[:, 0, 0])]
        for j in range(1, n):
            kept_before = torch.stack(keep, dim=1)                          # (B, j)
            keep.append(~(kept_before & duplicate[:, :j, j]).any(dim=1))
        kept = torch.stack(keep, dim=1)                                    # (B, N)
        # kept slots first, each group in its original order
        rank = kept.to(poses.dtype) * (2 * n) - torch.arange(n, device=poses.device,
                                                               dtype=poses.dtype)
        order = rank.topk(n, dim=1).indices
        poses = poses.gather(1, order[:, :, None, None].expand(-1, -1, num_kpts, 3))
        kept = kept.gather(1, order)
        pad = torch.tensor([-1.0, -1.0, 0.0], dtype=poses.dtype, device=poses.device)
        return torch.where(kept[:, :, None, None], poses, pad)
