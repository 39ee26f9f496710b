"""Faster R-CNN (torchvision's ``FasterRCNN``): backbone+FPN -> RPN -> RoIAlign -> box head.

Variants, as DeepLabCut builds them (``num_classes=2``, no COCO weights):

- ``fasterrcnn_resnet50_fpn_v2``: ResNet-50 with BatchNorm, FPN with BatchNorm, 5 levels
  (strides 4..64, anchors 32..512 x ratios 0.5/1/2), RPN with two 3x3 convs, box head of four
  3x3 conv+BN+ReLU and one 1024 FC. Keys: ``detector_fasterrcnn_resnet50_fpn_v2.txt``.
- ``fasterrcnn_mobilenet_v3_large_fpn``: MobileNetV3-Large with FrozenBatchNorm (torchvision
  loads ImageNet backbone weights by default, and then freezes the norms; DeepLabCut does not
  override that), FPN on the two last stages (both stride 32) + pool, 15 anchors per location
  (sizes 32..512 x 3 ratios on each of the 3 levels), RPN with one conv, TwoMLPHead (fc6, fc7),
  RPN score threshold 0.05. No DeepLabCut key file was available to check this one against.

Both resize so the short side is 800 (long side <= 1333) and normalize with ImageNet mean/std
(on top of DeepLabCut's own normalization, see base.py).
"""
from __future__ import annotations

import torch
from torch import nn

from dlc_train.models.detectors.anchors import AnchorGenerator
from dlc_train.models.detectors.base import DETECTORS, IMAGENET_MEAN, IMAGENET_STD, BaseDetector
from dlc_train.models.detectors.fpn import BackboneWithFPN, MobileNetBody, ResNetBody
from dlc_train.models.detectors.layers import FrozenBatchNorm2d
from dlc_train.models.detectors.mobilenetv3 import stage_indices
from dlc_train.models.detectors.roi_align import MultiScaleRoIAlign
from dlc_train.models.detectors.roi_heads import (ConvFCHead, FastRCNNPredictor, RoIHeads,
                                                  TwoMLPHead)
from dlc_train.models.detectors.rpn import RegionProposalNetwork, RPNHead
from dlc_train.models.detectors.transform import DetectionTransform

VARIANTS = ("fasterrcnn_mobilenet_v3_large_fpn", "fasterrcnn_resnet50_fpn_v2")


class FasterRCNNModel(nn.Module):
    """torchvision's ``FasterRCNN`` module tree (``backbone``, ``rpn``, ``roi_heads``).

    Args:
        variant: one of VARIANTS.
        num_classes: including background.
        min_size, max_size: resize targets (see DetectionTransform).
        rpn_score_thresh: minimum objectness probability (None: the variant's default).
        rpn_pre_nms_top_n_test, rpn_post_nms_top_n_test: proposals kept at test time.
        box_score_thresh, box_nms_thresh, box_detections_per_img: detection post-processing.
    """

    def __init__(self, variant: str = "fasterrcnn_mobilenet_v3_large_fpn", num_classes: int = 2,
                 min_size: int = 800, max_size: int = 1333,
                 rpn_score_thresh: float | None = None, rpn_pre_nms_top_n_test: int = 1000,
                 rpn_post_nms_top_n_test: int = 1000, box_score_thresh: float = 0.05,
                 box_nms_thresh: float = 0.5, box_detections_per_img: int = 100):
        super().__init__()
        if variant == "fasterrcnn_resnet50_fpn_v2":
            self.backbone = BackboneWithFPN(ResNetBody(nn.BatchNorm2d), nn.BatchNorm2d)
            anchors = AnchorGenerator(((32,), (64,), (128,), (256,), (512,)),
                                      ((0.5, 1.0, 2.0),) * 5)
            rpn_head = RPNHead(256, anchors.num_anchors_per_location()[0], conv_depth=2)
            box_head: nn.Module = ConvFCHead((256, 7, 7), [256] * 4, [1024], nn.BatchNorm2d)
            default_rpn_score = 0.0
        elif variant == "fasterrcnn_mobilenet_v3_large_fpn":
            self.backbone = BackboneWithFPN(MobileNetBody(FrozenBatchNorm2d), None)
            anchors = AnchorGenerator(((32, 64, 128, 256, 512),) * 3, ((0.5, 1.0, 2.0),) * 3)
            rpn_head = RPNHead(256, anchors.num_anchors_per_location()[0], conv_depth=1)
            box_head = TwoMLPHead(256 * 7 * 7, 1024)
            default_rpn_score = 0.05
            # torchvision freezes the first stages (trainable_backbone_layers=3 of 6).
            stages = stage_indices(list(self.backbone.body))
            for layer in list(self.backbone.body)[:stages[len(stages) - 3]]:
                layer.requires_grad_(False)
        else:
            raise ValueError(f"unknown Faster R-CNN variant {variant!r} (known: {VARIANTS})")
        self.variant = variant
        self.transform = DetectionTransform(IMAGENET_MEAN, IMAGENET_STD, min_size, max_size,
                                            size_divisible=32)
        self.rpn = RegionProposalNetwork(
            anchors, rpn_head, pre_nms_top_n={"training": 2000, "testing": rpn_pre_nms_top_n_test},
            post_nms_top_n={"training": 2000, "testing": rpn_post_nms_top_n_test},
            score_thresh=default_rpn_score if rpn_score_thresh is None else rpn_score_thresh)
        self.roi_heads = RoIHeads(MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2), box_head,
                                  FastRCNNPredictor(1024, num_classes),
                                  score_thresh=box_score_thresh, nms_thresh=box_nms_thresh,
                                  detections_per_img=box_detections_per_img)

    def forward(self, images: torch.Tensor, targets: list[dict] | None = None):
        if self.training and targets is None:
            raise ValueError("targets are needed in training mode")
        original = tuple(images.shape[-2:])
        x, sizes, targets = self.transform(images, targets)
        features = self.backbone(x)
        proposals, rpn_losses = self.rpn(tuple(x.shape[-2:]), sizes, features, targets)
        detections, det_losses = self.roi_heads(features, proposals, sizes, targets)
        if self.training:
            return {**det_losses, **rpn_losses}, []
        for det, size in zip(detections, sizes):
            det["boxes"] = self.transform.postprocess(det["boxes"], size, original)
        return {}, detections

    @torch.no_grad()
    def predict_fixed(self, images: torch.Tensor, max_detections: int = 100,
                      nms_iterations: int | None = None,
                      rpn_nms_iterations: int | None = None) -> dict[str, torch.Tensor]:
        """Eval ``forward`` as fixed-shape tensors with tensor ops only (for export): the same
        detections, best first, padded with score 0 and label -1 (see ``pad_detections``).

        Every size that depends on the input (resize target, padding, anchor grids, RoIAlign
        scales) comes from shape tensors, so a traced graph keeps a dynamic batch and frame size.

        Args:
            images: (B, 3, H, W) as DeepLabCut feeds them.
            max_detections: K rows per image.
            nms_iterations, rpn_nms_iterations: fixed NMS iteration counts of the box head and
                of the RPN (None: until converged, the exact greedy result).
        """
        x, resized_hw = self.transform.forward_fixed(images)
        padded_hw = torch._shape_as_tensor(x)[2:4]
        features = self.backbone(x)
        proposals, valid = self.rpn.forward_fixed(padded_hw, resized_hw, features,
                                                  rpn_nms_iterations)
        out = self.roi_heads.forward_fixed(features, proposals, valid, resized_hw,
                                           max_detections, nms_iterations)
        # Back to input pixels (``transform.postprocess`` with tensor sizes).
        ratio = (torch._shape_as_tensor(images)[2:4] / resized_hw).to(out["boxes"].dtype)
        out["boxes"] = out["boxes"] * ratio.flip(0).repeat(2)
        return out


@DETECTORS.register_module
class FasterRCNN(BaseDetector):
    """DeepLabCut's ``FasterRCNN`` detector.

    Args:
        freeze_bn_stats, freeze_bn_weights, pretrained: see BaseDetector.
        variant: "fasterrcnn_mobilenet_v3_large_fpn" (DeepLabCut's default) or
            "fasterrcnn_resnet50_fpn_v2".
        box_score_thresh: minimum detection score (DeepLabCut's default 0.01; None -> 0.01).
        min_size, max_size: resize targets (torchvision's 800 / 1333 by default; smaller values
            trade accuracy on small animals for speed).
        rpn_pre_nms_top_n_test, rpn_post_nms_top_n_test: RPN proposals kept per level before
            NMS and per image after it, at test time (torchvision's FasterRCNN arguments; 1000).
    """

    def __init__(self, freeze_bn_stats: bool = False, freeze_bn_weights: bool = False,
                 variant: str | None = "fasterrcnn_mobilenet_v3_large_fpn",
                 pretrained: bool = False, box_score_thresh: float | None = 0.01,
                 min_size: int = 800, max_size: int = 1333,
                 rpn_pre_nms_top_n_test: int = 1000, rpn_post_nms_top_n_test: int = 1000):
        super().__init__(freeze_bn_stats, freeze_bn_weights, pretrained)
        variant = variant or "fasterrcnn_mobilenet_v3_large_fpn"
        if not variant.lower().startswith("fasterrcnn"):
            raise ValueError("The variant must start with `fasterrcnn`")
        self.model = FasterRCNNModel(variant, num_classes=2, min_size=min_size, max_size=max_size,
                                     box_score_thresh=0.01 if box_score_thresh is None
                                     else box_score_thresh,
                                     rpn_pre_nms_top_n_test=rpn_pre_nms_top_n_test,
                                     rpn_post_nms_top_n_test=rpn_post_nms_top_n_test)
        if pretrained:
            self.load_pretrained_weights(variant)

    def predict_fixed(self, x: torch.Tensor, max_detections: int = 100,
                      nms_iterations: int | None = None,
                      rpn_nms_iterations: int | None = None) -> dict[str, torch.Tensor]:
        """See ``FasterRCNNModel.predict_fixed``."""
        return self.model.predict_fixed(x, max_detections, nms_iterations, rpn_nms_iterations)
