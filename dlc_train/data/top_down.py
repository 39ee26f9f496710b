"""Top-down training data: one crop per labeled individual, as DeepLabCut 3's ``PoseDataset``
does for ``Task.TOP_DOWN`` and ``Task.COND_TOP_DOWN``.

Per item (an individual of an image):

1. its box is made from its labeled keypoints (``bbox_from_keypoints``, ``data.bbox_margin``
   pixels on each side, clipped to the image), as DeepLabCut's loaders make ground-truth boxes;
2. the image, the keypoints and the box go through the augmentation pipeline (``data.train``:
   ``random_bbox_transform`` jitters the box, affine moves all three);
3. the box (whole pixels, as DeepLabCut truncates it) is cropped with ``top_down_crop``
   (``data.<mode>.top_down_crop``: width, height, margin, crop_with_context) and the keypoints
   move into crop pixels; those that leave the crop lose their visibility;
4. the crop is normalized.

Where we differ from DeepLabCut, on purpose: normalization runs after the crop, so the padding
of a crop that crosses the image border is black, as at inference (DeepLabCut normalizes first
and pads with the mean colour in training, black at inference).

Conditional top-down (CTD) items also carry ``cond_keypoints``: condition keypoints generated
from the ground truth (``GenerativeSampler``, ``data.gen_sampling``) around which the box is
made (``data.bbox_margin``), in crop pixels, as DeepLabCut trains its CTD models.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import cv2
import numpy as np
import torch

from dlc_train.data.dataset import SeededDataset, read_image
from dlc_train.data.transforms import Augmentation


@dataclass(frozen=True)
class CropSettings:
    """A ``top_down_crop`` section: output (width, height), margin added around each box (px),
    and whether the crop widens the box to the output's aspect ratio with image context
    (DeepLabCut's default) or zero-pads it (CTD's default)."""

    width: int = 256
    height: int = 256
    margin: int = 0
    with_context: bool = True

    @classmethod
    def from_config(cls, section: dict | None, with_context_default: bool = True
                    ) -> "CropSettings":
        from dlc_train.config import ConfigError

        crop = dict(section or {})
        unknown = set(crop) - {"width", "height", "margin", "crop_with_context"}
        if unknown:
            raise ConfigError(f"top_down_crop has no option {sorted(unknown)[0]!r}; its options: "
                              "width, height, margin, crop_with_context")
        try:
            out = cls(int(crop.get("width") or 256), int(crop.get("height") or 256),
                      int(crop.get("margin") or 0),
                      bool(crop.get("crop_with_context", with_context_default)))
        except (TypeError, ValueError):
            raise ConfigError(f"top_down_crop {crop}: width, height and margin must be whole "
                              "numbers") from None
        if out.width < 8 or out.height < 8:
            raise ConfigError(f"top_down_crop {out.width}x{out.height} is too small (min 8x8)")
        return out


def bbox_from_keypoints(keypoints: np.ndarray, image_h: int, image_w: int,
                        margin: float) -> np.ndarray:
    """Boxes spanning the labeled keypoints (visibility > 0) plus ``margin``, clipped to the
    image, as DeepLabCut's ``bbox_from_keypoints``.

    Args:
        keypoints: (..., K, 3) x, y, visibility.

    Returns:
        (..., 4) x, y, w, h; all zero where no keypoint is labeled.
    """
    kps = np.asarray(keypoints, dtype=np.float64)
    labeled = kps[..., 2] > 0
    any_labeled = labeled.any(axis=-1)
    x = np.where(labeled, kps[..., 0], np.nan)
    y = np.where(labeled, kps[..., 1], np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: unlabeled individuals
        lo = np.stack((np.nanmin(x, axis=-1), np.nanmin(y, axis=-1)), axis=-1) - margin
        hi = np.stack((np.nanmax(x, axis=-1), np.nanmax(y, axis=-1)), axis=-1) + margin
    limit = np.array([image_w, image_h], dtype=np.float64)
    lo = np.clip(np.nan_to_num(lo), 0, limit)
    hi = np.clip(np.nan_to_num(hi), 0, limit)
    boxes = np.concatenate((lo, hi - lo), axis=-1)
    boxes[~any_labeled] = 0.0
    return boxes


def top_down_crop(image: np.ndarray, box: Sequence[float], size: tuple[int, int],
                  margin: float = 0, with_context: bool = True
                  ) -> tuple[np.ndarray, tuple[float, float], tuple[float, float]]:
    """DeepLabCut 3's ``top_down_crop``: the box (x, y, w, h) plus ``margin``, around its centre,
    to an output of ``size`` (width, height).

    With context the box grows to the output's aspect ratio (more image around it); without,
    only the box's pixels are kept and the canvas is zero-padded (DeepLabCut's integer padding
    formula, exact for square crops; the export's crop graph reproduces it). Corners are
    rounded to whole pixels, the part outside the image is zero, the canvas is resized with
    cv2's bilinear filter.

    Returns:
        crop (out_h, out_w, C), (offset x, y), (scale x, y) with
        ``x_crop = (x - offset) / scale`` in continuous pixel coordinates.
    """
    img_h, img_w = image.shape[:2]
    out_w, out_h = int(size[0]), int(size[1])
    x, y, w, h = (float(v) for v in box)
    cx, cy = x + w / 2, y + h / 2
    w, h = w + 2 * margin, h + 2 * margin
    ratio = out_w / out_h
    if with_context:  # widen the short side to the output's ratio
        w, h = max(w, h * ratio), max(h, w / ratio)
    x1, y1 = int(round(cx - w / 2)), int(round(cy - h / 2))
    x2, y2 = int(round(cx + w / 2)), int(round(cy + h / 2))
    pad_l, pad_t = max(0, -x1), max(0, -y1)
    pad_r, pad_b = max(0, x2 - img_w), max(0, y2 - img_h)
    x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, img_w), min(y2, img_h)
    cw, ch = max(x2 - x1, 0), max(y2 - y1, 0)
    if not with_context and cw > 0 and ch > 0:
        rows = int(cw - ch * ratio) // 2 if cw / ch > ratio else 0
        cols = int(ch - cw / ratio) // 2 if cw / ch < ratio else 0
        pad_t, pad_b, pad_l, pad_r = pad_t + rows, pad_b + rows, pad_l + cols, pad_r + cols
    canvas_w, canvas_h = max(cw + pad_l + pad_r, 1), max(ch + pad_t + pad_b, 1)
    canvas = np.zeros((canvas_h, canvas_w) + image.shape[2:], dtype=image.dtype)
    if cw > 0 and ch > 0:
        canvas[pad_t:pad_t + ch, pad_l:pad_l + cw] = image[y1:y2, x1:x2]
    crop = cv2.resize(canvas, (out_w, out_h), interpolation=cv2.INTER_LINEAR)
    if crop.ndim < image.ndim:  # cv2 drops a single channel axis
        crop = crop[..., None]
    return crop, (float(x1 - pad_l), float(y1 - pad_t)), (canvas_w / out_w, canvas_h / out_h)


class TopDownDataset(SeededDataset):
    """Crops of single individuals for top-down pose models (see the module docstring).

    Args:
        samples: [(image path, keypoints (N, K, 3))]; visibility <= 0 marks unlabeled.
        transform: augmentation before the crop (None: none); it should not normalize (see
            ``split_normalization``).
        bodyparts: the K bodypart names.
        crop: the crop settings.
        bbox_margin: pixels added around the keypoints to make each box.
        after_crop: run on each crop (normalization); None: raw pixel values.
        seed: item ``i`` of epoch ``e`` draws with ``(seed, e, i)`` (see PoseDataset).
        sampler: CTD only: makes condition keypoints from the ground truth (GenerativeSampler).
    """

    def __init__(self, samples: Sequence[tuple[str, np.ndarray]], transform: Augmentation | None,
                 bodyparts: Sequence[str], crop: CropSettings, bbox_margin: float = 20,
                 after_crop: Augmentation | None = None, seed: int = 0, sampler: Any = None):
        super().__init__(samples, seed)
        self.transform, self.after_crop = transform, after_crop
        self.bodyparts = list(bodyparts)
        self.crop, self.bbox_margin = crop, float(bbox_margin)
        self.sampler = sampler
        self.items: list[tuple[int, int]] = []
        for i, (path, kps) in enumerate(self.samples):
            if kps.ndim != 3 or kps.shape[1:] != (len(self.bodyparts), 3):
                raise ValueError(f"keypoints of {path} have shape {kps.shape}, expected "
                                 f"(N, {len(self.bodyparts)}, 3)")
            # DeepLabCut drops individuals without a labeled keypoint (no box to crop).
            self.items += [(i, n) for n in range(len(kps)) if (kps[n, :, 2] > 0).any()]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        i, n = self.items[index]
        path, all_kps = self.samples[i]
        image = read_image(path)
        h, w = image.shape[:2]
        boxes = bbox_from_keypoints(all_kps, h, w, self.bbox_margin)
        rows = [n]
        if self.sampler is not None:  # CTD: the individuals whose boxes touch this one's
            rows += [m for m in range(len(all_kps)) if m != n and _overlap(boxes[n], boxes[m])]
        kps, box_in = all_kps[rows].copy(), boxes[rows]
        rng = self.rng(index)
        if self.transform is not None:
            out = self.transform.apply(image, [kps], rng, bboxes=box_in)
            image, kps, box_in = out.image, out.keypoints[0], out.bboxes
        box = np.floor(box_in[0]).astype(int)  # DeepLabCut crops the box in whole pixels
        target = kps[:1].copy()
        conditions = None
        if self.sampler is not None:
            conditions = self.sampler(target[0], kps[1:], float(box[2] * box[3]),
                                      image.shape[:2], rng)
            if (conditions[:, 2] > 0).any():  # the crop follows the conditions, as at inference
                box = np.floor(bbox_from_keypoints(conditions, *image.shape[:2],
                                                   self.bbox_margin)).astype(int)
        crop, offsets, scales = self._crop(image, box, target, conditions)
        if self.after_crop is not None:
            crop, _ = self.after_crop(crop, [], rng)
        annotations = {"keypoints": torch.from_numpy(np.ascontiguousarray(target)),
                       "individual_ids": torch.tensor([n])}
        if conditions is not None:
            annotations["cond_keypoints"] = torch.from_numpy(conditions.astype(np.float32))
        image_t = np.ascontiguousarray(np.asarray(crop, np.float32).transpose(2, 0, 1))
        return {"image": torch.from_numpy(image_t), "annotations": annotations, "path": path,
                "offsets": torch.tensor(offsets), "scales": torch.tensor(scales)}

    def _crop(self, image: np.ndarray, box: np.ndarray, target: np.ndarray,
              conditions: np.ndarray | None) -> tuple[np.ndarray, tuple, tuple]:
        """Crops ``image`` around ``box``; moves ``target`` and ``conditions`` (in place) into
        crop pixels, with visibility 0 where they leave the crop."""
        c = self.crop
        if box[2] <= 0 or box[3] <= 0:  # augmented out of the image: a blank crop, no labels
            target[..., 2] = 0.0
            if conditions is not None:
                conditions[:] = 0.0
            blank = np.zeros((c.height, c.width) + image.shape[2:], image.dtype)
            return blank, (0.0, 0.0), (1.0, 1.0)
        crop, offsets, scales = top_down_crop(image, box, (c.width, c.height), c.margin,
                                              c.with_context)
        for kps in (target, conditions):
            if kps is None:
                continue
            kps[..., 0] = (kps[..., 0] - offsets[0]) / scales[0]
            kps[..., 1] = (kps[..., 1] - offsets[1]) / scales[1]
            inside = ((kps[..., 0] >= 0) & (kps[..., 1] >= 0) & (kps[..., 0] < c.width)
                      & (kps[..., 1] < c.height))
            kps[..., 2] = np.where(inside, kps[..., 2], 0.0)
        return crop, offsets, scales


def _overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two x, y, w, h boxes share area (DeepLabCut's CTD "near" individuals)."""
    return (min(a[0] + a[2], b[0] + b[2]) > max(a[0], b[0])
            and min(a[1] + a[3], b[1] + b[3]) > max(a[1], b[1]))


def split_normalization(section: dict | None) -> tuple[dict, dict]:
    """A ``data.train`` / ``data.inference`` section -> (its augmentations, run before the
    crop; its normalization, run on each crop)."""
    before = dict(section or {})
    after = {key: before.pop(key) for key in ("normalize_images", "scale_to_unit_range")
             if key in before}
    return before, after
