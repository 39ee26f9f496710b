"""Second stage of Faster R-CNN: RoIAlign -> box head -> class scores and per-class deltas."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dlc_train.models.detectors.base import select_top_fixed
from dlc_train.models.detectors.box_ops import (BoxCoder, Matcher, batched_nms, box_iou,
                                                clip_boxes_to_image, clip_boxes_to_size,
                                                nms_mask_fixed, sample_pos_neg,
                                                small_box_mask)
from dlc_train.models.detectors.layers import ConvNormAct, NormFactory
from dlc_train.models.detectors.roi_align import MultiScaleRoIAlign


class TwoMLPHead(nn.Module):
    """v1 / MobileNet box head: flatten -> fc6 -> ReLU -> fc7 -> ReLU.

    Args:
        in_channels: C * 7 * 7.
        representation_size: hidden width (1024).
    """

    def __init__(self, in_channels: int, representation_size: int = 1024):
        super().__init__()
        self.fc6 = nn.Linear(in_channels, representation_size)
        self.fc7 = nn.Linear(representation_size, representation_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc7(F.relu(self.fc6(x.flatten(1)))))


class ConvFCHead(nn.Sequential):
    """v2 box head: 4 x (3x3 conv, BN, ReLU) -> flatten -> Linear -> ReLU
    (indices 0-3 convs, 4 flatten, 5 linear, 6 ReLU: torchvision's ``FastRCNNConvFCHead``).

    Args:
        input_size: (C, H, W) of the pooled features.
        conv_layers: channels of each conv.
        fc_layers: widths of the linear layers.
        norm_layer: norm of the convs.
    """

    def __init__(self, input_size: tuple[int, int, int], conv_layers: list[int],
                 fc_layers: list[int], norm_layer: NormFactory | None = nn.BatchNorm2d):
        c, h, w = input_size
        blocks: list[nn.Module] = []
        prev = c
        for ch in conv_layers:
            blocks.append(ConvNormAct(prev, ch, 3, norm_layer=norm_layer))
            prev = ch
        blocks.append(nn.Flatten())
        prev = prev * h * w
        for width in fc_layers:
            blocks += [nn.Linear(prev, width), nn.ReLU(inplace=True)]
            prev = width
        super().__init__(*blocks)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)


class FastRCNNPredictor(nn.Module):
    """Linear class scores and per-class box deltas.

    Args:
        in_channels: box head width.
        num_classes: including background.
    """

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.cls_score = nn.Linear(in_channels, num_classes)
        self.bbox_pred = nn.Linear(in_channels, num_classes * 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.flatten(1)
        return self.cls_score(x), self.bbox_pred(x)


class RoIHeads(nn.Module):
    """Args:
        box_roi_pool: the multi-scale RoIAlign.
        box_head: TwoMLPHead or ConvFCHead.
        box_predictor: FastRCNNPredictor.
        fg_iou_thresh, bg_iou_thresh: proposal matching thresholds (training).
        batch_size_per_image, positive_fraction: proposals sampled per image (training).
        score_thresh: minimum class probability of a detection.
        nms_thresh: per-class NMS threshold.
        detections_per_img: detections kept per image.
    """

    def __init__(self, box_roi_pool: MultiScaleRoIAlign, box_head: nn.Module,
                 box_predictor: FastRCNNPredictor, fg_iou_thresh: float = 0.5,
                 bg_iou_thresh: float = 0.5, batch_size_per_image: int = 512,
                 positive_fraction: float = 0.25, score_thresh: float = 0.05,
                 nms_thresh: float = 0.5, detections_per_img: int = 100):
        super().__init__()
        self.box_roi_pool = box_roi_pool
        self.box_head = box_head
        self.box_predictor = box_predictor
        self.box_coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
        self.proposal_matcher = Matcher(fg_iou_thresh, bg_iou_thresh, False)
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img

    def forward(self, features: dict[str, torch.Tensor], proposals: list[torch.Tensor],
                image_sizes: list[tuple[int, int]], targets: list[dict] | None = None
                ) -> tuple[list[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
        if self.training:
            if targets is None:
                raise ValueError("targets are needed in training mode")
            proposals, labels, reg_targets = self.select_training_samples(proposals, targets)
        pooled = self.box_roi_pool(features, proposals, image_sizes)
        class_logits, box_regression = self.box_predictor(self.box_head(pooled))
        if self.training:
            return [], self.fastrcnn_loss(class_logits, box_regression, labels, reg_targets)
        return self.postprocess(class_logits, box_regression, proposals, image_sizes), {}

    def postprocess(self, class_logits: torch.Tensor, box_regression: torch.Tensor,
                    proposals: list[torch.Tensor], image_sizes: list[tuple[int, int]]
                    ) -> list[dict[str, torch.Tensor]]:
        num_classes = class_logits.shape[-1]
        counts = [p.shape[0] for p in proposals]
        boxes_all = self.box_coder.decode(box_regression, torch.cat(proposals))
        boxes_all = boxes_all.reshape(-1, num_classes, 4)
        scores_all = F.softmax(class_logits, -1)
        detections = []
        for boxes, scores, size in zip(boxes_all.split(counts), scores_all.split(counts),
                                       image_sizes):
            boxes = clip_boxes_to_image(boxes, size)
            labels = torch.arange(num_classes, device=boxes.device).view(1, -1).expand_as(scores)
            boxes = boxes[:, 1:].reshape(-1, 4)  # drop background
            scores = scores[:, 1:].reshape(-1)
            labels = labels[:, 1:].reshape(-1)
            keep = (scores > self.score_thresh) & small_box_mask(boxes, 1e-2)
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            keep = batched_nms(boxes, scores, labels, self.nms_thresh)[:self.detections_per_img]
            detections.append({"boxes": boxes[keep], "scores": scores[keep],
                               "labels": labels[keep]})
        return detections

    def forward_fixed(self, features: dict[str, torch.Tensor], proposals: torch.Tensor,
                      valid: torch.Tensor, resized_hw: torch.Tensor, max_detections: int,
                      nms_iterations: int | None = None) -> dict[str, torch.Tensor]:
        """Eval ``forward`` + ``postprocess`` with fixed shapes and tensor ops only (export).

        Args:
            proposals: (B, P, 4); valid: (B, P) bool (invalid ones are pooled, never kept).
            resized_hw: (2,) int64 image size before batch padding.
            max_detections: rows per image (at most ``detections_per_img`` are filled).

        Returns:
            as ``select_top_fixed`` (boxes in network-input pixels), padded to max_detections.
        """
        b, p = proposals.shape[0], proposals.shape[1]
        pooled = self.box_roi_pool.forward_fixed(features, proposals, resized_hw)
        class_logits, box_regression = self.box_predictor(self.box_head(pooled))
        num_classes = class_logits.shape[-1]
        boxes = self.box_coder.decode(box_regression.reshape(b, p, -1), proposals)
        boxes = clip_boxes_to_size(boxes.reshape(b, p, num_classes, 4), resized_hw)
        scores = F.softmax(class_logits, -1).reshape(b, p, num_classes)
        labels = torch.arange(num_classes, device=boxes.device).view(1, 1, -1).expand_as(scores)
        boxes = boxes[:, :, 1:].reshape(b, -1, 4)  # drop background
        scores = scores[:, :, 1:].reshape(b, -1)
        labels = labels[:, :, 1:].reshape(b, -1)
        keep = (valid[:, :, None].expand(-1, -1, num_classes - 1).reshape(b, -1)
                & (scores > self.score_thresh) & small_box_mask(boxes, 1e-2))
        keep = nms_mask_fixed(boxes, scores, self.nms_thresh, valid=keep, idxs=labels,
                              max_iterations=nms_iterations)
        return select_top_fixed(boxes, scores, labels, keep, max_detections,
                                limit=self.detections_per_img)

    def select_training_samples(self, proposals: list[torch.Tensor], targets: list[dict]):
        out_props, out_labels, out_targets = [], [], []
        for props, target in zip(proposals, targets):
            gt = target["boxes"].to(props.dtype)
            props = torch.cat((props, gt))  # the ground truth is always a proposal
            if gt.numel() == 0:
                matched = torch.full((props.shape[0],), -1, dtype=torch.int64,
                                     device=props.device)
                labels = torch.zeros(props.shape[0], dtype=torch.int64, device=props.device)
            else:
                matched = self.proposal_matcher(box_iou(gt, props))
                labels = target["labels"].to(torch.int64)[matched.clamp(min=0)]
                labels[matched == Matcher.BELOW_LOW] = 0
                labels[matched == Matcher.BETWEEN] = -1
            pos, neg = sample_pos_neg(labels, self.batch_size_per_image, self.positive_fraction)
            idx = torch.where(pos | neg)[0]
            props, labels, matched = props[idx], labels[idx], matched[idx]
            gt_for = gt[matched.clamp(min=0)] if gt.numel() else torch.zeros_like(props)
            out_props.append(props)
            out_labels.append(labels)
            out_targets.append(self.box_coder.encode(gt_for, props))
        return out_props, out_labels, out_targets

    def fastrcnn_loss(self, class_logits: torch.Tensor, box_regression: torch.Tensor,
                      labels: list[torch.Tensor], reg_targets: list[torch.Tensor]
                      ) -> dict[str, torch.Tensor]:
        labels_t = torch.cat(labels)
        targets_t = torch.cat(reg_targets)
        cls_loss = F.cross_entropy(class_logits, labels_t)
        pos = torch.where(labels_t > 0)[0]
        deltas = box_regression.reshape(box_regression.shape[0], -1, 4)[pos, labels_t[pos]]
        box_loss = F.smooth_l1_loss(deltas, targets_t[pos], beta=1 / 9,
                                    reduction="sum") / max(labels_t.numel(), 1)
        return {"loss_classifier": cls_loss, "loss_box_reg": box_loss}
