"""The top-down pose graph and its eager reference.

``TopDownPose`` takes the frames and boxes (``images`` uint8 (B, H, W, 3), ``boxes`` float32
(B, M, 4) x1 y1 x2 y2 frame pixels) and returns ``keypoints`` (B, M, K, 3) in frame pixels. The
crops are taken with ``grid_sample``, reproducing DeepLabCut 3's ``top_down_crop``: the box plus
``top_down_crop.margin`` (default 0) on each side, widened to the crop's aspect ratio around its
centre, corners rounded to whole pixels, zero padding where it leaves the frame, then a bilinear
resize (cv2's half-pixel convention, border clamped to the crop) to the configured crop size.
Keypoints come back as ``x = x_crop * scale + offset``. One pass: the frames are uploaded once
per graph and never cropped on the host.

The reference (``eager_top_down``) crops each box on the CPU the DeepLabCut way and runs the
PyTorch model: parity compares the two.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dlc_export.wrappers import NormalizeFrames
from dlc_train.models.model import PoseModel


def crop_windows(boxes: torch.Tensor, out_w: int, out_h: int, margin: float
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepLabCut's crop window per box: (offset x, y) and (crop width, height) in pixels.

    Args:
        boxes: (..., 4) x1, y1, x2, y2.
    """
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    cx, cy = boxes[..., 0] + w / 2, boxes[..., 1] + h / 2
    w, h = w + 2 * margin, h + 2 * margin
    ratio = out_w / out_h
    # Widen the short side to the output ratio (DeepLabCut's fix_bbox_aspect_ratio, branch-free).
    w, h = torch.maximum(w, h * ratio), torch.maximum(h, w / ratio)
    x1, x2 = torch.round(cx - w / 2), torch.round(cx + w / 2)
    y1, y2 = torch.round(cy - h / 2), torch.round(cy + h / 2)
    size = torch.stack((x2 - x1, y2 - y1), dim=-1).clamp(min=1.0)  # empty slots stay finite
    return torch.stack((x1, y1), dim=-1), size


class TopDownCrop(nn.Module):
    """frames (B, 3, H, W) float + boxes (B, M, 4) -> crops (B*M, 3, out_h, out_w), offsets,
    scales (B, M, 2) with ``frame = crop * scale + offset``.

    The M crops of a frame are sampled as one tall grid over that frame, so the frames are
    never repeated per box.
    """

    def __init__(self, out_w: int, out_h: int, margin: float):
        super().__init__()
        self.out_w, self.out_h, self.margin = int(out_w), int(out_h), float(margin)
        self.register_buffer("jx", torch.arange(self.out_w, dtype=torch.float32) + 0.5,
                             persistent=False)
        self.register_buffer("jy", torch.arange(self.out_h, dtype=torch.float32) + 0.5,
                             persistent=False)

    def forward(self, frames: torch.Tensor, boxes: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, m = boxes.shape[0], boxes.shape[1]
        offset, size = crop_windows(boxes, self.out_w, self.out_h, self.margin)
        scale = size / size.new_tensor([self.out_w, self.out_h])
        # cv2.resize (INTER_LINEAR): source = (j + 0.5) * scale - 0.5, clamped to the crop.
        sx = torch.minimum((self.jx * scale[..., :1] - 0.5).clamp(min=0.0), size[..., :1] - 1)
        sy = torch.minimum((self.jy * scale[..., 1:] - 0.5).clamp(min=0.0), size[..., 1:] - 1)
        sx, sy = sx + offset[..., :1], sy + offset[..., 1:]  # (B, M, W'), (B, M, H') frame px
        hw = torch._shape_as_tensor(frames)[2:4].to(frames.dtype)
        # grid_sample, align_corners=False: pixel p sits at (2p + 1) / size - 1; outside the
        # frame it reads zeros, DeepLabCut's zero padding.
        gx = (2 * sx + 1) / hw[1] - 1
        gy = (2 * sy + 1) / hw[0] - 1
        grid = torch.stack((gx[:, :, None, :].expand(b, m, self.out_h, self.out_w),
                            gy[:, :, :, None].expand(b, m, self.out_h, self.out_w)), dim=-1)
        crops = F.grid_sample(frames, grid.reshape(b, m * self.out_h, self.out_w, 2),
                              mode="bilinear", padding_mode="zeros", align_corners=False)
        crops = crops.reshape(b, 3, m, self.out_h, self.out_w).transpose(1, 2)
        return crops.reshape(b * m, 3, self.out_h, self.out_w), offset, scale


class PoseOnCrops(nn.Module):
    """normalized crops (N, 3, h, w) -> keypoints (N, K, 3) in crop pixels (model + predictor).

    Args:
        pad_divisors: (height, width) DeepLabCut's ``auto_padding`` (reflect, bottom/right).
    """

    def __init__(self, model: PoseModel, head: str = "bodypart",
                 pad_divisors: tuple[int, int] = (1, 1)):
        super().__init__()
        self.model, self.head = model, head
        self.stride = model.get_stride(head)
        self.pad_divisors = pad_divisors

    def pad(self, crops: torch.Tensor) -> torch.Tensor:
        h, w = crops.shape[-2:]
        pad_h = -int(h) % self.pad_divisors[0]
        pad_w = -int(w) % self.pad_divisors[1]
        if pad_h or pad_w:  # crop sizes are constants, so this is decided at export time
            crops = F.pad(crops, (0, pad_w, 0, pad_h), mode="reflect")
        return crops

    def decode(self, head_outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        poses = self.model.heads[self.head].predictor(self.stride, head_outputs)["poses"]
        return poses[:, 0].to(torch.float32)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.decode(self.model(self.pad(crops))[self.head])


class TopDownPose(nn.Module):
    """images (B, H, W, 3) uint8 + boxes (B, M, 4) -> keypoints (B, M, K, 3) frame pixels."""

    def __init__(self, model: PoseModel, crop_w: int, crop_h: int, margin: float,
                 pad_divisors: tuple[int, int] = (1, 1)):
        super().__init__()
        self.normalize = NormalizeFrames()
        self.crop = TopDownCrop(crop_w, crop_h, margin)
        self.pose = PoseOnCrops(model, pad_divisors=pad_divisors)

    def forward(self, images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        # Cast before permuting (TensorRT), crop raw pixels (zero padding = black pixels, as
        # DeepLabCut pads the uint8 image), then normalize the small crops.
        frames = images.to(torch.float32).permute(0, 3, 1, 2)
        crops, offset, scale = self.crop(frames, boxes.to(torch.float32))
        crops = (crops - self.normalize.mean) * self.normalize.scale
        kp = self.pose(crops)  # (B*M, K, 3)
        b, m = boxes.shape[0], boxes.shape[1]
        kp = kp.reshape(b, m, kp.shape[1], 3)
        xy = kp[..., :2] * scale[:, :, None, :] + offset[:, :, None, :]
        return torch.cat((xy, kp[..., 2:]), dim=-1)


# -- the eager reference: DeepLabCut's CPU crop, then the PyTorch model ------------------------

def deeplabcut_crop(image: np.ndarray, box: np.ndarray, out_w: int, out_h: int, margin: float
                    ) -> tuple[np.ndarray, tuple[float, float], tuple[float, float]]:
    """DeepLabCut 3's ``top_down_crop`` on one (H, W, 3) image and one x1y1x2y2 box.

    Differs from DeepLabCut in one way only: the resize runs on float32 pixels (DeepLabCut
    resizes uint8, rounding each crop pixel to an integer), so the reference measures the
    graph rather than uint8 rounding.

    Returns:
        crop (out_h, out_w, 3) float32, (offset x, y), (scale x, y).
    """
    x, y = float(box[0]), float(box[1])
    w, h = float(box[2]) - x, float(box[3]) - y
    cx, cy = x + w / 2, y + h / 2
    w, h = w + 2 * margin, h + 2 * margin
    if w / h > out_w / out_h:
        h = w / (out_w / out_h)
    elif w / h < out_w / out_h:
        w = h * (out_w / out_h)
    x1, y1 = int(round(cx - w / 2)), int(round(cy - h / 2))
    x2, y2 = int(round(cx + w / 2)), int(round(cy + h / 2))
    crop_w, crop_h = max(x2 - x1, 1), max(y2 - y1, 1)
    img_h, img_w = image.shape[:2]
    window = np.zeros((crop_h, crop_w, 3), np.float32)
    sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, img_w), min(y2, img_h)
    if sx2 > sx1 and sy2 > sy1:
        window[sy1 - y1:sy2 - y1, sx1 - x1:sx2 - x1] = image[sy1:sy2, sx1:sx2]
    crop = cv2.resize(window, (out_w, out_h), interpolation=cv2.INTER_LINEAR)
    return crop, (float(x1), float(y1)), (crop_w / out_w, crop_h / out_h)


@torch.no_grad()
def pose_on_crops(crops: list[np.ndarray], offsets: list, scales: list, run) -> np.ndarray:
    """DeepLabCut's normalisation of one frame's (h, w, 3) float crops, ``run`` (normalized
    crops (M, 3, h, w) -> keypoints (M, K, 3) in crop pixels), mapped back to frame pixels."""
    norm = NormalizeFrames()
    x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2)
    kp = run((x - norm.mean) * norm.scale).numpy()
    xy = kp[..., :2] * np.array(scales)[:, None] + np.array(offsets)[:, None]
    return np.concatenate((xy, kp[..., 2:]), axis=-1)


def eager_top_down(pose: PoseOnCrops, frames: np.ndarray, boxes: np.ndarray, crop_w: int,
                   crop_h: int, margin: float) -> np.ndarray:
    """Crop each box on the CPU the DeepLabCut way, run the PyTorch model, map back.

    Args:
        frames: (B, H, W, 3) uint8; boxes: (B, M, 4) x1y1x2y2.

    Returns:
        (B, M, K, 3) keypoints in frame pixels.
    """
    out = []
    for frame, frame_boxes in zip(frames, boxes):
        crops, offsets, scales = zip(*(deeplabcut_crop(frame, box, crop_w, crop_h, margin)
                                       for box in frame_boxes))
        out.append(pose_on_crops(list(crops), offsets, scales, pose))
    return np.stack(out).astype(np.float32)


def parity_boxes(frames: np.ndarray, m: int, seed: int = 0) -> np.ndarray:
    """Boxes for the pose parity check: inside, across the border, thin and wide ones."""
    rng = np.random.default_rng(seed)
    b, h, w = frames.shape[:3]
    boxes = np.empty((b, m, 4), np.float32)
    for i in range(b):
        for j in range(m):
            kind = (i * m + j) % 4
            bw, bh = rng.uniform(0.15, 0.5) * w, rng.uniform(0.15, 0.5) * h
            if kind == 1:    # across the top-left corner
                x1, y1 = -0.3 * bw, -0.2 * bh
            elif kind == 2:  # across the bottom-right corner, wide and flat
                bw, bh = 0.6 * w, 0.12 * h
                x1, y1 = w - 0.7 * bw, h - 0.5 * bh
            elif kind == 3:  # tall and thin
                bw, bh = 0.08 * w, 0.6 * h
                x1, y1 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            else:
                x1, y1 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            boxes[i, j] = (x1, y1, x1 + bw, y1 + bh)
    return boxes
