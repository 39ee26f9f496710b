"""The conditional top-down (CTD, "BUCTD") pose graph and its eager reference.

``CondTopDownPose``: ``images`` uint8 (B, H, W, 3) + ``conditions`` float32 (B, M, K, 3) (x, y
frame pixels, likelihood) -> ``keypoints`` (B, M, K, 3) in frame pixels.

Inside the graph, per individual, as DeepLabCut 3's conditional top-down preprocessor does: the
box is the span of the conditions with likelihood > 0, plus ``data.bbox_margin`` on each side,
clipped to the frame; the crop is DeepLabCut's ``top_down_crop`` of that box (``data.inference.
top_down_crop``: ``margin`` default 0, ``crop_with_context`` default false for CTD, i.e. only
the box's pixels, zero-padded to the crop's aspect ratio), bilinear resize in cv2's convention;
the conditions move into crop pixels (``(xy - offset) / scale``) and go to the model as
``cond_kpts``; keypoints come back as ``crop * scale + offset``. Which individuals are handed
over (and in which order) is decided on the host by the runtime (``dlc_runtime/pipelines/
ctd.py``), with DeepLabCut's rules.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dlc_export.config_view import PoseConfigView
from dlc_export.tasks.top_down_graph import PoseOnCrops, TopDownCrop, pose_on_crops
from dlc_export.wrappers import NormalizeFrames
from dlc_train.models.model import PoseModel


@dataclass(frozen=True)
class CtdCrop:
    """How a CTD config crops: ``data.bbox_margin`` around the conditions, then DeepLabCut's
    ``top_down_crop`` (width, height, its own ``margin``, ``crop_with_context``)."""

    width: int
    height: int
    bbox_margin: float
    crop_margin: float = 0.0
    with_context: bool = False


def ctd_crop_settings(config: PoseConfigView) -> CtdCrop:
    """The crop of a CTD config, with DeepLabCut's defaults for CTD inference."""
    crop = config.inference.crop
    return CtdCrop(width=crop.width, height=crop.height, bbox_margin=config.bbox_margin,
                   crop_margin=crop.margin, with_context=bool(crop.with_context))


# -- the graph ---------------------------------------------------------------------------------

def condition_boxes(conditions: torch.Tensor, frame_hw: torch.Tensor, margin: float
                    ) -> torch.Tensor:
    """DeepLabCut's ``bbox_from_keypoints``: (B, M, K, 3) -> x1, y1, x2, y2 (B, M, 4).

    Keypoints with likelihood > 0 span the box, ``margin`` is added on each side and the box is
    clipped to the frame. A slot without such a keypoint gets a unit box (kept finite; the host
    never hands such a slot over).
    """
    visible = conditions[..., 2] > 0
    x, y = conditions[..., 0], conditions[..., 1]
    big = torch.full_like(x, 1e9)
    x1 = torch.where(visible, x, big).amin(dim=-1)
    y1 = torch.where(visible, y, big).amin(dim=-1)
    x2 = torch.where(visible, x, -big).amax(dim=-1)
    y2 = torch.where(visible, y, -big).amax(dim=-1)
    any_visible = visible.any(dim=-1)
    zero, one = torch.zeros_like(x1), torch.ones_like(x1)
    x1 = torch.where(any_visible, x1 - margin, zero)
    y1 = torch.where(any_visible, y1 - margin, zero)
    x2 = torch.where(any_visible, x2 + margin, one)
    y2 = torch.where(any_visible, y2 + margin, one)
    h, w = frame_hw[0], frame_hw[1]
    x1, x2 = torch.minimum(x1.clamp(min=0.0), w), torch.minimum(x2.clamp(min=0.0), w)
    y1, y2 = torch.minimum(y1.clamp(min=0.0), h), torch.minimum(y2.clamp(min=0.0), h)
    return torch.stack((x1, y1, x2, y2), dim=-1)


class ContextFreeCrop(TopDownCrop):
    """DeepLabCut's ``top_down_crop`` with ``crop_with_context=False``, in the graph.

    frames (B, 3, H, W) float + boxes (B, M, 4) x1y1x2y2 -> crops (B*M, 3, out_h, out_w),
    offsets and scales (B, M, 2) with ``frame = crop * scale + offset``.

    DeepLabCut rounds the box (+ margin) to whole pixels, keeps only the part inside the frame,
    then zero-pads it to the output's aspect ratio (its integer padding formula, kept as it is:
    exact for square crops), and resizes that canvas (cv2 bilinear, half-pixel centres, border
    clamped). The canvas is a window of the frame where only the box's pixels are non-zero, so
    each output pixel is the bilinear mix of four frame pixels, each counted only when it lies
    in the box: four nearest-pixel ``grid_sample`` reads, weighted. (It shares
    :class:`TopDownCrop`'s output grid; only the window and the sampling differ.)
    """

    def __init__(self, out_w: int, out_h: int, margin: float = 0.0):
        super().__init__(out_w, out_h, margin)

    def windows(self, boxes: torch.Tensor, frame_hw: torch.Tensor):
        """(offset, size, content lo, content hi): canvas window and the box part of the frame
        it shows, all (B, M, 2) x, y in frame pixels."""
        w = boxes[..., 2] - boxes[..., 0]
        h = boxes[..., 3] - boxes[..., 1]
        cx, cy = boxes[..., 0] + w / 2, boxes[..., 1] + h / 2
        w, h = w + 2 * self.margin, h + 2 * self.margin
        x1, x2 = torch.round(cx - w / 2), torch.round(cx + w / 2)
        y1, y2 = torch.round(cy - h / 2), torch.round(cy + h / 2)
        fh, fw = frame_hw[0], frame_hw[1]
        pad_left, pad_top = F.relu(-x1), F.relu(-y1)
        pad_right, pad_bottom = F.relu(x2 - fw), F.relu(y2 - fh)
        x1, y1 = x1.clamp(min=0.0), y1.clamp(min=0.0)
        x2, y2 = torch.minimum(x2, fw), torch.minimum(y2, fh)
        cw, ch = (x2 - x1).clamp(min=1.0), (y2 - y1).clamp(min=1.0)  # finite on empty slots
        ratio = self.out_w / self.out_h
        # DeepLabCut: too wide -> pad top and bottom by int(w - h * r) // 2 each; too tall ->
        # pad left and right by int(h - w / r) // 2 each (only one of them is positive).
        pad_rows = torch.floor(torch.floor(F.relu(cw - ch * ratio)) / 2)
        pad_cols = torch.floor(torch.floor(F.relu(ch - cw / ratio)) / 2)
        pad_left, pad_right = pad_left + pad_cols, pad_right + pad_cols
        pad_top, pad_bottom = pad_top + pad_rows, pad_bottom + pad_rows
        offset = torch.stack((x1 - pad_left, y1 - pad_top), dim=-1)
        size = torch.stack((cw + pad_left + pad_right, ch + pad_top + pad_bottom), dim=-1)
        return offset, size, torch.stack((x1, y1), dim=-1), torch.stack((x2, y2), dim=-1)

    def _taps(self, j: torch.Tensor, scale: torch.Tensor, size: torch.Tensor,
              offset: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor):
        """One axis: the two frame pixels each output pixel reads and their weights (zero for
        pixels outside the box). j: (n,); the rest (B, M, 1) -> (B, M, n) each."""
        s = torch.minimum((j * scale - 0.5).clamp(min=0.0), size - 1)  # cv2 INTER_LINEAR
        i0 = torch.floor(s)
        i1 = torch.minimum(i0 + 1, size - 1)
        frac = s - i0
        p0, p1 = i0 + offset, i1 + offset
        w0 = (1 - frac) * ((p0 >= lo) & (p0 < hi)).to(s.dtype)
        w1 = frac * ((p1 >= lo) & (p1 < hi)).to(s.dtype)
        return p0, p1, w0, w1

    def forward(self, frames: torch.Tensor, boxes: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, m = boxes.shape[0], boxes.shape[1]
        hw = torch._shape_as_tensor(frames)[2:4].to(frames.dtype)
        offset, size, lo, hi = self.windows(boxes, hw)
        scale = size / size.new_tensor([self.out_w, self.out_h])
        x0, x1, wx0, wx1 = self._taps(self.jx, scale[..., :1], size[..., :1], offset[..., :1],
                                      lo[..., :1], hi[..., :1])
        y0, y1, wy0, wy1 = self._taps(self.jy, scale[..., 1:], size[..., 1:], offset[..., 1:],
                                      lo[..., 1:], hi[..., 1:])
        # Pixel centres in grid_sample's normalized coordinates (align_corners=False).
        gx = [(2 * x + 1) / hw[1] - 1 for x in (x0, x1)]
        gy = [(2 * y + 1) / hw[0] - 1 for y in (y0, y1)]
        shape = (b, m, self.out_h, self.out_w)
        grids, weights = [], []
        for gyi, wyi in zip(gy, (wy0, wy1)):
            for gxi, wxi in zip(gx, (wx0, wx1)):
                grids.append(torch.stack((gxi[:, :, None, :].expand(shape),
                                          gyi[:, :, :, None].expand(shape)), dim=-1))
                weights.append(wyi[:, :, :, None] * wxi[:, :, None, :])
        # The four taps of every crop in one nearest-pixel read: (B, 4*M*out_h, out_w, 2).
        grid = torch.stack(grids, dim=1).reshape(b, 4 * m * self.out_h, self.out_w, 2)
        taps = F.grid_sample(frames, grid, mode="nearest", padding_mode="zeros",
                             align_corners=False)
        taps = taps.reshape(b, 3, 4, m, self.out_h, self.out_w)
        weight = torch.stack(weights, dim=1)[:, None]  # (B, 1, 4, M, out_h, out_w)
        crops = (taps * weight).sum(dim=2).transpose(1, 2)  # (B, M, 3, out_h, out_w)
        return crops.reshape(b * m, 3, self.out_h, self.out_w), offset, scale


class CondPoseOnCrops(PoseOnCrops):
    """normalized crops (N, 3, h, w) + conditions (N, K, 3) in crop pixels -> keypoints
    (N, K, 3) in crop pixels (model with ``cond_kpts`` + predictor).

    Args:
        pad_divisors: (height, width) DeepLabCut's ``auto_padding`` (reflect, bottom/right).
    """

    def forward(self, crops: torch.Tensor, conditions: torch.Tensor) -> torch.Tensor:
        return self.decode(self.model(self.pad(crops), cond_kpts=conditions)[self.head])


class CondTopDownPose(nn.Module):
    """images (B, H, W, 3) uint8 + conditions (B, M, K, 3) frame pixels -> keypoints
    (B, M, K, 3) frame pixels."""

    def __init__(self, model: PoseModel, crop: CtdCrop, pad_divisors: tuple[int, int] = (1, 1)):
        super().__init__()
        self.settings = crop
        self.normalize = NormalizeFrames()
        self.crop = TopDownCrop(crop.width, crop.height, crop.crop_margin) if crop.with_context \
            else ContextFreeCrop(crop.width, crop.height, crop.crop_margin)
        self.pose = CondPoseOnCrops(model, pad_divisors=pad_divisors)
        # A constant K: traced from the input's shape it would leave the condition encoder's
        # blur kernels without a static shape, which the ONNX export cannot convert.
        self.num_keypoints = int(model.backbone.cond_enc.num_joints)

    def forward(self, images: torch.Tensor, conditions: torch.Tensor) -> torch.Tensor:
        # Cast before permuting (TensorRT), crop raw pixels (zero padding = black pixels, as
        # DeepLabCut pads the uint8 image), then normalize the small crops.
        frames = images.to(torch.float32).permute(0, 3, 1, 2)
        conditions = conditions.to(torch.float32)
        hw = torch._shape_as_tensor(frames)[2:4].to(torch.float32)
        boxes = condition_boxes(conditions, hw, self.settings.bbox_margin)
        crops, offset, scale = self.crop(frames, boxes)
        crops = (crops - self.normalize.mean) * self.normalize.scale
        b, m, k = conditions.shape[0], conditions.shape[1], self.num_keypoints
        local = (conditions[..., :2] - offset[:, :, None, :]) / scale[:, :, None, :]
        local = torch.cat((local, conditions[..., 2:3]), dim=-1).reshape(-1, k, 3)
        kp = self.pose(crops, local).reshape(b, m, k, 3)
        xy = kp[..., :2] * scale[:, :, None, :] + offset[:, :, None, :]
        return torch.cat((xy, kp[..., 2:]), dim=-1)


# -- the eager reference: DeepLabCut's CPU steps, then the PyTorch model ----------------------

def deeplabcut_condition_box(conditions: np.ndarray, image_h: int, image_w: int,
                             margin: float) -> np.ndarray:
    """DeepLabCut's ``bbox_from_keypoints`` for one individual: (K, 3) -> x, y, w, h."""
    pts = conditions[conditions[:, 2] > 0, :2]
    lo, hi = np.nanmin(pts, axis=0) - margin, np.nanmax(pts, axis=0) + margin
    x1, x2 = np.clip([lo[0], hi[0]], 0, image_w)
    y1, y2 = np.clip([lo[1], hi[1]], 0, image_h)
    return np.array([x1, y1, x2 - x1, y2 - y1])


def deeplabcut_ctd_crop(image: np.ndarray, box: np.ndarray, out_w: int, out_h: int,
                        margin: float = 0.0, with_context: bool = False
                        ) -> tuple[np.ndarray, tuple[float, float], tuple[float, float]]:
    """DeepLabCut 3's ``top_down_crop`` (``center_padding=False``) of an x, y, w, h box.

    Differs from DeepLabCut in one way only: the resize runs on float32 pixels (DeepLabCut
    resizes uint8), so the reference measures the graph rather than uint8 rounding.
    """
    img_h, img_w = image.shape[:2]
    x, y, w, h = (float(v) for v in box)
    cx, cy = x + w / 2, y + h / 2
    w, h = w + 2 * margin, h + 2 * margin
    ratio = out_w / out_h
    if with_context:
        if w / h > ratio:
            h = w / ratio
        elif w / h < ratio:
            w = h * ratio
    x1, y1 = round(cx - w / 2), round(cy - h / 2)
    x2, y2 = round(cx + w / 2), round(cy + h / 2)
    pad_left, pad_top = max(-x1, 0), max(-y1, 0)
    pad_right, pad_bottom = max(x2 - img_w, 0), max(y2 - img_h, 0)
    x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, img_w), min(y2, img_h)
    w, h = x2 - x1, y2 - y1
    if not with_context:
        if w / h > ratio:
            pad = int(w - h * ratio) // 2
            pad_top, pad_bottom = pad_top + pad, pad_bottom + pad
        elif w / h < ratio:
            pad = int(h - w / ratio) // 2
            pad_left, pad_right = pad_left + pad, pad_right + pad
    canvas = np.zeros((h + pad_top + pad_bottom, w + pad_left + pad_right, 3), np.float32)
    canvas[pad_top:pad_top + h, pad_left:pad_left + w] = image[y1:y2, x1:x2]
    crop = cv2.resize(canvas, (out_w, out_h), interpolation=cv2.INTER_LINEAR)
    return crop, (float(x1 - pad_left), float(y1 - pad_top)), \
        (canvas.shape[1] / out_w, canvas.shape[0] / out_h)


def eager_ctd(pose: CondPoseOnCrops, frames: np.ndarray, conditions: np.ndarray,
              crop: CtdCrop) -> np.ndarray:
    """DeepLabCut's CTD steps on the CPU for every slot: box from the conditions, crop,
    conditions into crop pixels, PyTorch model, map back.

    Args:
        frames: (B, H, W, 3) uint8; conditions: (B, M, K, 3) frame pixels, every slot with at
            least one keypoint of likelihood > 0.

    Returns:
        (B, M, K, 3) keypoints in frame pixels.
    """
    out = []
    for frame, frame_conditions in zip(frames, conditions):
        crops, offsets, scales = zip(*(deeplabcut_ctd_crop(
            frame, deeplabcut_condition_box(cond, frame.shape[0], frame.shape[1],
                                            crop.bbox_margin),
            crop.width, crop.height, crop.crop_margin, crop.with_context)
            for cond in frame_conditions))
        local = frame_conditions.astype(np.float64).copy()
        local[..., :2] = (local[..., :2] - np.array(offsets)[:, None]) / \
            np.array(scales)[:, None]
        local_t = torch.from_numpy(local.astype(np.float32))
        out.append(pose_on_crops(list(crops), offsets, scales, lambda x: pose(x, local_t)))
    return np.stack(out).astype(np.float32)


def parity_conditions(frames: np.ndarray, m: int, k: int, seed: int = 0) -> np.ndarray:
    """Conditions for the parity check: compact and spread animals, one across the frame's
    corner, a flat and a tall one, some keypoints hidden (likelihood 0)."""
    rng = np.random.default_rng(seed)
    b, h, w = frames.shape[:3]
    out = np.zeros((b, m, k, 3), np.float32)
    for i in range(b):
        for j in range(m):
            kind = (i * m + j) % 4
            span = rng.uniform(0.15, 0.45, 2) * (w, h)
            if kind == 1:    # across the top-left corner
                centre = -0.1 * span
            elif kind == 2:  # flat, near the bottom edge
                span = (0.5 * w, 0.08 * h)
                centre = (rng.uniform(0.3, 0.7) * w, 0.95 * h)
            elif kind == 3:  # tall and thin
                span = (0.06 * w, 0.5 * h)
                centre = (rng.uniform(0.2, 0.8) * w, 0.5 * h)
            else:
                centre = rng.uniform(0.3, 0.7, 2) * (w, h)
            xy = np.asarray(centre) + (rng.uniform(-0.5, 0.5, (k, 2)) * span)
            score = rng.uniform(0.2, 1.0, k)
            if k > 2:
                score[rng.integers(0, k)] = 0.0  # a hidden keypoint: no box, not drawn
            out[i, j, :, :2], out[i, j, :, 2] = xy, score
    return out
