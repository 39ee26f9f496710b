"""``build_transforms``: the augmentation pipeline of a ``data.train`` / ``data.inference`` section.

As DeepLabCut 3, the pipeline is an albumentations ``Compose`` built from the section's keys, in
DeepLabCut's order and with its defaults: resize / longest_max_size, hflip, affine,
random_bbox_transform, crop_sampling, hist_eq, motion_blur, covering, elastic_transform,
grayscale, gaussian_noise, auto_padding, normalize_images, scale_to_unit_range. ``top_down_crop``
and ``collate`` belong to the section but are read by the dataset and the trainer. A key that is
not one of these is refused (one line naming it and the known keys), as is an option of a
transform that it does not take.

``Augmentation`` wraps the Compose for our datasets: keypoints come as arrays ``(..., 3)`` (x, y,
visibility), in continuous pixel coordinates (pixel ``i`` covers ``[i, i + 1)``). A keypoint that
ends outside the output image (or under a ``covering`` hole) gets visibility 0; its x, y are
kept, for debugging. Every random draw comes from the ``numpy.random.Generator`` passed in, so a
seeded generator reproduces an augmentation exactly.

Where we differ from DeepLabCut 3, on purpose: hflip swaps the symmetric bodyparts of every
individual (DeepLabCut's only those of the first), symmetries may name bodyparts, motion blur
keeps its kernel centred (a shifted kernel moves the animal away from its labels),
``gaussian_noise: true`` means DeepLabCut's intended 12.75 (its code reads True as 1), and
crop sampling centres on labeled keypoints only.
"""
from __future__ import annotations

import contextlib
import logging
import random
import warnings
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

from dlc_train.config.defaults import TRANSFORM_KEYS, TRANSFORM_OPTIONS
from dlc_train.config.io import ConfigError

logger = logging.getLogger(__name__)

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

Keypoints = list[np.ndarray]  # arrays (..., 3): x, y, visibility; [0] is (N, K, 3)

# Keys read elsewhere: their content is not ours to check.
_READ_ELSEWHERE = ("top_down_crop", "collate")
# Switches: DeepLabCut reads only whether they are set.
_SWITCHES = ("hist_eq", "motion_blur", "covering", "elastic_transform", "grayscale",
             "normalize_images", "scale_to_unit_range")
_BORDER_MODES = {"constant": 0, "reflect_101": 4}  # cv2.BORDER_CONSTANT, cv2.BORDER_REFLECT_101


@dataclass
class Augmented:
    """One augmented sample: the image, keypoints as given (visibility updated), boxes
    ``(B, 4)`` x, y, w, h aligned with the input boxes (all zero where a box left the image)."""

    image: np.ndarray
    keypoints: Keypoints
    bboxes: np.ndarray | None = None


class Augmentation:
    """An albumentations pipeline applied to an image, its keypoints and (optionally) boxes.

    Args:
        transforms: albumentations transforms, applied in order.
    """

    def __init__(self, transforms: Sequence[Any]):
        from dlc_train.data.augmentations import A

        with warnings.catch_warnings():
            # A pipeline of image-only transforms (inference) has nothing to move keypoints.
            warnings.filterwarnings("ignore", message="Got processor for", category=UserWarning)
            self.compose = A.Compose(
                list(transforms),
                keypoint_params=A.KeypointParams(format="xy", remove_invisible=False),
                bbox_params=A.BboxParams(format="coco", label_fields=["bbox_ids"], clip=True))

    @property
    def transforms(self) -> list[Any]:
        return list(self.compose.transforms)

    def __len__(self) -> int:
        return len(self.compose.transforms)

    def __repr__(self) -> str:
        return f"Augmentation({', '.join(repr(t) for t in self.compose.transforms)})"

    def __call__(self, image: np.ndarray, kps: Keypoints,
                 rng: np.random.Generator) -> tuple[np.ndarray, Keypoints]:
        """Augments an image and its keypoint arrays (inputs are not modified)."""
        out = self.apply(image, kps, rng)
        return out.image, out.keypoints

    def apply(self, image: np.ndarray, keypoints: Keypoints, rng: np.random.Generator,
              bboxes: np.ndarray | None = None) -> Augmented:
        """Augments an image, its keypoint arrays ``(..., 3)`` and boxes ``(B, 4)`` (x, y, w, h).

        The first keypoint array is taken as (N individuals, K bodyparts, 3) for hflip's
        bodypart swaps; the other arrays (unique bodyparts) are not swapped.
        """
        from dlc_train.data.augmentations import LAYOUT_KEY

        arrays = [np.asarray(k, dtype=np.float32) for k in keypoints]
        rows = np.concatenate([a.reshape(-1, 3) for a in arrays]) if arrays \
            else np.zeros((0, 3), np.float32)
        h, w = image.shape[:2]
        labeled = (rows[:, 2] > 0) & _inside(rows, w, h)
        # An unlabeled keypoint travels as NaN: transforms leave it alone (crop sampling never
        # centres on it); its visibility travels as a column, so that it follows hflip's swaps.
        points = np.column_stack([np.where(labeled[:, None], rows[:, :2], np.nan),
                                  np.where(labeled, rows[:, 2], 0.0)]).astype(np.float32)
        layout = arrays[0].shape[-3:-1] if arrays and arrays[0].ndim >= 3 else None
        seed = int(rng.integers(2 ** 63))
        # One shared stream: transforms seeded alike would all decide alike.
        self.compose.set_random_state(np.random.default_rng(seed), random.Random(seed))
        boxes = np.zeros((0, 4)) if bboxes is None \
            else np.asarray(bboxes, np.float64).reshape(-1, 4)
        valid = (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
        data = self.compose(image=image, keypoints=points, bboxes=boxes[valid],
                            bbox_ids=np.flatnonzero(valid).tolist(),
                            **({LAYOUT_KEY: tuple(layout)} if layout else {}))
        out_image = data["image"]
        moved = np.asarray(data["keypoints"], dtype=np.float32).reshape(-1, points.shape[1]) \
            if len(points) else np.zeros((0, 3), np.float32)
        if len(moved) != len(points):
            raise RuntimeError(f"the augmentation changed the number of keypoints "
                               f"({len(points)} -> {len(moved)}): {self!r}")
        oh, ow = out_image.shape[:2]
        finite = np.isfinite(moved[:, :2]).all(axis=1)
        result = np.zeros_like(rows)
        result[finite, :2] = moved[finite, :2]
        result[:, 2] = np.where(finite & _inside(moved, ow, oh), moved[:, 2], 0.0)
        out_kps, start = [], 0
        for a in arrays:
            out_kps.append(result[start:start + a[..., 0].size].reshape(a.shape))
            start += a[..., 0].size
        out_boxes = None
        if bboxes is not None:
            out_boxes = np.zeros_like(boxes)
            for box, i in zip(np.asarray(data["bboxes"]).reshape(-1, 4), data["bbox_ids"]):
                out_boxes[int(i)] = box
        return Augmented(out_image, out_kps, out_boxes)


def _inside(rows: np.ndarray, width: int, height: int) -> np.ndarray:
    x, y = rows[:, 0], rows[:, 1]
    with np.errstate(invalid="ignore"):
        return np.isfinite(x) & np.isfinite(y) & (x >= 0) & (y >= 0) & (x < width) & (y < height)


@contextlib.contextmanager
def _building(key: str) -> Iterator[None]:
    """Bad values of one transform key -> one ConfigError line naming the key."""
    try:
        yield
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:  # pydantic's ValidationError is a ValueError
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        detail = "; ".join(lines[:3]) if lines else type(err).__name__
        raise ConfigError(f"transform {key!r}: {detail}") from None


def _options(key: str, value: Any) -> dict[str, Any]:
    """A mapping-valued key's options, DeepLabCut's defaults filled in; unknown ones refused."""
    defaults = TRANSFORM_OPTIONS[key]
    given = value if isinstance(value, dict) else {}
    unknown = [k for k in given if k not in defaults]
    if unknown:
        raise ConfigError(f"transform {key!r} has no option {unknown[0]!r}; its options: "
                         f"{', '.join(defaults)}")
    options = {**defaults, **given}
    missing = [k for k in ("width", "height") if k in options and options[k] is None
               and key in ("resize", "crop_sampling")]
    if missing:
        raise ConfigError(f"transform {key!r} needs {' and '.join(missing)}")
    return options


def _symmetries(spec: Any, bodyparts: Sequence[str] | None) -> list[tuple[int, int]]:
    """hflip symmetries as bodypart index pairs; names are looked up in ``bodyparts``."""
    names = list(bodyparts) if bodyparts is not None else None
    pairs = []
    for pair in spec or []:
        if len(pair) != 2:
            raise ConfigError(f"hflip symmetry {pair!r}: expected a pair of bodyparts")
        indices = []
        for part in pair:
            if isinstance(part, str) and not part.isdigit():
                if names is None or part not in names:
                    raise ConfigError(f"hflip symmetry {tuple(pair)} names {part!r}, which is not "
                                     f"a bodypart{'' if names is None else ' of ' + str(names)}")
                indices.append(names.index(part))
            else:
                index = int(part)
                if names is not None and not 0 <= index < len(names):
                    raise ConfigError(f"hflip symmetry {tuple(pair)}: index {index} is outside "
                                     f"the {len(names)} bodyparts")
                indices.append(index)
        pairs.append((indices[0], indices[1]))
    return pairs


def _check_keys(aug: dict) -> None:
    unknown = [k for k in aug if k not in TRANSFORM_KEYS]
    if unknown:
        raise ConfigError(f"unknown transform key {unknown[0]!r}; known keys: "
                         f"{', '.join(TRANSFORM_KEYS)}")
    for key in _SWITCHES:
        value = aug.get(key)
        if isinstance(value, dict) and value:
            raise ConfigError(f"transform {key!r} takes true or false, not options "
                             f"({', '.join(value)}): DeepLabCut 3 does not read them either")


def build_transforms(aug: dict | None, bodyparts: Sequence[str] | None = None) -> Augmentation:
    """Builds the pipeline of one ``data.train`` / ``data.inference`` config section.

    Args:
        aug: the section (DeepLabCut keys; null / false values mean off).
        bodyparts: bodypart names, to resolve and check hflip symmetries.

    Raises:
        ConfigError (a ValueError): an unknown key or option, or a bad value (one line).
    """
    aug = dict(aug or {})
    _check_keys(aug)
    ts: list[Any] = []
    for key in TRANSFORM_KEYS:
        value = aug.get(key)
        if value is None or value is False or key in _READ_ELSEWHERE:
            continue
        with _building(key):
            ts += _BUILDERS[key](value, bodyparts)
    return Augmentation(ts)


# One builder per key: (value, bodyparts) -> transforms. The order of TRANSFORM_KEYS is
# DeepLabCut's order of application.
def _resize(value: Any, bodyparts) -> list:
    from dlc_train.data.augmentations import A, PadIfNeeded

    o = _options("resize", value)
    height, width = int(o["height"]), int(o["width"])
    if not o["keep_ratio"]:
        return [A.Resize(height, width)]
    # Scale to fit, then pad bottom / right: input to output stays a pure scale.
    return [A.LongestMaxSize(max_size_hw=(height, width)),
            PadIfNeeded(min_height=height, min_width=width, position="top_left",
                        border_mode=_BORDER_MODES["constant"], fill=0)]


def _longest_max_size(value: Any, bodyparts) -> list:
    from dlc_train.data.augmentations import A

    return [A.LongestMaxSize(max_size=int(value))]


def _hflip(value: Any, bodyparts) -> list:
    from dlc_train.data.augmentations import SymmetricHFlip

    o = _options("hflip", value)
    p = float(value) if isinstance(value, float) else float(o["p"])
    if o["symmetries"] is None:
        logger.warning("hflip without symmetries: left and right bodyparts are not swapped; "
                       "do not use it if the animal has symmetric keypoints")
    return [SymmetricHFlip(_symmetries(o["symmetries"], bodyparts), p=p)]


def _affine(value: Any, bodyparts) -> list:
    from dlc_train.data.augmentations import A

    o = _options("affine", value)
    kwargs: dict[str, Any] = {"p": float(o["p"]), "keep_ratio": True,
                              "border_mode": _BORDER_MODES["constant"]}
    if o["scaling"] is not None:
        kwargs["scale"] = tuple(float(s) for s in np.broadcast_to(o["scaling"], 2))
    if o["rotation"] is not None:
        kwargs["rotate"] = (-float(o["rotation"]), float(o["rotation"]))
    if o["translation"] is not None:
        kwargs["translate_px"] = (-int(o["translation"]), int(o["translation"]))
    return [A.Affine(**kwargs)]


def _random_bbox_transform(value: Any, bodyparts) -> list:
    from dlc_train.data.augmentations import RandomBBoxTransform

    o = _options("random_bbox_transform", value)
    return [RandomBBoxTransform(o["shift_factor"], o["shift_prob"], o["scale_factor"],
                                o["scale_prob"], p=o["p"])]


def _crop_sampling(value: Any, bodyparts) -> list:
    from dlc_train.data.augmentations import KeypointAwareCrop, PadIfNeeded

    o = _options("crop_sampling", value)
    return [PadIfNeeded(min_height=int(o["height"]), min_width=int(o["width"]),
                        border_mode=_BORDER_MODES["constant"], fill=0, p=1.0),
            KeypointAwareCrop(o["width"], o["height"], o["max_shift"], o["method"])]


def _switch(make):
    """A builder for a switch: ``make(augmentations module)`` when the key is set."""
    def build(value: Any, bodyparts) -> list:
        from dlc_train.data import augmentations

        return [make(augmentations)] if value else []
    return build


def _gaussian_noise(value: Any, bodyparts) -> list:
    from dlc_train.data.augmentations import GaussianNoise

    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    return [GaussianNoise(std=float(value) if numeric else 12.75, p=0.5)]


def _normalize(value: Any, bodyparts) -> list:
    from dlc_train.data.augmentations import A

    if not value:
        return []
    return [A.Normalize(mean=IMAGENET_MEAN.tolist(), std=IMAGENET_STD.tolist(),
                        max_pixel_value=255.0)]


def _unit_range(value: Any, bodyparts) -> list:
    from dlc_train.data.augmentations import A

    return [A.ToFloat(max_value=255.0)] if value else []


_BUILDERS = {
    "resize": _resize,
    "longest_max_size": _longest_max_size,
    "hflip": _hflip,
    "affine": _affine,
    "random_bbox_transform": _random_bbox_transform,
    "crop_sampling": _crop_sampling,
    "hist_eq": _switch(lambda m: m.A.Equalize(p=0.5)),
    # A line through the kernel's centre, symmetric: a shifted or one-sided kernel moves the
    # animal away from its labels (by up to half the kernel).
    "motion_blur": _switch(lambda m: m.A.MotionBlur(blur_limit=(3, 7), allow_shifted=False,
                                                    direction_range=(0.0, 0.0), p=0.5)),
    "covering": _switch(lambda m: m.CoarseDropout(p=0.5)),
    "elastic_transform": _switch(lambda m: m.ElasticTransform(alpha=20.0, sigma=5.0, p=0.5)),
    "grayscale": _switch(lambda m: m.Grayscale(alpha=(0.5, 1.0), p=0.5)),
    "gaussian_noise": _gaussian_noise,
    "auto_padding": lambda value, bodyparts: [_auto_padding(_options("auto_padding", value))],
    "normalize_images": _normalize,
    "scale_to_unit_range": _unit_range,
}


def _auto_padding(o: dict[str, Any]):
    """DeepLabCut's auto_padding: PadIfNeeded to a minimum size and / or size divisors."""
    from dlc_train.data.augmentations import PadIfNeeded

    if o["border_mode"] not in _BORDER_MODES:
        raise ConfigError(f"auto_padding border_mode {o['border_mode']!r}: expected one of "
                         f"{', '.join(_BORDER_MODES)}")
    for side in ("height", "width"):
        if o[f"min_{side}"] is not None and o[f"pad_{side}_divisor"] not in (None, 1):
            raise ConfigError(f"auto_padding: set min_{side} or pad_{side}_divisor, not both")
    divisor_h = None if o["min_height"] is not None else (o["pad_height_divisor"] or 1)
    divisor_w = None if o["min_width"] is not None else (o["pad_width_divisor"] or 1)
    return PadIfNeeded(min_height=o["min_height"], min_width=o["min_width"],
                       pad_height_divisor=divisor_h, pad_width_divisor=divisor_w,
                       position=o["position"], border_mode=_BORDER_MODES[o["border_mode"]],
                       fill=o["border_value"] or 0, fill_mask=o["border_mask_value"] or 0, p=1.0)
