"""Region proposal network (torchvision's ``RegionProposalNetwork`` and ``RPNHead``)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dlc_train.models.detectors.anchors import AnchorGenerator
from dlc_train.models.detectors.box_ops import (BoxCoder, Matcher, batched_nms, box_iou,
                                                clip_boxes_to_image, clip_boxes_to_size,
                                                nms_mask_fixed, sample_pos_neg,
                                                small_box_mask)
from dlc_train.models.detectors.layers import ConvNormAct


class RPNHead(nn.Module):
    """Shared 3x3 conv(s) + ReLU, then 1x1 objectness (A) and box deltas (4A) per level.

    Args:
        in_channels: FPN channels.
        num_anchors: anchors per location.
        conv_depth: 1 (v1, MobileNet) or 2 (v2).
    """

    def __init__(self, in_channels: int, num_anchors: int, conv_depth: int = 1):
        super().__init__()
        self.conv = nn.Sequential(*[ConvNormAct(in_channels, in_channels, 3, norm_layer=None)
                                    for _ in range(conv_depth)])
        self.cls_logits = nn.Conv2d(in_channels, num_anchors, 1)
        self.bbox_pred = nn.Conv2d(in_channels, 4 * num_anchors, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    def forward(self, features: list[torch.Tensor]
                ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        logits, deltas = [], []
        for feature in features:
            t = self.conv(feature)
            logits.append(self.cls_logits(t))
            deltas.append(self.bbox_pred(t))
        return logits, deltas


def _flatten(layer: torch.Tensor, columns: int) -> torch.Tensor:
    # (B, A * C, H, W) -> (B, H * W * A, C): the anchor order of the generators.
    b, _, h, w = layer.shape
    return layer.view(b, -1, columns, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, columns)


class RegionProposalNetwork(nn.Module):
    """Anchors -> objectness + deltas -> per-level top-n -> clip, drop tiny, NMS per level.

    Args:
        anchor_generator: anchors per FPN level.
        head: the RPNHead.
        fg_iou_thresh, bg_iou_thresh: anchor matching thresholds for training.
        batch_size_per_image, positive_fraction: anchors sampled per image for the loss.
        pre_nms_top_n, post_nms_top_n: {"training": n, "testing": n}.
        nms_thresh: IoU threshold of the per-level NMS.
        score_thresh: minimum objectness probability.
    """

    def __init__(self, anchor_generator: AnchorGenerator, head: RPNHead,
                 fg_iou_thresh: float = 0.7, bg_iou_thresh: float = 0.3,
                 batch_size_per_image: int = 256, positive_fraction: float = 0.5,
                 pre_nms_top_n: dict[str, int] | None = None,
                 post_nms_top_n: dict[str, int] | None = None,
                 nms_thresh: float = 0.7, score_thresh: float = 0.0):
        super().__init__()
        self.anchor_generator = anchor_generator
        self.head = head
        self.box_coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
        self.proposal_matcher = Matcher(fg_iou_thresh, bg_iou_thresh,
                                        allow_low_quality_matches=True)
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self._pre_nms_top_n = pre_nms_top_n or {"training": 2000, "testing": 1000}
        self._post_nms_top_n = post_nms_top_n or {"training": 2000, "testing": 1000}
        self.nms_thresh = nms_thresh
        self.score_thresh = score_thresh
        self.min_size = 1e-3

    def pre_nms_top_n(self) -> int:
        return self._pre_nms_top_n["training" if self.training else "testing"]

    def post_nms_top_n(self) -> int:
        return self._post_nms_top_n["training" if self.training else "testing"]

    def filter_proposals(self, proposals: torch.Tensor, objectness: torch.Tensor,
                         image_sizes: list[tuple[int, int]], per_level: list[int]
                         ) -> list[torch.Tensor]:
        """(B, N, 4) decoded anchors and (B, N) logits -> per image (M, 4) proposals."""
        b = proposals.shape[0]
        objectness = objectness.detach()
        idx, levels, offset = [], [], 0
        for level, n in enumerate(per_level):
            k = min(self.pre_nms_top_n(), n)
            _, top = objectness[:, offset:offset + n].topk(k, dim=1)
            idx.append(top + offset)
            levels.append(torch.full((k,), level, dtype=torch.int64, device=proposals.device))
            offset += n
        idx_t = torch.cat(idx, dim=1)
        lvl = torch.cat(levels)
        rows = torch.arange(b, device=proposals.device)[:, None]
        scores = torch.sigmoid(objectness[rows, idx_t])
        proposals = proposals[rows, idx_t]
        out = []
        for boxes, score, size in zip(proposals, scores, image_sizes):
            boxes = clip_boxes_to_image(boxes, size)
            keep = small_box_mask(boxes, self.min_size) & (score >= self.score_thresh)
            boxes, score, lv = boxes[keep], score[keep], lvl[keep]
            keep = batched_nms(boxes, score, lv, self.nms_thresh)[:self.post_nms_top_n()]
            out.append(boxes[keep])
        return out

    def forward(self, image_shape: tuple[int, int], image_sizes: list[tuple[int, int]],
                features: dict[str, torch.Tensor], targets: list[dict] | None = None
                ) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        """Args:
            image_shape: (height, width) of the padded batch.
            image_sizes: per image, the size before padding.
            features: FPN levels (all used, "pool" included).
            targets: boxes in network-input pixels (training).

        Returns:
            per-image proposals, losses ({} in eval).
        """
        feats = list(features.values())
        logits, deltas = self.head(feats)
        anchors = self.anchor_generator(image_shape, [tuple(f.shape[-2:]) for f in feats],
                                        device=feats[0].device, dtype=feats[0].dtype)
        per_level = [l.shape[1] * l.shape[2] * l.shape[3] for l in logits]
        objectness = torch.cat([_flatten(l, 1) for l in logits], dim=1)[..., 0]  # (B, N)
        pred_deltas = torch.cat([_flatten(d, 4) for d in deltas], dim=1)       # (B, N, 4)
        proposals = self.box_coder.decode(pred_deltas.detach(), anchors[None])
        boxes = self.filter_proposals(proposals, objectness, image_sizes, per_level)
        losses: dict[str, torch.Tensor] = {}
        if self.training:
            if targets is None:
                raise ValueError("targets are needed in training mode")
            losses = self.compute_loss(objectness, pred_deltas, anchors, targets)
        return boxes, losses

    def forward_fixed(self, image_hw: torch.Tensor, resized_hw: torch.Tensor,
                      features: dict[str, torch.Tensor], nms_iterations: int | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Eval ``forward`` with fixed shapes and tensor ops only (for export).

        Same proposals as ``forward``: each level's top ``pre_nms_top_n`` anchors (a level with
        fewer anchors is padded with never-valid entries, so K stays a constant), the same
        clipping and filters, NMS per level as one batch of fixed-size sets, then the best
        ``post_nms_top_n`` over all levels. Proposals ``forward`` would not return are marked
        invalid instead of removed.

        Args:
            image_hw: (2,) int64 padded batch size; resized_hw: (2,) int64 size before padding.
            nms_iterations: fixed NMS iteration count (None: until converged).

        Returns:
            proposals (B, P, 4), valid (B, P) bool, P = post_nms_top_n (in eval mode).
        """
        feats = list(features.values())
        logits, deltas = self.head(feats)
        anchors = self.anchor_generator.forward_fixed(image_hw, feats)
        k = self.pre_nms_top_n()
        boxes_l, scores_l, valid_l = [], [], []
        for layer, delta, level_anchors in zip(logits, deltas, anchors):
            obj = _flatten(layer, 1)[..., 0]  # (B, n)
            pred = _flatten(delta, 4)          # (B, n, 4)
            n = torch._shape_as_tensor(obj)[1]
            # K never-valid pads after the level's anchors: topk(K) needs K <= its length.
            padded = torch.cat((obj, torch.full_like(obj[:, :1], -math.inf).expand(-1, k)), 1)
            top, idx = padded.topk(k, dim=1)
            real = idx < n
            idx = torch.minimum(idx, n - 1)
            anchor = level_anchors[idx]  # (B, K, 4)
            delta_k = torch.gather(pred, 1, idx[..., None].expand(-1, -1, 4))
            boxes = clip_boxes_to_size(self.box_coder.decode(delta_k, anchor), resized_hw)
            score = torch.sigmoid(top)
            boxes_l.append(boxes)
            scores_l.append(score)
            valid_l.append(real & small_box_mask(boxes, self.min_size)
                           & (score >= self.score_thresh))
        boxes = torch.stack(boxes_l, 1)  # (B, L, K, 4)
        scores = torch.stack(scores_l, 1)
        valid = torch.stack(valid_l, 1)
        levels = len(boxes_l)
        # Per-level NMS: levels never suppress each other, so they run as a batch of sets.
        keep = nms_mask_fixed(boxes.reshape(-1, k, 4), scores.reshape(-1, k), self.nms_thresh,
                              valid=valid.reshape(-1, k), max_iterations=nms_iterations)
        keep = keep.reshape(-1, levels * k)
        scores = scores.reshape(-1, levels * k)
        boxes = boxes.reshape(-1, levels * k, 4)
        p = min(self.post_nms_top_n(), levels * k)
        top, idx = torch.where(keep, scores, scores.new_tensor(-1.0)).topk(p, dim=1)
        proposals = torch.gather(boxes, 1, idx[..., None].expand(-1, -1, 4))
        return proposals, top >= 0

    def compute_loss(self, objectness: torch.Tensor, pred_deltas: torch.Tensor,
                     anchors: torch.Tensor, targets: list[dict]) -> dict[str, torch.Tensor]:
        labels, reg_targets = [], []
        for target in targets:
            gt = target["boxes"]
            if gt.numel() == 0:
                labels.append(torch.zeros(anchors.shape[0], device=anchors.device))
                reg_targets.append(torch.zeros_like(anchors))
                continue
            matched = self.proposal_matcher(box_iou(gt, anchors))
            lab = (matched >= 0).to(anchors.dtype)
            lab[matched == Matcher.BETWEEN] = -1.0
            labels.append(lab)
            reg_targets.append(self.box_coder.encode(gt[matched.clamp(min=0)], anchors))
        pos, neg = [], []
        for lab in labels:
            p, n = sample_pos_neg(lab.to(torch.int64), self.batch_size_per_image,
                                  self.positive_fraction)
            pos.append(p)
            neg.append(n)
        pos_t, neg_t = torch.stack(pos), torch.stack(neg)
        sampled = pos_t | neg_t
        labels_t, targets_t = torch.stack(labels), torch.stack(reg_targets)
        num = max(int(sampled.sum()), 1)
        box_loss = F.smooth_l1_loss(pred_deltas[pos_t], targets_t[pos_t], beta=1 / 9,
                                    reduction="sum") / num
        obj_loss = F.binary_cross_entropy_with_logits(objectness[sampled], labels_t[sampled])
        return {"loss_objectness": obj_loss, "loss_rpn_box_reg": box_loss}
