"""The albumentations transforms DeepLabCut 3 adds or adjusts, for ``build_transforms``.

albumentations has most of what DeepLabCut augments with; these are the pieces it lacks or does
differently, each a small subclass of the albumentations transform it extends:

- ``SymmetricHFlip``: a horizontal flip that swaps left/right bodyparts of every individual.
- ``KeypointAwareCrop``: DeepLabCut's crop sampling (uniform / keypoints / density / hybrid).
- ``ElasticTransform``: DeepLabCut's parameters, and keypoints moved by inverting the field.
- ``CoarseDropout``: DeepLabCut's ``covering``: keypoints under a hole become unlabeled.
- ``Grayscale``: grayscale blended with the image (DeepLabCut's alpha in [0.5, 1]).
- ``GaussianNoise``: DeepLabCut's noise law (variance drawn uniformly in [0, std**2]).
- ``PadIfNeeded``: keypoints and boxes shift with the padding, whatever the border mode.
- ``RandomBBoxTransform``: jitters boxes only (top-down crops), as mmpose / DeepLabCut.

Coordinates are pixel indices, as DeepLabCut's labels are (its labeling GUIs, napari and
matplotlib, draw pixel ``i`` centred on ``i``) and as albumentations moves keypoints: the flip
maps ``x`` to ``W - 1 - x`` and the affine warp applies its matrix to indices
(cv2.warpAffine), both as in DeepLabCut's training. Resizing keeps albumentations' (and so
DeepLabCut's) ``x * s``, half a pixel times ``s - 1`` from the exact index mapping
``(x + 0.5) * s - 0.5``. Keypoints reach these transforms as rows ``x, y, ...``
(albumentations' internal layout: x and y first, other columns carried along); an unlabeled
keypoint has x = y = NaN.
"""
from __future__ import annotations

import math
import os
from typing import Any, Sequence

# albumentations asks PyPI for a newer version on import unless told not to: no network calls
# from a training run.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402

#: Data key through which ``Augmentation`` tells SymmetricHFlip how rows group into individuals:
#: ``(N, K)``, rows ``n * K + k`` for n < N, the remaining rows (unique bodyparts) after them.
LAYOUT_KEY = "keypoint_layout"


class SymmetricHFlip(A.HorizontalFlip):
    """Horizontal flip (x -> W - 1 - x) that swaps symmetric bodyparts of every individual.

    A flipped left ear is where a right ear would be: without the swap the model would learn
    left and right as one. Without a layout (a plain ``A.Compose`` call) all rows are taken as
    one individual.

    Args:
        symmetries: pairs of bodypart indices (into the K bodyparts), e.g. [(1, 2)].
        p: probability of flipping.
    """

    def __init__(self, symmetries: Sequence[Sequence[int]] = (), p: float = 0.5):
        super().__init__(p=p)
        self.symmetries = [(int(a), int(b)) for a, b in symmetries]

    def get_params_dependent_on_data(self, params: dict[str, Any],
                                     data: dict[str, Any]) -> dict[str, Any]:
        rows = len(data.get("keypoints", ()))
        n, k = data.get(LAYOUT_KEY) or (1, rows)
        order = np.arange(rows)
        for start in range(0, n * k, k):
            for a, b in self.symmetries:
                if start + max(a, b) < rows:
                    order[start + a], order[start + b] = start + b, start + a
        return {"keypoint_order": order}

    def apply_to_keypoints(self, keypoints: np.ndarray, keypoint_order: np.ndarray | None = None,
                           **params: Any) -> np.ndarray:
        out = np.array(keypoints[keypoint_order] if keypoint_order is not None else keypoints,
                       dtype=np.float32)
        out[:, 0] = (params["shape"][1] - 1) - out[:, 0]  # as albumentations flips
        if out.shape[1] > 3:  # albumentations' angle column
            out[:, 3] = np.pi - out[:, 3]
        return out

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("symmetries",)


class PadIfNeeded(A.PadIfNeeded):
    """PadIfNeeded whose keypoints and boxes only shift by the padding.

    With a reflecting border albumentations 2 adds mirrored copies of each keypoint; the mirrored
    animal is not labeled data (DeepLabCut, on albumentations 1.x, shifted the labels only).
    """

    def apply_to_keypoints(self, keypoints: np.ndarray, pad_top: int = 0, pad_bottom: int = 0,
                           pad_left: int = 0, pad_right: int = 0, **params: Any) -> np.ndarray:
        out = np.array(keypoints, dtype=np.float32)
        out[:, 0] += pad_left
        out[:, 1] += pad_top
        return out

    def apply_to_bboxes(self, bboxes: np.ndarray, pad_top: int = 0, pad_bottom: int = 0,
                        pad_left: int = 0, pad_right: int = 0, **params: Any) -> np.ndarray:
        # Boxes are normalized x_min, y_min, x_max, y_max inside albumentations.
        rows, cols = params["shape"][:2]
        out = np.array(bboxes, dtype=np.float64)
        out[:, [0, 2]] = (out[:, [0, 2]] * cols + pad_left) / (cols + pad_left + pad_right)
        out[:, [1, 3]] = (out[:, [1, 3]] * rows + pad_top) / (rows + pad_top + pad_bottom)
        return out


class KeypointAwareCrop(A.RandomCrop):
    """DeepLabCut's crop sampling: a (height, width) crop placed near labeled keypoints.

    The crop's relative position in the image (albumentations' ``h_start`` / ``w_start``) is the
    relative position of a chosen point, so that point always lies inside the crop. The point is
    a random image position (``uniform``), a random labeled keypoint (``keypoints``), or a
    keypoint drawn with weight 1 + its neighbours within 0.1 * min(H, W) (``density``), shifted
    by up to ``max_shift`` of the crop size; ``hybrid`` picks uniform or density per image, as
    DeepLabCut does. The image must already be at least the crop size (PadIfNeeded before it).

    Args:
        width, height: crop size.
        max_shift: largest shift of the chosen point, as a fraction of the crop size (clamped to
            [0, 0.4] so that the point stays in the crop).
        crop_sampling: "uniform", "keypoints", "density" or "hybrid".
    """

    METHODS = ("uniform", "keypoints", "density", "hybrid")

    def __init__(self, width: int, height: int, max_shift: float = 0.4,
                 crop_sampling: str = "hybrid"):
        if crop_sampling not in self.METHODS:
            raise ValueError(f"crop_sampling method {crop_sampling!r}: expected one of "
                             f"{', '.join(self.METHODS)}")
        super().__init__(height=int(height), width=int(width), p=1.0)
        self.max_shift = max(0.0, min(float(max_shift), 0.4))
        self.crop_sampling = crop_sampling

    def _relative_start(self, shape: tuple[int, int], keypoints: np.ndarray) -> np.ndarray:
        h, w = shape
        method = self.crop_sampling
        if method == "hybrid":
            method = ("uniform", "density")[int(self.py_random.random() < 0.5)]
        pts = np.asarray(keypoints, dtype=np.float64).reshape(-1, keypoints.shape[-1])[:, :2] \
            if len(keypoints) else np.zeros((0, 2))
        pts = pts[np.isfinite(pts).all(axis=1)]
        if method == "uniform" or len(pts) == 0:
            return np.array([self.py_random.random(), self.py_random.random()])
        weights = np.ones(len(pts))
        if method == "density":
            # Crowded regions (animals close together) are sampled more often.
            radius = 0.1 * min(h, w)
            dist2 = ((pts[:, None] - pts[None]) ** 2).sum(-1)
            weights = (dist2 <= radius * radius).sum(1).astype(np.float64)  # self included
        point = pts[self.random_generator.choice(len(pts), p=weights / weights.sum())]
        shift = self.max_shift * self.random_generator.random(2) * (self.width, self.height)
        return np.clip((point + shift) / (w, h), 0.0, np.nextafter(1.0, 0.0))

    def get_params_dependent_on_data(self, params: dict[str, Any],
                                     data: dict[str, Any]) -> dict[str, Any]:
        h, w = params["shape"][:2]
        if self.height > h or self.width > w:
            raise ValueError(f"crop {self.width}x{self.height} is larger than the image "
                             f"{w}x{h} (pad it first)")
        w_start, h_start = self._relative_start((h, w), data.get("keypoints", np.zeros((0, 2))))
        # albumentations' RandomCrop placement: start in [0, size - crop] inclusive.
        x0 = int((w - self.width + 1) * w_start)
        y0 = int((h - self.height + 1) * h_start)
        return {"crop_coords": (x0, y0, x0 + self.width, y0 + self.height), "pad_params": None}

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return "width", "height", "max_shift", "crop_sampling"


class ElasticTransform(A.ElasticTransform):
    """DeepLabCut's elastic deformation (alpha 20, sigma 5, cubic, uniform noise, dx = dy).

    albumentations places keypoints on the integer pixel grid (or drops those it loses); here a
    keypoint goes exactly where its pixel went, by inverting the displacement field: the image
    is ``out(q) = in(q + d(q))``, so a keypoint at p moves to the q solving ``q + d(q) = p``
    (fixed-point iteration, converges because the smoothed field varies slowly).
    """

    def __init__(self, alpha: float = 20.0, sigma: float = 5.0, p: float = 0.5):
        super().__init__(alpha=alpha, sigma=sigma, interpolation=cv2.INTER_CUBIC,
                         approximate=True, same_dxdy=True, noise_distribution="uniform",
                         border_mode=cv2.BORDER_CONSTANT, p=p)

    def apply_to_keypoints(self, keypoints: np.ndarray, map_x: np.ndarray = None,
                           map_y: np.ndarray = None, **params: Any) -> np.ndarray:
        out = np.array(keypoints, dtype=np.float32)
        if len(out) == 0:
            return out
        h, w = map_x.shape
        grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32),
                                     np.arange(h, dtype=np.float32))
        dx, dy = map_x - grid_x, map_y - grid_y
        target = out[:, :2].astype(np.float64)
        q = target.copy()
        for _ in range(20):
            q = target - np.stack([_bilinear(dx, q), _bilinear(dy, q)], axis=1)
        out[:, :2] = q.astype(np.float32)
        return out


def _bilinear(field: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Samples a (H, W) field at pixel-index points (M, 2), border values outside; NaN stays."""
    h, w = field.shape
    x = np.clip(xy[:, 0], 0, w - 1)
    y = np.clip(xy[:, 1], 0, h - 1)
    finite = np.isfinite(x) & np.isfinite(y)
    x, y = np.where(finite, x, 0), np.where(finite, y, 0)
    x0, y0 = np.minimum(x.astype(int), w - 2).clip(0), np.minimum(y.astype(int), h - 2).clip(0)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = x - x0, y - y0
    top = field[y0, x0] * (1 - fx) + field[y0, x1] * fx
    bottom = field[y1, x0] * (1 - fx) + field[y1, x1] * fx
    return np.where(finite, top * (1 - fy) + bottom * fy, np.nan)


class CoarseDropout(A.CoarseDropout):
    """DeepLabCut's ``covering``: 10 holes of 1-5 % of the image side; keypoints under a hole
    become unlabeled (their x, y NaN) instead of being kept or dropped."""

    def __init__(self, p: float = 0.5):
        super().__init__(num_holes_range=(10, 10), hole_height_range=(0.01, 0.05),
                         hole_width_range=(0.01, 0.05), fill=0, p=p)

    def apply_to_keypoints(self, keypoints: np.ndarray, holes: np.ndarray = None,
                           **params: Any) -> np.ndarray:
        out = np.array(keypoints, dtype=np.float32)
        if holes is None or len(holes) == 0 or len(out) == 0:
            return out
        x, y = out[:, 0:1], out[:, 1:2]
        x1, y1, x2, y2 = (np.asarray(holes)[:, i][None] for i in range(4))
        covered = ((x >= x1) & (x < x2) & (y >= y1) & (y < y2)).any(axis=1)
        out[covered, :2] = np.nan
        return out

    def apply_to_bboxes(self, bboxes: np.ndarray, **params: Any) -> np.ndarray:
        return bboxes  # a box stays whole when part of the animal is hidden


class Grayscale(A.ToGray):
    """Grayscale blended with the image: ``(1 - a) * image + a * gray``, a drawn in ``alpha``."""

    def __init__(self, alpha: tuple[float, float] = (0.5, 1.0), p: float = 0.5):
        super().__init__(num_output_channels=3, p=p)
        lo, hi = (alpha, alpha) if np.isscalar(alpha) else alpha
        self.alpha = (min(1.0, max(0.0, float(lo))), min(1.0, max(0.0, float(hi))))

    def get_params(self) -> dict[str, Any]:
        return {"alpha": self.py_random.uniform(*self.alpha)}

    def apply(self, img: np.ndarray, alpha: float = 1.0, **params: Any) -> np.ndarray:
        gray = super().apply(img, **params)
        return (img * (1.0 - alpha) + gray * alpha).astype(img.dtype)


class GaussianNoise(A.GaussNoise):
    """Per-pixel, per-channel Gaussian noise with DeepLabCut's law: the variance is drawn
    uniformly in [0, std**2] (albumentations 2 draws the standard deviation uniformly).

    Args:
        std: the largest standard deviation, in pixel values (0-255).
        p: probability of adding noise.
    """

    def __init__(self, std: float = 12.75, p: float = 0.5):
        self.std = min(float(std), 255.0)
        super().__init__(std_range=(0.0, self.std / 255.0), mean_range=(0.0, 0.0),
                         per_channel=True, p=p)

    def get_params_dependent_on_data(self, params: dict[str, Any],
                                     data: dict[str, Any]) -> dict[str, Any]:
        sigma = self.std * math.sqrt(self.py_random.random()) / 255.0
        full = self.std_range
        self.std_range = (sigma, sigma)  # albumentations draws uniformly in this range
        try:
            return super().get_params_dependent_on_data(params, data)
        finally:
            self.std_range = full

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return "std", "p"


class RandomBBoxTransform(A.DualTransform):
    """Jitters bounding boxes (for the crops of top-down models); image and keypoints unchanged.

    Each box is scaled (probability ``scale_prob``) by factors in ``scale_factor`` and shifted
    (probability ``shift_prob``) by up to ``shift_factor`` of its size, factors drawn from a
    truncated normal (mmpose's RandomBBoxTransform), then clipped to the image.
    """

    def __init__(self, shift_factor: float = 0.1, shift_prob: float = 0.25,
                 scale_factor: Sequence[float] = (0.75, 1.25), scale_prob: float = 1.0,
                 p: float = 1.0):
        super().__init__(p=p)
        self.shift_factor, self.shift_prob = float(shift_factor), float(shift_prob)
        self.scale_factor = (float(scale_factor[0]), float(scale_factor[1]))
        self.scale_prob = float(scale_prob)

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        return img

    def apply_to_keypoints(self, keypoints: np.ndarray, **params: Any) -> np.ndarray:
        return keypoints

    def _truncnorm(self, n: int, low: float, high: float) -> np.ndarray:
        from scipy.stats import truncnorm

        return truncnorm.rvs(low, high, size=(n, 2), random_state=self.random_generator)

    def apply_to_bboxes(self, bboxes: np.ndarray, **params: Any) -> np.ndarray:
        out = np.array(bboxes, dtype=np.float64)
        if len(out) == 0:
            return out
        n = len(out)
        scales = np.ones((n, 2))
        scaled = self.random_generator.random(n) < self.scale_prob
        if scaled.any():
            scales[scaled] = self._truncnorm(int(scaled.sum()), *self.scale_factor)
        shifts = np.zeros((n, 2))
        shifted = self.random_generator.random(n) < self.shift_prob
        if shifted.any():
            shifts[shifted] = self._truncnorm(int(shifted.sum()), -self.shift_factor,
                                              self.shift_factor)
        size = out[:, 2:4] - out[:, 0:2]
        centre = out[:, 0:2] + 0.5 * size + shifts * size
        half = 0.5 * size * scales
        out[:, 0:2], out[:, 2:4] = centre - half, centre + half
        out[:, :4] = np.clip(out[:, :4], 0.0, 1.0)
        return out

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return "shift_factor", "shift_prob", "scale_factor", "scale_prob"
