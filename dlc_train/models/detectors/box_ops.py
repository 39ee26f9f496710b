"""Box utilities in plain torch: IoU, clipping, NMS (greedy and batched), the box coder, matchers.

Boxes are ``(x1, y1, x2, y2)`` in pixels throughout. The behaviour follows torchvision.ops.boxes
and torchvision's detection ``_utils`` (same IoU, same suppression rule ``iou > threshold``, same
box coding and clamping) so detections match DeepLabCut's torchvision detectors.
"""
from __future__ import annotations

import math

import torch

# exp() of a width/height delta is clamped here (torchvision's bbox_xform_clip).
BBOX_XFORM_CLIP = math.log(1000.0 / 16)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU; ``(..., N, 4), (..., M, 4) -> (..., N, M)`` (leading dims broadcast)."""
    area1 = box_area(boxes1)
    area2 = box_area(boxes2)
    lt = torch.maximum(boxes1[..., :, None, :2], boxes2[..., None, :, :2])
    rb = torch.minimum(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[..., :, None] + area2[..., None, :] - inter
    return inter / union


def clip_boxes_to_image(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Clamps x to [0, width] and y to [0, height]; ``size`` is (height, width)."""
    height, width = size
    x = boxes[..., 0::2].clamp(0, width)
    y = boxes[..., 1::2].clamp(0, height)
    return torch.stack((x, y), dim=-1).reshape(boxes.shape)


def clip_boxes_to_size(boxes: torch.Tensor, size_hw: torch.Tensor) -> torch.Tensor:
    """``clip_boxes_to_image`` with the (height, width) as a (2,) tensor (graph friendly)."""
    limit = size_hw.flip(0).to(boxes.dtype).repeat(2)  # (w, h, w, h)
    return torch.minimum(boxes.clamp(min=0), limit)


def small_box_mask(boxes: torch.Tensor, min_size: float) -> torch.Tensor:
    """True for boxes whose width and height are both >= min_size."""
    wh = boxes[..., 2:] - boxes[..., :2]
    return (wh[..., 0] >= min_size) & (wh[..., 1] >= min_size)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression.

    A box is dropped when its IoU with a higher-scoring kept box is > ``iou_threshold``.

    Args:
        boxes: (N, 4).
        scores: (N,).
        iou_threshold: suppression threshold.

    Returns:
        indices of the kept boxes, by decreasing score (equal scores: lower index first).
    """
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    # Stable: equal scores rank by index, the order ``nms_mask_fixed`` uses, so the eager and
    # exported detectors resolve ties alike (torchvision leaves tie order unspecified).
    order = scores.argsort(descending=True, stable=True)
    # One IoU matrix, then a cheap greedy pass. O(N^2) memory: fine for the few thousand
    # candidates the detectors produce (RPN: <= 1000 per level), and far faster in Python
    # than recomputing IoUs per kept box.
    over = box_iou(boxes[order], boxes[order]) > iou_threshold
    suppressed = torch.zeros(order.numel(), dtype=torch.bool, device=boxes.device)
    keep = []
    for i in range(order.numel()):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= over[i]
    return order[torch.as_tensor(keep, dtype=torch.int64, device=boxes.device)]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor,
                iou_threshold: float) -> torch.Tensor:
    """NMS independently per category ``idxs`` (boxes of different categories never suppress
    each other), by shifting each category to its own disjoint coordinate range."""
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    offsets = idxs.to(boxes) * (boxes.max() + 1)
    return nms(boxes + offsets[:, None], scores, iou_threshold)


def nms_mask_fixed(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float,
                   valid: torch.Tensor | None = None, idxs: torch.Tensor | None = None,
                   max_iterations: int | None = None) -> torch.Tensor:
    """Greedy NMS on a batch of fixed-size candidate sets, with tensor ops only.

    Greedy NMS is the unique solution of ``keep[i] = not any(keep[j] and iou[j, i] > t for j
    ranked before i)``. Iterating that equation from "keep everything" converges to it in at
    most N steps (the first k ranks are exact after k steps) and in practice in a handful (the
    depth of the longest suppression chain). Each step is one masked reduction over (B, N, N), so
    the same code runs in eager mode and in an exported graph (with ``max_iterations`` fixed).
    "Ranked before" is a pairwise test (higher score, or equal score and lower index), the
    order of ``nms``: no sort, so ties resolve the same in torch, ONNX Runtime and TensorRT.

    Args:
        boxes: (B, N, 4).
        scores: (B, N).
        iou_threshold: suppression threshold.
        valid: (B, N) bool, candidates that take part (others are neither kept nor suppress).
        idxs: (B, N) category per candidate: NMS runs per category.
        max_iterations: stop after this many steps (None: until nothing changes).

    Returns:
        (B, N) bool keep mask, in the input order.
    """
    n = scores.shape[1]
    if valid is None:
        valid = torch.ones_like(scores, dtype=torch.bool)
    if idxs is not None:
        span = boxes.amax(dim=(1, 2)).clamp(min=0) + 1  # (B,): per-image coordinate range
        boxes = boxes + (idxs.to(boxes) * span[:, None])[..., None]
    # before[j, i]: j ranks before i (higher score, ties by lower index). Invalid candidates
    # never suppress (keep starts, and stays, False for them), so their rank is irrelevant.
    s_j, s_i = scores[:, :, None], scores[:, None, :]
    lower_index = torch.ones(n, n, dtype=torch.bool, device=boxes.device).triu(1)  # j < i
    before = (s_j > s_i) | ((s_j == s_i) & lower_index)
    over = (box_iou(boxes, boxes) > iou_threshold) & before
    keep = valid
    steps = n if max_iterations is None else max_iterations
    for _ in range(steps):
        suppressed = (over & keep[:, :, None]).any(dim=1)
        new_keep = valid & ~suppressed
        if max_iterations is None and torch.equal(new_keep, keep):
            break
        keep = new_keep
    return keep


class BoxCoder:
    """Encodes boxes relative to reference boxes as weighted (dx, dy, dw, dh), and back.

    Args:
        weights: (wx, wy, ww, wh) multipliers of the deltas (SSD and Fast R-CNN heads: 10, 10,
            5, 5; the RPN: 1, 1, 1, 1).
        bbox_xform_clip: upper clamp of dw, dh before exp().
    """

    def __init__(self, weights: tuple[float, float, float, float],
                 bbox_xform_clip: float = BBOX_XFORM_CLIP):
        self.weights = weights
        self.bbox_xform_clip = bbox_xform_clip

    def encode(self, gt_boxes: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """(..., 4) ground truth and references -> (..., 4) regression targets."""
        wx, wy, ww, wh = self.weights
        ref_w = reference[..., 2] - reference[..., 0]
        ref_h = reference[..., 3] - reference[..., 1]
        ref_x = reference[..., 0] + 0.5 * ref_w
        ref_y = reference[..., 1] + 0.5 * ref_h
        gt_w = gt_boxes[..., 2] - gt_boxes[..., 0]
        gt_h = gt_boxes[..., 3] - gt_boxes[..., 1]
        gt_x = gt_boxes[..., 0] + 0.5 * gt_w
        gt_y = gt_boxes[..., 1] + 0.5 * gt_h
        return torch.stack((wx * (gt_x - ref_x) / ref_w, wy * (gt_y - ref_y) / ref_h,
                            ww * torch.log(gt_w / ref_w), wh * torch.log(gt_h / ref_h)), dim=-1)

    def decode(self, deltas: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Applies deltas to references.

        Args:
            deltas: (..., 4 * K): K boxes per reference (one per class in Fast R-CNN).
            reference: (..., 4).

        Returns:
            (..., 4 * K) boxes.
        """
        reference = reference.to(deltas.dtype)
        wx, wy, ww, wh = self.weights
        widths = (reference[..., 2] - reference[..., 0])[..., None]
        heights = (reference[..., 3] - reference[..., 1])[..., None]
        ctr_x = reference[..., 0:1] + 0.5 * widths
        ctr_y = reference[..., 1:2] + 0.5 * heights
        dx = deltas[..., 0::4] / wx
        dy = deltas[..., 1::4] / wy
        dw = (deltas[..., 2::4] / ww).clamp(max=self.bbox_xform_clip)
        dh = (deltas[..., 3::4] / wh).clamp(max=self.bbox_xform_clip)
        pred_x = dx * widths + ctr_x
        pred_y = dy * heights + ctr_y
        half_w = 0.5 * torch.exp(dw) * widths
        half_h = 0.5 * torch.exp(dh) * heights
        boxes = torch.stack((pred_x - half_w, pred_y - half_h, pred_x + half_w, pred_y + half_h),
                            dim=-1)
        return boxes.flatten(-2)


class Matcher:
    """Assigns each prediction (anchor/proposal) the ground truth of highest IoU.

    Args:
        high_threshold: IoU >= this -> foreground (the gt index).
        low_threshold: IoU < this -> background (``BELOW_LOW``); between -> ``BETWEEN`` (ignored).
        allow_low_quality_matches: also match every gt to its best predictions even below the
            threshold (the RPN does this).
    """

    BELOW_LOW = -1
    BETWEEN = -2

    def __init__(self, high_threshold: float, low_threshold: float,
                 allow_low_quality_matches: bool = False):
        assert low_threshold <= high_threshold
        self.high_threshold = high_threshold
        self.low_threshold = low_threshold
        self.allow_low_quality_matches = allow_low_quality_matches

    def __call__(self, quality: torch.Tensor) -> torch.Tensor:
        """(G, P) IoU matrix -> (P,) matched gt index, or BELOW_LOW / BETWEEN."""
        if quality.numel() == 0:
            return torch.full((quality.shape[1],), self.BELOW_LOW, dtype=torch.int64,
                              device=quality.device)
        matched_vals, matches = quality.max(dim=0)
        all_matches = matches.clone()
        matches[matched_vals < self.low_threshold] = self.BELOW_LOW
        matches[(matched_vals >= self.low_threshold)
                & (matched_vals < self.high_threshold)] = self.BETWEEN
        if self.allow_low_quality_matches:
            best_per_gt = quality.max(dim=1, keepdim=True).values
            _, preds = torch.nonzero(quality == best_per_gt, as_tuple=True)
            matches[preds] = all_matches[preds]
        return matches


class SSDMatcher(Matcher):
    """SSD's matcher: IoU >= threshold, and every gt always keeps its best default box."""

    def __init__(self, threshold: float):
        super().__init__(threshold, threshold, allow_low_quality_matches=False)

    def __call__(self, quality: torch.Tensor) -> torch.Tensor:
        matches = super().__call__(quality)
        if quality.numel() == 0:
            return matches
        best_pred = quality.max(dim=1).indices
        matches[best_pred] = torch.arange(best_pred.numel(), dtype=torch.int64,
                                          device=best_pred.device)
        return matches


def sample_pos_neg(matched_labels: torch.Tensor, batch_size: int,
                   positive_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Random balanced sample of positives (label >= 1) and negatives (label == 0).

    Returns:
        (positive mask, negative mask) over the predictions.
    """
    positive = torch.where(matched_labels >= 1)[0]
    negative = torch.where(matched_labels == 0)[0]
    num_pos = min(positive.numel(), int(batch_size * positive_fraction))
    num_neg = min(negative.numel(), batch_size - num_pos)
    pos_idx = positive[torch.randperm(positive.numel(), device=positive.device)[:num_pos]]
    neg_idx = negative[torch.randperm(negative.numel(), device=negative.device)[:num_neg]]
    pos_mask = torch.zeros_like(matched_labels, dtype=torch.bool)
    neg_mask = torch.zeros_like(matched_labels, dtype=torch.bool)
    pos_mask[pos_idx] = True
    neg_mask[neg_idx] = True
    return pos_mask, neg_mask
