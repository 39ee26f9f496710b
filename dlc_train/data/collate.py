"""The ``collate`` key of a ``data.train`` section: batches resized to one random size, as
DeepLabCut 3's ``ResizeFromDataSizeCollate`` / ``ResizeFromListCollate`` (its detectors' default:
scale augmentation, ``ResizeFromDataSizeCollate`` with scales 0.4-1.0).

Each batch gets one target size (from the first image's size and a random scale, or from a
list); each image is resized keeping its aspect ratio so that it covers the target (its long side
at most ``max_size``), then a random window of the target size is cut from it (up to
``max_shift`` pixels of zero border). Keypoints, boxes and CTD conditions follow; keypoints that
leave the window get visibility 0, boxes are clipped to it (a box left empty becomes a zero row).

Ours: the draws come from a generator seeded by ``seed`` (DeepLabCut draws the window from
numpy's global RNG).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from dlc_train.data.dataset import collate

KEYPOINT_KEYS = ("keypoints", "keypoints_unique", "cond_keypoints")


class ResizeCollate:
    """Base: subclasses pick the batch's (height, width) in ``target_size``.

    Args:
        max_shift: largest zero border (pixels) the random window may show.
        max_size: largest side of a resized image.
        seed: seeds the size and window draws.
    """

    def __init__(self, max_shift: int = 10, max_size: int = 2048, seed: int = 0):
        self.max_shift, self.max_size = int(max_shift), int(max_size)
        self.rng = np.random.default_rng(seed)

    def target_size(self, batch: list[dict[str, Any]]) -> tuple[int, int]:
        raise NotImplementedError

    def __call__(self, batch: list[dict[str, Any]]) -> dict[str, Any]:
        size = self.target_size(batch)
        return collate([self.resize_item(item, size) for item in batch])

    def resize_item(self, item: dict[str, Any], size: tuple[int, int]) -> dict[str, Any]:
        """One item resized to cover ``size`` (height, width) and cut to it."""
        tgt_h, tgt_w = size
        _, oh, ow = item["image"].shape
        scale = max(tgt_h / oh, tgt_w / ow)  # cover the target ...
        scale = min(scale, self.max_size / max(oh, ow))  # ... unless the long side is too long
        h, w = max(1, int(oh * scale)), max(1, int(ow * scale))
        image = F.interpolate(item["image"][None], size=(h, w), mode="bilinear",
                              align_corners=False)[0]
        x0 = self._offset(w, tgt_w)
        y0 = self._offset(h, tgt_h)
        out = image.new_zeros((image.shape[0], tgt_h, tgt_w))
        sx, sy = max(x0, 0), max(y0, 0)
        ex, ey = min(x0 + tgt_w, w), min(y0 + tgt_h, h)
        if ex > sx and ey > sy:
            out[:, sy - y0:ey - y0, sx - x0:ex - x0] = image[:, sy:ey, sx:ex]
        factor = np.array([w / ow, h / oh])
        annotations = dict(item["annotations"])
        for key in KEYPOINT_KEYS:
            if key in annotations:
                annotations[key] = _move_keypoints(annotations[key], factor, (x0, y0), size)
        if "boxes" in annotations:
            boxes = _move_boxes(annotations["boxes"], factor, (x0, y0), size)
            annotations["boxes"] = boxes
            if "area" in annotations:
                annotations["area"] = boxes[:, 2] * boxes[:, 3]
        return {**item, "image": out, "annotations": annotations}

    def _offset(self, resized: int, target: int) -> int:
        """The window's start: anywhere the image covers it, plus up to max_shift of border
        (DeepLabCut's bounds: at most half the window outside the image)."""
        extra = max(0, resized - target)
        low = max(-(target // 2), -max(0, target - resized) - self.max_shift)
        high = min(self.max_shift + extra, extra + min(resized, target) // 2)
        return int(self.rng.integers(low, max(high, low + 1)))


class ResizeFromDataSizeCollate(ResizeCollate):
    """Target: the first image's size times a scale drawn in [min_scale, max_scale], its short
    side kept in [min_short_side, max_short_side], its aspect ratio at most ``max_ratio``, each
    side rounded up to ``multiple_of``; ``to_square``: a square of the short side."""

    def __init__(self, min_scale: float, max_scale: float, min_short_side: int = 128,
                 max_short_side: int = 1152, max_ratio: float = 2.0,
                 multiple_of: int | None = None, to_square: bool = False, **kwargs: Any):
        super().__init__(**kwargs)
        self.min_scale, self.max_scale = float(min_scale), float(max_scale)
        self.min_short_side, self.max_short_side = int(min_short_side), int(max_short_side)
        self.max_ratio, self.multiple_of = float(max_ratio), multiple_of
        self.to_square = bool(to_square)

    def target_size(self, batch: list[dict[str, Any]]) -> tuple[int, int]:
        h, w = batch[0]["image"].shape[1:]
        scale = self.rng.uniform(self.min_scale, self.max_scale)
        short = int(round(min(self.max_short_side,
                              max(self.min_short_side, scale * min(h, w)))))
        if self.to_square:
            return self._multiple(short), self._multiple(short)
        long = int(min(max(h, w) / min(h, w), self.max_ratio) * short)
        th, tw = (short, long) if h < w else (long, short)
        return self._multiple(th), self._multiple(tw)

    def _multiple(self, value: int) -> int:
        of = int(self.multiple_of or 1)
        return of * ((value + of - 1) // of)


class ResizeFromListCollate(ResizeCollate):
    """Target: drawn from ``scales``, sizes (squares) or (height, width) pairs."""

    def __init__(self, scales: Sequence[int | Sequence[int]], **kwargs: Any):
        super().__init__(**kwargs)
        self.scales = [(int(s), int(s)) if np.ndim(s) == 0 else (int(s[0]), int(s[1]))
                       for s in scales]

    def target_size(self, batch: list[dict[str, Any]]) -> tuple[int, int]:
        return self.scales[int(self.rng.integers(len(self.scales)))]


COLLATES = {"ResizeFromDataSizeCollate": ResizeFromDataSizeCollate,
            "ResizeFromListCollate": ResizeFromListCollate}


def build_collate(spec: dict | None, seed: int = 0) -> ResizeCollate | None:
    """The collate function of a ``data.train.collate`` entry (None: plain padding collate).

    Raises:
        ConfigError: an unknown type or a bad option (one line).
    """
    from dlc_train.config import ConfigError

    if not spec:
        return None
    options = dict(spec)
    kind = options.pop("type", None)
    if kind not in COLLATES:
        raise ConfigError(f"data.train.collate type {kind!r} is not known; known: "
                          f"{', '.join(COLLATES)}")
    options.setdefault("seed", seed)
    try:
        return COLLATES[kind](**options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"data.train.collate {kind}: {err}") from None


def _move_keypoints(kps: torch.Tensor, factor: np.ndarray, offset: tuple[int, int],
                    size: tuple[int, int]) -> torch.Tensor:
    out = kps.clone()
    out[..., 0] = kps[..., 0] * float(factor[0]) - offset[0]
    out[..., 1] = kps[..., 1] * float(factor[1]) - offset[1]
    inside = (out[..., 0] >= 0) & (out[..., 1] >= 0) & (out[..., 0] < size[1]) \
        & (out[..., 1] < size[0])
    out[..., 2] = torch.where(inside, out[..., 2], torch.zeros_like(out[..., 2]))
    return out


def _move_boxes(boxes: torch.Tensor, factor: np.ndarray, offset: tuple[int, int],
                size: tuple[int, int]) -> torch.Tensor:
    """x, y, w, h boxes into the window, clipped to it; zero rows stay zero."""
    valid = (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
    x1 = (boxes[:, 0] * float(factor[0]) - offset[0]).clamp(0, size[1])
    y1 = (boxes[:, 1] * float(factor[1]) - offset[1]).clamp(0, size[0])
    x2 = ((boxes[:, 0] + boxes[:, 2]) * float(factor[0]) - offset[0]).clamp(0, size[1])
    y2 = ((boxes[:, 1] + boxes[:, 3]) * float(factor[1]) - offset[1]).clamp(0, size[0])
    out = torch.stack((x1, y1, x2 - x1, y2 - y1), dim=1)
    return torch.where((valid & (x2 > x1) & (y2 > y1))[:, None], out, torch.zeros_like(out))
