"""Detector base class and registry (DeepLabCut 3's top-down detectors).

DeepLabCut wraps torchvision detectors as ``self.model`` and calls ``self.model(images, targets)``
with torchvision's ``eager_outputs`` patched to always return ``(losses, detections)``. Our
detectors keep that interface and the same module tree under ``model.`` so detector snapshots
(``snapshot-detector-XXX.pt``, state_dict under ``"model"``) load with strict keys.

What the detector is fed: DeepLabCut's detector data pipeline (``detector.data.inference`` with
``normalize_images: true``) hands the model ImageNet-normalized RGB images, ``(x / 255 - mean) /
std``; the torchvision model then applies its own transform on top (SSDLite: (x - 0.5) / 0.5,
Faster R-CNN: ImageNet mean/std again). That double normalization is what DeepLabCut's detectors
were trained with, so ``deeplabcut_detector_input`` reproduces it for uint8 frames.
"""
from __future__ import annotations

from abc import ABC

import torch
from torch import nn

from dlc_train.registry import Registry

DETECTORS = Registry("detector")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Detections = list[dict[str, torch.Tensor]]


def deeplabcut_detector_input(images: torch.Tensor, normalize_images: bool = True) -> torch.Tensor:
    """What DeepLabCut feeds its detector for RGB frames with values in [0, 255].

    Args:
        images: (B, 3, H, W) uint8 or float in [0, 255].
        normalize_images: the config's ``normalize_images`` (ImageNet mean/std after /255).
    """
    x = images.float() / 255.0
    if normalize_images:
        mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
        x = (x - mean) / std
    return x


def pad_detections(detections: Detections, max_detections: int) -> dict[str, torch.Tensor]:
    """Per-image variable-length detections -> fixed shapes, best first.

    Padding rows have boxes 0, score 0 and label -1.

    Returns:
        {"boxes": (B, K, 4), "scores": (B, K), "labels": (B, K)} with K = max_detections.
    """
    b = len(detections)
    ref = detections[0]["boxes"] if b else torch.zeros(0, 4)
    boxes = ref.new_zeros((b, max_detections, 4))
    scores = ref.new_zeros((b, max_detections))
    labels = torch.full((b, max_detections), -1, dtype=torch.int64, device=ref.device)
    for i, det in enumerate(detections):
        order = det["scores"].argsort(descending=True)[:max_detections]
        n = order.numel()
        boxes[i, :n] = det["boxes"][order]
        scores[i, :n] = det["scores"][order]
        labels[i, :n] = det["labels"][order]
    return {"boxes": boxes, "scores": scores, "labels": labels}


def select_top_fixed(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor,
                     keep: torch.Tensor, max_detections: int,
                     limit: int | None = None) -> dict[str, torch.Tensor]:
    """Fixed-shape top-k of the kept candidates, with tensor ops only (graph friendly).

    Args:
        boxes: (B, N, 4); scores: (B, N); labels: (B, N); keep: (B, N) bool.
        max_detections: K, the output's slots; slots past N (or past ``limit``) are padding.
        limit: at most this many detections fill the K slots (a detector's
            ``detections_per_img``); None: K.

    Returns:
        as ``pad_detections``.
    """
    b, n = scores.shape
    masked = torch.where(keep, scores, scores.new_tensor(-1.0))
    k = min(max_detections, n, max_detections if limit is None else limit)
    top, idx = masked.topk(k, dim=1)
    valid = top >= 0
    out_boxes = torch.gather(boxes, 1, idx[..., None].expand(b, k, 4)) * valid[..., None]
    out_scores = torch.where(valid, top, top.new_zeros(()))
    out_labels = torch.where(valid, torch.gather(labels, 1, idx), labels.new_full((), -1))
    if k < max_detections:
        pad = max_detections - k
        out_boxes = torch.cat((out_boxes, out_boxes.new_zeros((b, pad, 4))), dim=1)
        out_scores = torch.cat((out_scores, out_scores.new_zeros((b, pad))), dim=1)
        out_labels = torch.cat((out_labels, out_labels.new_full((b, pad), -1)), dim=1)
    return {"boxes": out_boxes, "scores": out_scores, "labels": out_labels}


class BaseDetector(ABC, nn.Module):
    """A detector: images -> per-image boxes (x1, y1, x2, y2 in input pixels), scores, labels.

    Args:
        freeze_bn_stats: keep BatchNorm running statistics fixed while training.
        freeze_bn_weights: keep BatchNorm affine parameters fixed while training.
        pretrained: load torchvision's COCO weights when built for training (see
            ``dlc_train.models.pretrained``; subclasses call ``load_pretrained_weights``).
    """

    def __init__(self, freeze_bn_stats: bool = False, freeze_bn_weights: bool = False,
                 pretrained: bool = False):
        super().__init__()
        self.freeze_bn_stats = freeze_bn_stats
        self.freeze_bn_weights = freeze_bn_weights
        self._pretrained = pretrained

    def forward(self, x: torch.Tensor, targets: Detections | None = None
                ) -> tuple[dict[str, torch.Tensor], Detections]:
        """Runs the wrapped model, DeepLabCut's way.

        Args:
            x: (B, 3, H, W) images as DeepLabCut feeds them (see the module docstring).
            targets: in training, per image {"boxes": (N, 4) x1y1x2y2 pixels, "labels": (N,)}.

        Returns:
            (losses, detections): losses in training ({} in eval); in eval, per image
            {"boxes": (N, 4), "scores": (N,), "labels": (N,)} by decreasing score
            ([] in training).
        """
        return self.model(x, targets)

    @torch.no_grad()
    def predict_fixed(self, x: torch.Tensor, max_detections: int = 100) -> dict[str, torch.Tensor]:
        """Eval-mode detections with fixed shapes (see ``pad_detections``). Subclasses override
        it with a tensor-only path where they can, for export."""
        _, detections = self.model(x, None)
        return pad_detections(detections, max_detections)

    def load_pretrained_weights(self, variant: str, imagenet_backbone: bool = False) -> bool:
        """``pretrained: true``: loads torchvision's COCO weights of ``variant`` into ``model``
        when built for training; built for anything else, nothing is fetched. Returns whether
        weights were loaded."""
        from dlc_train.models.pretrained.apply import load_pretrained_detector  # no import cycle
        return load_pretrained_detector(self.model, variant, imagenet_backbone)

    def get_target(self, labels: dict) -> Detections:
        """DeepLabCut's batch annotations -> torchvision-style targets.

        Args:
            labels: "boxes" (B, N, 4) as x, y, w, h (zero-size rows are padding), "labels",
                "area", "is_crowd" (B, N).
        """
        res = []
        for i, box_ann in enumerate(labels["boxes"]):
            mask = (box_ann[:, 2] > 0.0) & (box_ann[:, 3] > 0.0)
            boxes = box_ann[mask].clone()
            boxes[:, 2:] += boxes[:, :2]
            res.append({"area": labels["area"][i][mask], "labels": labels["labels"][i][mask],
                        "is_crowd": labels["is_crowd"][i][mask], "boxes": boxes})
        return res

    def freeze_batch_norm_layers(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                if self.freeze_bn_weights:
                    module.weight.requires_grad_(False)
                    module.bias.requires_grad_(False)
                if self.freeze_bn_stats:
                    module.eval()

    def train(self, mode: bool = True) -> "BaseDetector":
        super().train(mode)
        if self.freeze_bn_weights or self.freeze_bn_stats:
            self.freeze_batch_norm_layers()
        return self
