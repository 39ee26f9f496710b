"""Keypoint-aware image augmentation in numpy / cv2, built from DeepLabCut 3 config sections.

``build_transforms(cfg["data"]["train"])`` reads the same keys DeepLabCut 3 gives to
albumentations (resize, longest_max_size, hflip, affine, crop_sampling, hist_eq, motion_blur,
gaussian_noise, auto_padding, normalize_images, scale_to_unit_range) and applies them in the
same order. Keys we do not implement (covering, elastic_transform, grayscale,
random_bbox_transform, top_down_crop) raise when set, rather than train silently without them.

Coordinates are continuous pixel coordinates: pixel ``i`` covers ``[i, i + 1)``, so resizing by
``s`` maps ``x`` to ``x * s`` as albumentations does. A keypoint that leaves the image gets
visibility 0 (its x, y are kept, for debugging). Every random draw comes from the
``numpy.random.Generator`` passed in, so a seeded generator reproduces an augmentation exactly.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import cv2
import numpy as np

logger = logging.getLogger(__name__)

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

Keypoints = list[np.ndarray]  # arrays (..., 3): x, y, visibility; [0] is (N, K, 3)


def _transform_points(kps: Keypoints, matrix: np.ndarray) -> Keypoints:
    """Applies a 2x3 affine matrix (continuous coordinates) to the x, y of every array."""
    out = []
    for arr in kps:
        arr = arr.copy()
        xy = arr[..., :2].reshape(-1, 2)
        xy = xy @ matrix[:, :2].T + matrix[:, 2]
        arr[..., :2] = xy.reshape(arr[..., :2].shape)
        out.append(arr)
    return out


def _mark_outside(kps: Keypoints, width: int, height: int) -> Keypoints:
    for arr in kps:
        x, y = arr[..., 0], arr[..., 1]
        outside = (x < 0) | (y < 0) | (x >= width) | (y >= height) | ~np.isfinite(x + y)
        arr[..., 2] = np.where(outside, 0.0, arr[..., 2])
    return kps


def _pad(image: np.ndarray, kps: Keypoints, top: int, bottom: int, left: int,
         right: int) -> tuple[np.ndarray, Keypoints]:
    if top == bottom == left == right == 0:
        return image, kps
    image = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=0)
    shift = np.array([[1, 0, left], [0, 1, top]], dtype=np.float64)
    return image, _transform_points(kps, shift)


class Transform:
    """Base class: ``(image HxWx3, keypoints, rng) -> (image, keypoints)``."""

    def __call__(self, image: np.ndarray, kps: Keypoints,
                 rng: np.random.Generator) -> tuple[np.ndarray, Keypoints]:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class Compose(Transform):
    def __init__(self, transforms: Sequence[Transform]):
        self.transforms = list(transforms)

    def __call__(self, image, kps, rng):
        kps = [np.asarray(k, dtype=np.float32).copy() for k in kps]
        for t in self.transforms:
            image, kps = t(image, kps, rng)
        return image, kps

    def __len__(self) -> int:
        return len(self.transforms)


class Resize(Transform):
    """Resizes to (height, width); with ``keep_ratio`` scales to fit, then pads bottom/right.

    Padding at the bottom/right keeps the map from input to output a pure scale, which the
    exported graph can invert with one multiply.
    """

    def __init__(self, height: int, width: int, keep_ratio: bool = True):
        self.height, self.width, self.keep_ratio = int(height), int(width), bool(keep_ratio)

    def __call__(self, image, kps, rng):
        h, w = image.shape[:2]
        if self.keep_ratio:
            s = min(self.height / h, self.width / w)
            sx = sy = s
            new_w, new_h = max(1, round(w * s)), max(1, round(h * s))
        else:
            sx, sy = self.width / w, self.height / h
            new_w, new_h = self.width, self.height
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        kps = _transform_points(kps, np.array([[new_w / w, 0, 0], [0, new_h / h, 0]]))
        image, kps = _pad(image, kps, 0, self.height - new_h, 0, self.width - new_w)
        return image, _mark_outside(kps, image.shape[1], image.shape[0])


class LongestMaxSize(Transform):
    """Rescales so that the longest side equals ``max_size`` (up or down, as albumentations)."""

    def __init__(self, max_size: int):
        self.max_size = int(max_size)

    def __call__(self, image, kps, rng):
        h, w = image.shape[:2]
        s = self.max_size / max(h, w)
        new_w, new_h = max(1, round(w * s)), max(1, round(h * s))
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        return image, _transform_points(kps, np.array([[new_w / w, 0, 0], [0, new_h / h, 0]]))


class HFlip(Transform):
    """Horizontal flip that swaps left/right bodyparts (pairs of indices into the K axis)."""

    def __init__(self, symmetries: Sequence[Sequence[int]], p: float = 0.5):
        self.p = float(p)
        self.symmetries = [(int(a), int(b)) for a, b in symmetries]

    def __call__(self, image, kps, rng):
        if rng.random() >= self.p:
            return image, kps
        w = image.shape[1]
        image = np.ascontiguousarray(image[:, ::-1])
        kps = _transform_points(kps, np.array([[-1.0, 0, w], [0, 1.0, 0]]))
        main = kps[0]
        for a, b in self.symmetries:
            main[..., [a, b], :] = main[..., [b, a], :]
        return image, kps


class Affine(Transform):
    """Random rotation (degrees), scale and translation (pixels) about the image centre.

    Args:
        p: probability of applying it.
        rotation: max absolute angle in degrees.
        scaling: (low, high) scale factors.
        translation: max absolute shift in pixels.
    """

    def __init__(self, p: float = 0.5, rotation: float = 0.0,
                 scaling: Sequence[float] = (1.0, 1.0), translation: float = 0.0):
        self.p = float(p)
        self.rotation = float(rotation or 0.0)
        lo, hi = (scaling, scaling) if np.isscalar(scaling) else scaling
        self.scaling = (float(lo), float(hi))
        self.translation = float(translation or 0.0)

    def matrix(self, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
        """The 2x3 matrix in continuous coordinates for one random draw."""
        angle = rng.uniform(-self.rotation, self.rotation)
        scale = rng.uniform(*self.scaling)
        tx, ty = rng.uniform(-self.translation, self.translation, size=2)
        m = cv2.getRotationMatrix2D((width / 2.0, height / 2.0), angle, scale)
        m[:, 2] += (tx, ty)
        return m

    def __call__(self, image, kps, rng):
        if rng.random() >= self.p:
            return image, kps
        h, w = image.shape[:2]
        m = self.matrix(w, h, rng)
        # warpAffine works on pixel indices (centres at integers, ours at i + 0.5).
        m_idx = m.copy()
        m_idx[:, 2] = m[:, :2] @ np.array([0.5, 0.5]) + m[:, 2] - 0.5
        image = cv2.warpAffine(image, m_idx, (w, h), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        kps = _transform_points(kps, m)
        return image, _mark_outside(kps, w, h)


class CropSampling(Transform):
    """Pads to at least (height, width), then crops a (height, width) window.

    Args:
        width, height: crop size.
        max_shift: max offset of the window centre from the chosen keypoint, as a fraction of
            the crop size.
        method: how the centre is chosen: ``uniform`` (anywhere), ``keypoints`` (a random
            labelled keypoint), ``density`` (a keypoint, weighted by how many others lie near
            it), ``hybrid`` (one of the three at random, per image).
    """

    METHODS = ("uniform", "keypoints", "density", "hybrid")

    def __init__(self, width: int, height: int, max_shift: float = 0.1,
                 method: str = "uniform"):
        if method not in self.METHODS:
            raise ValueError(f"crop_sampling method {method!r}: expected one of {self.METHODS}")
        self.width, self.height = int(width), int(height)
        self.max_shift, self.method = float(max_shift), method

    def _center(self, w: int, h: int, kps: Keypoints,
                rng: np.random.Generator) -> tuple[float, float]:
        method = self.method
        if method == "hybrid":
            method = ("uniform", "keypoints", "density")[int(rng.integers(3))]
        pts = np.concatenate([k.reshape(-1, 3) for k in kps]) if kps else np.zeros((0, 3))
        pts = pts[(pts[:, 2] > 0) & np.isfinite(pts[:, :2]).all(1)]
        if method == "uniform" or len(pts) == 0:
            return rng.uniform(0, w), rng.uniform(0, h)
        if method == "keypoints":
            weights = np.ones(len(pts))
        else:
            # Density: keypoints with many neighbours within a quarter crop pull the crop there.
            radius = 0.25 * max(self.width, self.height)
            dist = np.linalg.norm(pts[:, None, :2] - pts[None, :, :2], axis=-1)
            weights = (dist < radius).sum(1).astype(np.float64)
        i = rng.choice(len(pts), p=weights / weights.sum())
        dx = rng.uniform(-self.max_shift, self.max_shift) * self.width
        dy = rng.uniform(-self.max_shift, self.max_shift) * self.height
        return float(pts[i, 0] + dx), float(pts[i, 1] + dy)

    def __call__(self, image, kps, rng):
        h, w = image.shape[:2]
        pad_w, pad_h = max(0, self.width - w), max(0, self.height - h)
        image, kps = _pad(image, kps, pad_h // 2, pad_h - pad_h // 2, pad_w // 2,
                          pad_w - pad_w // 2)
        h, w = image.shape[:2]
        cx, cy = self._center(w, h, kps, rng)
        left = int(np.clip(round(cx - self.width / 2), 0, w - self.width))
        top = int(np.clip(round(cy - self.height / 2), 0, h - self.height))
        image = np.ascontiguousarray(image[top:top + self.height, left:left + self.width])
        kps = _transform_points(kps, np.array([[1.0, 0, -left], [0, 1.0, -top]]))
        return image, _mark_outside(kps, self.width, self.height)


class HistEq(Transform):
    """Per-channel histogram equalization with probability p (albumentations' Equalize)."""

    def __init__(self, p: float = 0.5):
        self.p = float(p)

    def __call__(self, image, kps, rng):
        if rng.random() >= self.p:
            return image, kps
        img = image.astype(np.uint8)
        return np.stack([cv2.equalizeHist(img[..., c]) for c in range(img.shape[2])], -1), kps


class MotionBlur(Transform):
    """A random straight-line blur (kernel 3-7 px) with probability p."""

    def __init__(self, p: float = 0.5, blur_limit: tuple[int, int] = (3, 7)):
        self.p, self.blur_limit = float(p), tuple(blur_limit)

    def __call__(self, image, kps, rng):
        if rng.random() >= self.p:
            return image, kps
        sizes = list(range(self.blur_limit[0] | 1, self.blur_limit[1] + 1, 2))
        k = sizes[int(rng.integers(len(sizes)))]
        angle = rng.uniform(0, math.pi)
        kernel = np.zeros((k, k), dtype=np.float32)
        c, r = (k - 1) / 2, (k - 1) / 2
        p0 = (round(c - r * math.cos(angle)), round(c - r * math.sin(angle)))
        p1 = (round(c + r * math.cos(angle)), round(c + r * math.sin(angle)))
        cv2.line(kernel, p0, p1, 1.0, thickness=1)
        kernel /= kernel.sum()
        return cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT), kps


class GaussianNoise(Transform):
    """Additive per-pixel, per-channel noise; variance drawn in [0, std**2] (pixel units)."""

    def __init__(self, std: float, p: float = 0.5):
        self.std, self.p = float(std), float(p)

    def __call__(self, image, kps, rng):
        if rng.random() >= self.p:
            return image, kps
        sigma = math.sqrt(rng.uniform(0, self.std ** 2))
        noisy = image.astype(np.float32) + rng.normal(0, sigma, image.shape).astype(np.float32)
        if image.dtype == np.uint8:
            return np.clip(np.rint(noisy), 0, 255).astype(np.uint8), kps
        return noisy, kps


class AutoPadding(Transform):
    """Pads bottom/right so that H and W are multiples of the divisors (HRNet needs 32)."""

    def __init__(self, pad_height_divisor: int = 1, pad_width_divisor: int = 1):
        self.hdiv, self.wdiv = int(pad_height_divisor or 1), int(pad_width_divisor or 1)

    def __call__(self, image, kps, rng):
        h, w = image.shape[:2]
        return _pad(image, kps, 0, (-h) % self.hdiv, 0, (-w) % self.wdiv)


class Normalize(Transform):
    """(x / 255 - ImageNet mean) / ImageNet std, RGB, as float32."""

    def __call__(self, image, kps, rng):
        return ((image.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD), kps


class ScaleToUnitRange(Transform):
    def __call__(self, image, kps, rng):
        return image.astype(np.float32) / 255.0, kps


_UNSUPPORTED = ("covering", "elastic_transform", "grayscale", "random_bbox_transform",
                "top_down_crop")


def _enabled(value: Any) -> bool:
    return value not in (None, False, 0, {}, [])


def _symmetries(spec: Any, bodyparts: Sequence[str] | None) -> list[tuple[int, int]]:
    pairs = []
    for a, b in spec or []:
        if isinstance(a, str) or isinstance(b, str):
            if bodyparts is None:
                raise ValueError("hflip symmetries name bodyparts but no bodyparts were given")
            try:
                a, b = list(bodyparts).index(a), list(bodyparts).index(b)
            except ValueError:
                raise ValueError(f"hflip symmetry ({a}, {b}) names an unknown bodypart") from None
        pairs.append((int(a), int(b)))
    return pairs


def build_transforms(aug: dict | None, bodyparts: Sequence[str] | None = None) -> Compose:
    """Builds the pipeline of one ``data.train`` / ``data.inference`` config section.

    Args:
        aug: the section (DeepLabCut keys; ``None``/``False`` values mean off).
        bodyparts: bodypart names, to resolve hflip symmetries given by name.
    """
    aug = dict(aug or {})
    for key in _UNSUPPORTED:
        if _enabled(aug.get(key)):
            raise ValueError(f"augmentation {key!r} is not supported by dlc_train; "
                             "set it to null in the pytorch_config.yaml")
    ts: list[Transform] = []
    if _enabled(resize := aug.get("resize")):
        ts.append(Resize(resize["height"], resize["width"], resize.get("keep_ratio", True)))
    if _enabled(lms := aug.get("longest_max_size")):
        ts.append(LongestMaxSize(lms))
    if _enabled(hflip := aug.get("hflip")):
        spec = hflip if isinstance(hflip, dict) else {}
        pairs = _symmetries(spec.get("symmetries"), bodyparts)
        if pairs:
            ts.append(HFlip(pairs, p=spec.get("p", 0.5)))
        else:
            # A plain flip would swap what "left" means for every left/right bodypart pair and
            # teach the model the wrong labels; without declared pairs we cannot fix that up.
            logger.warning("hflip ignored: it needs 'symmetries' (pairs of bodyparts)")
    if _enabled(affine := aug.get("affine")):
        ts.append(Affine(p=affine.get("p", 0.5), rotation=affine.get("rotation", 0),
                         scaling=affine.get("scaling", (1.0, 1.0)),
                         translation=affine.get("translation", 0)))
    if _enabled(crop := aug.get("crop_sampling")):
        ts.append(CropSampling(crop["width"], crop["height"], crop.get("max_shift", 0.1),
                               crop.get("method", "uniform")))
    if _enabled(aug.get("hist_eq")):
        ts.append(HistEq(p=0.5))
    if _enabled(aug.get("motion_blur")):
        ts.append(MotionBlur(p=0.5))
    if _enabled(noise := aug.get("gaussian_noise")):
        # ``true`` means albumentations' default std of ~sqrt(50) pixel units.
        ts.append(GaussianNoise(math.sqrt(50.0) if noise is True else float(noise), p=0.5))
    if _enabled(pad := aug.get("auto_padding")):
        ts.append(AutoPadding(pad.get("pad_height_divisor", 1), pad.get("pad_width_divisor", 1)))
    if _enabled(aug.get("normalize_images")):
        ts.append(Normalize())
    elif _enabled(aug.get("scale_to_unit_range")):
        ts.append(ScaleToUnitRange())
    return Compose(ts)
