"""Detector export: uint8 frames in, fixed-size boxes and scores out (decoding + NMS in the graph).

``DetectorGraph`` wraps a DeepLabCut top-down detector (``dlc_train.models.detectors``) so the
exported graph takes what the runtime has (uint8 NHWC RGB frames of any size) and returns
``boxes`` (B, D, 4) x1, y1, x2, y2 in frame pixels and ``scores`` (B, D), best first, padded with
score 0. Box decoding, the score threshold and a fixed-iteration NMS run inside the graph.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dlc_export.errors import ExportError
from dlc_export.options import DEFAULT_MAX_DETECTIONS
from dlc_train.config import ConfigError
from dlc_train.models.detectors import BaseDetector, FasterRCNN, SSDLite
from dlc_train.models.detectors.base import deeplabcut_detector_input
from dlc_train.models.loading import build_detector_from_snapshot

#: NMS iterations baked into the graph. Greedy NMS converges in as many steps as the longest
#: suppression chain; 24 covers trained detectors with margin (each step is one (B, N, N) op).
DEFAULT_NMS_ITERATIONS = 24
#: The detector's parity gate: every reference box scoring above 0.1 has a box of the artifact
#: with at least this IoU. Reduced-precision artifacts have stated looser bounds, like the pose
#: gates (parity.REDUCED_PRECISION_TOLERANCE_PX), not measured on a GPU yet.
MIN_DETECTOR_IOU = {"fp32": 0.99, "fp16": 0.95, "int8": 0.9}


class DetectorGraph(nn.Module):
    """frames (B, H, W, 3) uint8 -> boxes (B, D, 4) float32 frame pixels, scores (B, D).

    Args:
        detector: an SSDLite or Faster R-CNN detector in eval mode.
        max_detections: D.
        nms_iterations: fixed NMS iteration count (see ``nms_mask_fixed``); Faster R-CNN uses
            it for both its NMS passes (RPN proposals per level, and detections).
        normalize_images: the detector config's ``normalize_images`` (DeepLabCut's double
            normalization, see ``deeplabcut_detector_input``).
    """

    def __init__(self, detector: BaseDetector, max_detections: int = DEFAULT_MAX_DETECTIONS,
                 nms_iterations: int = DEFAULT_NMS_ITERATIONS, normalize_images: bool = True):
        super().__init__()
        if not isinstance(detector, (SSDLite, FasterRCNN)):
            raise ExportError(f"{type(detector).__name__} has no fixed-size export path; "
                              "SSDLite and Faster R-CNN detectors export")
        self.detector = detector
        self.max_detections = int(max_detections)
        self.nms_iterations = int(nms_iterations)
        self.normalize_images = normalize_images
        transform = detector.model.transform
        self.size = tuple(transform.fixed_size or ())  # SSDLite: (320, 320)
        if isinstance(detector, FasterRCNN):
            # For the manifest's ``decoder.detector_input``: the short side is scaled to
            # min_size ("height") unless the long side would then exceed max_size ("width"),
            # aspect ratio kept, then zero-padded to a multiple of 32.
            self.network_input = {"width": int(transform.max_size),
                                  "height": int(transform.min_size), "resize": "short_side"}

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Cast before permuting (TensorRT cannot transpose uint8).
        x = frames.to(torch.float32).permute(0, 3, 1, 2)
        if isinstance(self.detector, FasterRCNN):
            # Its resize target depends on the frame size; predict_fixed takes every size from
            # shape tensors and maps the boxes back to frame pixels itself.
            out = self.detector.model.predict_fixed(
                deeplabcut_detector_input(x, self.normalize_images), self.max_detections,
                self.nms_iterations, self.nms_iterations)
            return out["boxes"], out["scores"]
        # Frame size as a tensor (taken after the cast: TensorRT reads uint8 only through a
        # Cast), so the graph keeps a dynamic H, W.
        hw = torch._shape_as_tensor(x)[2:4].to(torch.float32)
        # Resize here rather than inside SSD's transform: the transform maps boxes back with
        # Python floats taken from the input shape, which tracing would freeze to the example's
        # frame size. Normalization is per-channel affine, so it commutes with the bilinear
        # resize and the network sees the same input as in eager mode.
        x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        x = deeplabcut_detector_input(x, self.normalize_images)
        out = self.detector.model.predict_fixed(x, self.max_detections, self.nms_iterations)
        wh = torch.stack((hw[1] / self.size[1], hw[0] / self.size[0]))
        boxes = out["boxes"] * torch.cat((wh, wh))
        return boxes, out["scores"]


@torch.no_grad()
def eager_detections(detector: BaseDetector, frames: np.ndarray, max_detections: int,
                     normalize_images: bool = True) -> dict[str, np.ndarray]:
    """The reference: DeepLabCut's eager detector path (model forward, then padded best first).

    Args:
        frames: (B, H, W, 3) uint8 RGB.
    """
    from dlc_train.models.detectors.base import pad_detections

    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    _, detections = detector(deeplabcut_detector_input(x, normalize_images))
    out = pad_detections(detections, max_detections)
    return {"boxes": out["boxes"].numpy(), "scores": out["scores"].numpy()}


def build_detector(pytorch_config: dict, snapshot_path: str | Path | None = None,
                   *, where: str = "config") -> BaseDetector:
    """``build_detector_from_snapshot`` with ExportError for a config without a usable detector.

    Without a snapshot the detector keeps its random initialization (tests, dry runs).
    """
    try:
        return build_detector_from_snapshot(pytorch_config, snapshot_path, where=where)
    except ConfigError as err:
        raise ExportError(str(err)) from None


def box_iou_np(a: np.ndarray, b: np.ndarray, extent: float = 0.0) -> np.ndarray:
    """IoU matrix of (N, 4) and (M, 4) x1y1x2y2 boxes, each side extended by ``extent`` px."""
    a = a + np.array([0, 0, extent, extent])
    b = b + np.array([0, 0, extent, extent])
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(-1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(-1)
    return inter / np.maximum(area_a[:, None] + area_b[None] - inter, 1e-9)


def matched_iou(ref_boxes: np.ndarray, ref_scores: np.ndarray, boxes: np.ndarray,
                min_score: float = 0.1) -> float:
    """Smallest best-match IoU of the reference boxes scoring above ``min_score`` (1 if none).

    Boxes are measured pixel-inclusive (x2 + 1, y2 + 1): clipping at the frame border gives
    untrained detectors zero-width boxes, whose plain IoU with themselves is 0/0.

    Args:
        ref_boxes, boxes: (B, D, 4); ref_scores: (B, D).
    """
    worst = 1.0
    for rb, rs, cb in zip(ref_boxes, ref_scores, boxes):
        keep = rb[rs > min_score]
        if len(keep):
            worst = min(worst, float(box_iou_np(keep, cb, extent=1.0).max(axis=1).min()))
    return worst


def network_input(graph: DetectorGraph) -> dict:
    """The detector network's input, for the manifest (``decoder.detector_input``):
    ``{"width", "height", "resize"}``. SSDLite stretches every frame to its fixed 320x320
    (aspect ratio not kept); a graph that resizes otherwise describes itself in
    ``network_input``."""
    described = getattr(graph, "network_input", None)
    if described:
        return dict(described)
    height, width = graph.size
    return {"width": int(width), "height": int(height), "resize": "stretch"}


def detector_iou(graph: DetectorGraph, run: Callable[[np.ndarray], dict[str, np.ndarray]],
                 frames: np.ndarray, batch_size: int = 2) -> float:
    """Smallest matched IoU of ``run``'s boxes (an artifact of ``graph`` through the runtime)
    vs the eager detector on ``frames``."""
    worst = 1.0
    for start in range(0, len(frames), batch_size):
        batch = frames[start:start + batch_size]
        expected = eager_detections(graph.detector, batch, graph.max_detections,
                                    graph.normalize_images)
        worst = min(worst, matched_iou(expected["boxes"], expected["scores"],
                                       run(batch)["boxes"]))
    return worst
