"""SSDLite320 with a MobileNetV3-Large backbone: DeepLabCut 3's default top-down detector.

Rebuilds torchvision's ``ssdlite320_mobilenet_v3_large(num_classes=2, weights=None,
weights_backbone=None)`` module for module (keys ``model.backbone.features.*``,
``model.backbone.extra.*``, ``model.head.{classification,regression}_head.module_list.*``):

- backbone: MobileNetV3-Large with a *reduced tail* (last stage halved: torchvision enables it
  when no ImageNet backbone is loaded, which is DeepLabCut's default), BatchNorm eps 1e-3 /
  momentum 0.03, split in two at the C4 expansion layer (stride 16, 672 channels; then stride 32,
  480 channels) plus four extra blocks (1x1 -> depthwise 3x3 stride 2 -> 1x1) to 512, 256, 256,
  128 channels: six maps of 20, 10, 5, 3, 2, 1 cells at 320x320.
- heads: per map a depthwise 3x3 (BN, ReLU6) + 1x1 conv to 6 anchors x (classes | 4 deltas).
- 6 default boxes per cell (scales 0.2..0.95, ratios 1, 1', 2, 1/2, 3, 1/3): 3234 at 320x320.
- inference: softmax, per class score > score_thresh, top 300, NMS 0.55, 300 detections.
"""
from __future__ import annotations

from collections import OrderedDict
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from dlc_train.models.detectors.anchors import DefaultBoxGenerator
from dlc_train.models.detectors.base import DETECTORS, BaseDetector, Detections, select_top_fixed
from dlc_train.models.detectors.box_ops import (BoxCoder, SSDMatcher, batched_nms, box_iou,
                                                clip_boxes_to_image, nms_mask_fixed)
from dlc_train.models.detectors.layers import ConvNormAct, NormFactory
from dlc_train.models.detectors.mobilenetv3 import (mobilenet_v3_large_features, stage_indices)
from dlc_train.models.detectors.transform import DetectionTransform


def _normal_init(module: nn.Module, std: float = 0.03) -> None:
    # torchvision's SSDLite init for every conv of an untrained model (backbone included).
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, mean=0.0, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _prediction_block(in_channels: int, out_channels: int,
                      norm_layer: NormFactory) -> nn.Sequential:
    return nn.Sequential(
        ConvNormAct(in_channels, in_channels, 3, groups=in_channels, norm_layer=norm_layer,
                    act_layer=nn.ReLU6),
        nn.Conv2d(in_channels, out_channels, 1))


def _extra_block(in_channels: int, out_channels: int, norm_layer: NormFactory) -> nn.Sequential:
    mid = out_channels // 2
    return nn.Sequential(
        ConvNormAct(in_channels, mid, 1, norm_layer=norm_layer, act_layer=nn.ReLU6),
        ConvNormAct(mid, mid, 3, stride=2, groups=mid, norm_layer=norm_layer, act_layer=nn.ReLU6),
        ConvNormAct(mid, out_channels, 1, norm_layer=norm_layer, act_layer=nn.ReLU6))


class SSDLiteFeatureExtractor(nn.Module):
    """MobileNetV3 split at C4 + extra blocks -> six feature maps.

    Args:
        norm_layer: normalization factory.
        reduced_tail: halve the last stage (see the module docstring).
    """

    def __init__(self, norm_layer: NormFactory, reduced_tail: bool = True):
        super().__init__()
        backbone = mobilenet_v3_large_features(norm_layer, reduced_tail=reduced_tail)
        c4 = stage_indices(backbone)[-2]  # the last strided block
        c4_block = backbone[c4].block
        # Slicing an nn.Sequential keeps the original child names ("1", "2", "3"), and
        # torchvision's keys carry them (features.1.0.1 is the depthwise conv), so we do the same.
        tail = nn.Sequential(OrderedDict(list(c4_block.named_children())[1:]))
        self.features = nn.Sequential(
            nn.Sequential(*backbone[:c4], c4_block[0]),  # up to the C4 expansion (stride 16)
            nn.Sequential(tail, *backbone[c4 + 1:]),     # the rest (stride 32)
        )
        last = backbone[-1].out_channels
        self.extra = nn.ModuleList([
            _extra_block(last, 512, norm_layer),
            _extra_block(512, 256, norm_layer),
            _extra_block(256, 256, norm_layer),
            _extra_block(256, 128, norm_layer),
        ])
        self.out_channels = [c4_block[0].out_channels, last, 512, 256, 256, 128]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for block in self.features:
            x = block(x)
            out.append(x)
        for block in self.extra:
            x = block(x)
            out.append(x)
        return out


class ScoringHead(nn.Module):
    """One prediction block per map; outputs concatenated as (B, sum H W A, num_columns).

    Args:
        module_list: the per-map blocks.
        num_columns: values per anchor (classes, or 4 deltas).
    """

    def __init__(self, module_list: nn.ModuleList, num_columns: int):
        super().__init__()
        self.module_list = module_list
        self.num_columns = num_columns

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        outs = []
        for block, feature in zip(self.module_list, features):
            y = block(feature)
            b, _, h, w = y.shape
            y = y.view(b, -1, self.num_columns, h, w).permute(0, 3, 4, 1, 2)
            outs.append(y.reshape(b, -1, self.num_columns))
        return torch.cat(outs, dim=1)


class SSDLiteHead(nn.Module):
    def __init__(self, in_channels: list[int], num_anchors: list[int], num_classes: int,
                 norm_layer: NormFactory):
        super().__init__()
        self.classification_head = ScoringHead(nn.ModuleList(
            [_prediction_block(c, num_classes * a, norm_layer)
             for c, a in zip(in_channels, num_anchors)]), num_classes)
        self.regression_head = ScoringHead(nn.ModuleList(
            [_prediction_block(c, 4 * a, norm_layer) for c, a in zip(in_channels, num_anchors)]), 4)

    def forward(self, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"bbox_regression": self.regression_head(features),
                "cls_logits": self.classification_head(features)}


class SSDLiteModel(nn.Module):
    """torchvision's ``SSD`` module with the SSDLite parts (the tree under ``model.``).

    Args:
        num_classes: including background.
        size: network input (height, width).
        score_thresh: per-class score threshold before NMS.
        nms_thresh: IoU threshold of the per-class NMS.
        detections_per_img: detections kept after NMS.
        topk_candidates: per-class candidates kept before NMS.
        iou_thresh: anchor/gt IoU for positives in training.
        positive_fraction: sets the hard-negative ratio (1 - p) / p = 3.
        reduced_tail: see SSDLiteFeatureExtractor.
    """

    def __init__(self, num_classes: int = 2, size: tuple[int, int] = (320, 320),
                 score_thresh: float = 0.001, nms_thresh: float = 0.55,
                 detections_per_img: int = 300, topk_candidates: int = 300,
                 iou_thresh: float = 0.5, positive_fraction: float = 0.25,
                 reduced_tail: bool = True):
        super().__init__()
        norm_layer = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)
        self.backbone = SSDLiteFeatureExtractor(norm_layer, reduced_tail=reduced_tail)
        self.anchor_generator = DefaultBoxGenerator([[2, 3] for _ in range(6)], min_ratio=0.2,
                                                    max_ratio=0.95)
        self.head = SSDLiteHead(self.backbone.out_channels,
                                self.anchor_generator.num_anchors_per_location(), num_classes,
                                norm_layer)
        _normal_init(self)
        self.box_coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
        self.proposal_matcher = SSDMatcher(iou_thresh)
        self.transform = DetectionTransform((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), fixed_size=size,
                                            size_divisible=1)
        self.num_classes = num_classes
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        self.topk_candidates = topk_candidates
        self.neg_to_pos_ratio = (1.0 - positive_fraction) / positive_fraction

    def _run(self, images: torch.Tensor, targets: Detections | None = None):
        x, sizes, targets = self.transform(images, targets)
        features = self.backbone(x)
        head = self.head(features)
        anchors = self.anchor_generator(tuple(x.shape[-2:]),
                                        [tuple(f.shape[-2:]) for f in features],
                                        device=x.device, dtype=x.dtype)
        return sizes, targets, head, anchors

    def forward(self, images: torch.Tensor, targets: Detections | None = None
                ) -> tuple[dict[str, torch.Tensor], Detections]:
        if self.training and targets is None:
            raise ValueError("targets are needed in training mode")
        original = tuple(images.shape[-2:])
        sizes, targets, head, anchors = self._run(images, targets)
        if self.training:
            return self.compute_loss(targets, head, anchors), []
        detections = self.postprocess(head, anchors, sizes)
        for det, size in zip(detections, sizes):
            det["boxes"] = self.transform.postprocess(det["boxes"], size, original)
        return {}, detections

    def postprocess(self, head: dict[str, torch.Tensor], anchors: torch.Tensor,
                    sizes: list[tuple[int, int]]) -> Detections:
        scores_all = F.softmax(head["cls_logits"], dim=-1)
        detections = []
        for deltas, scores, size in zip(head["bbox_regression"], scores_all, sizes):
            boxes = clip_boxes_to_image(self.box_coder.decode(deltas, anchors), size)
            all_boxes, all_scores, all_labels = [], [], []
            for label in range(1, scores.shape[-1]):
                score = scores[:, label]
                keep = score > self.score_thresh
                score, box = score[keep], boxes[keep]
                score, idx = score.topk(min(self.topk_candidates, score.numel()))
                all_boxes.append(box[idx])
                all_scores.append(score)
                all_labels.append(torch.full_like(idx, label))
            boxes_c, scores_c = torch.cat(all_boxes), torch.cat(all_scores)
            labels_c = torch.cat(all_labels)
            keep = batched_nms(boxes_c, scores_c, labels_c, self.nms_thresh)
            keep = keep[:self.detections_per_img]
            detections.append({"boxes": boxes_c[keep], "scores": scores_c[keep],
                               "labels": labels_c[keep]})
        return detections

    def predict_fixed(self, images: torch.Tensor, max_detections: int = 100,
                      nms_iterations: int | None = None) -> dict[str, torch.Tensor]:
        """Same detections as eval ``forward``, as fixed-shape tensors (tensor ops only).

        Args:
            images: (B, 3, H, W) as DeepLabCut feeds them.
            max_detections: K rows per image (padded with score 0, label -1).
            nms_iterations: fixed NMS iteration count for export (None: until converged).
        """
        original = tuple(images.shape[-2:])
        sizes, _, head, anchors = self._run(images)
        b = images.shape[0]
        boxes = clip_boxes_to_image(self.box_coder.decode(head["bbox_regression"], anchors[None]),
                                    sizes[0])
        scores = F.softmax(head["cls_logits"], dim=-1)
        cand_boxes, cand_scores, cand_labels, cand_valid = [], [], [], []
        k = min(self.topk_candidates, anchors.shape[0])
        for label in range(1, scores.shape[-1]):
            s = scores[..., label]
            valid = s > self.score_thresh
            top, idx = torch.where(valid, s, s.new_tensor(-1.0)).topk(k, dim=1)
            cand_boxes.append(torch.gather(boxes, 1, idx[..., None].expand(b, k, 4)))
            cand_scores.append(top)
            cand_valid.append(top > self.score_thresh)
            cand_labels.append(torch.full_like(idx, label))
        cb, cs = torch.cat(cand_boxes, 1), torch.cat(cand_scores, 1)
        cl, cv = torch.cat(cand_labels, 1), torch.cat(cand_valid, 1)
        keep = nms_mask_fixed(cb, cs, self.nms_thresh, valid=cv, idxs=cl,
                              max_iterations=nms_iterations)
        out = select_top_fixed(cb, cs, cl, keep, max_detections, limit=self.detections_per_img)
        # Padding slots are zero boxes: the rescale keeps them zero.
        out["boxes"] = self.transform.postprocess(out["boxes"], sizes[0], original)
        return out

    def compute_loss(self, targets: Detections, head: dict[str, torch.Tensor],
                     anchors: torch.Tensor) -> dict[str, torch.Tensor]:
        """Smooth-L1 box loss on matched anchors + cross-entropy with 3:1 hard negative mining,
        both divided by the number of matched anchors (torchvision's SSD loss)."""
        cls_logits = head["cls_logits"]
        bbox_loss, cls_targets, num_fg = [], [], 0
        for target, deltas, logits in zip(targets, head["bbox_regression"], cls_logits):
            if target["boxes"].numel() == 0:
                matched = torch.full((anchors.shape[0],), -1, dtype=torch.int64,
                                     device=anchors.device)
            else:
                matched = self.proposal_matcher(box_iou(target["boxes"], anchors))
            fg = torch.where(matched >= 0)[0]
            fg_gt = matched[fg]
            num_fg += fg.numel()
            reg_target = self.box_coder.encode(target["boxes"][fg_gt], anchors[fg])
            bbox_loss.append(F.smooth_l1_loss(deltas[fg], reg_target, reduction="sum"))
            gt_cls = torch.zeros(logits.shape[0], dtype=torch.int64, device=logits.device)
            gt_cls[fg] = target["labels"][fg_gt].to(torch.int64)
            cls_targets.append(gt_cls)
        cls_t = torch.stack(cls_targets)
        cls_loss = F.cross_entropy(cls_logits.reshape(-1, cls_logits.shape[-1]), cls_t.reshape(-1),
                                   reduction="none").view(cls_t.shape)
        foreground = cls_t > 0
        num_negative = self.neg_to_pos_ratio * foreground.sum(1, keepdim=True)
        negative_loss = cls_loss.clone()
        negative_loss[foreground] = -float("inf")
        _, idx = negative_loss.sort(1, descending=True)
        background = idx.sort(1)[1] < num_negative  # rank of each anchor among negatives
        n = max(1, num_fg)
        return {"bbox_regression": torch.stack(bbox_loss).sum() / n,
                "classification": (cls_loss[foreground].sum() + cls_loss[background].sum()) / n}


@DETECTORS.register_module
class SSDLite(BaseDetector):
    """DeepLabCut's ``SSDLite`` detector (torchvision's ssdlite320_mobilenet_v3_large, 2 classes).

    Args:
        freeze_bn_stats, freeze_bn_weights, pretrained: see BaseDetector.
        pretrained_from_imagenet: DeepLabCut then builds the full-tail backbone (ImageNet
            layout); the layout follows the flag, but ImageNet MobileNetV3 weights are not
            loaded here (building it for training is refused with one line).
        box_score_thresh: accepted like DeepLabCut, and, like there, it does not reach SSD's
            post-processing (torchvision's SSD ignores it): ``score_thresh`` (0.001) applies.
        variant: must be None or "ssdlite320_mobilenet_v3_large" (DeepLabCut configs carry it).
        score_thresh, nms_thresh, detections_per_img, topk_candidates: see SSDLiteModel.
    """

    def __init__(self, freeze_bn_stats: bool = False, freeze_bn_weights: bool = False,
                 pretrained: bool = False, pretrained_from_imagenet: bool = False,
                 box_score_thresh: float | None = 0.01, variant: str | None = None,
                 score_thresh: float = 0.001, nms_thresh: float = 0.55,
                 detections_per_img: int = 300, topk_candidates: int = 300):
        super().__init__(freeze_bn_stats, freeze_bn_weights, pretrained)
        if variant not in (None, "ssdlite320_mobilenet_v3_large"):
            raise ValueError(f"SSDLite has no variant {variant!r}")
        self.box_score_thresh = box_score_thresh
        self.model = SSDLiteModel(num_classes=2, score_thresh=score_thresh, nms_thresh=nms_thresh,
                                  detections_per_img=detections_per_img,
                                  topk_candidates=topk_candidates,
                                  reduced_tail=not pretrained_from_imagenet)
        if pretrained or pretrained_from_imagenet:
            self.load_pretrained_weights("ssdlite320_mobilenet_v3_large",
                                         imagenet_backbone=pretrained_from_imagenet)

    def predict_fixed(self, x: torch.Tensor, max_detections: int = 100) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return self.model.predict_fixed(x, max_detections)
