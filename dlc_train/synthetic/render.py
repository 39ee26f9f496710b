"""Drawing: the arena background, the animals, and per-frame photometric noise (numpy + cv2)."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .body import AnimalPose, AnimalShape, animal_shape

# cv2 draws with integer coordinates; a shift of 4 bits gives 1/16-pixel precision, so the
# drawn outline matches the float keypoints to well under a tenth of a pixel.
_SHIFT = 4
_SCALE = 1 << _SHIFT

# Fixed part colours (BGR) relative to which the per-frame jitter is applied.
EAR_INNER = (150.0, 150.0, 205.0)
NOSE = (135.0, 130.0, 215.0)
TAIL = (125.0, 135.0, 170.0)


@dataclass(frozen=True)
class Appearance:
    """Per-project look: floor colour and the animals' base colour."""

    floor: tuple[float, float, float]
    animal: tuple[float, float, float]


def sample_appearance(rng: np.random.Generator) -> Appearance:
    """A light floor and a dark animal, tinted a little differently per project."""
    grey = rng.uniform(150, 195)
    floor = tuple(float(grey + t) for t in rng.uniform(-12, 12, size=3))
    dark = rng.uniform(45, 75)
    animal = tuple(float(dark + t) for t in rng.uniform(-10, 10, size=3))
    return Appearance(floor=floor, animal=animal)  # type: ignore[arg-type]


def make_background(rng: np.random.Generator, width: int, height: int,
                    appearance: Appearance) -> np.ndarray:
    """A textured arena floor: multi-scale smooth noise, a few soft blobs and lines, fine grain.

    Returns:
        (H, W, 3) uint8 BGR image.
    """
    img = np.empty((height, width, 3), np.float32)
    img[:] = appearance.floor
    # Smooth noise: random grids upsampled with bicubic interpolation, coarse to fine.
    for cells, amp in ((3, 18.0), (7, 10.0), (17, 5.0)):
        gh, gw = max(2, round(cells * height / width)), cells
        grid = rng.normal(0.0, amp, size=(gh, gw)).astype(np.float32)
        img += cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)[..., None]
    # Soft stains: blurred ellipses, lighter or darker than the floor.
    stains = np.zeros((height, width), np.float32)
    for _ in range(int(rng.integers(3, 7))):
        centre = (int(rng.uniform(0, width)), int(rng.uniform(0, height)))
        axes = (int(rng.uniform(0.03, 0.12) * width), int(rng.uniform(0.03, 0.12) * width))
        cv2.ellipse(stains, centre, axes, float(rng.uniform(0, 180)), 0, 360,
                    float(rng.uniform(-30, 30)), -1, cv2.LINE_AA)
    img += cv2.GaussianBlur(stains, (0, 0), sigmaX=max(1.0, 0.02 * width))[..., None]
    # Lines: arena markings and scratches (thin, darker, anti-aliased).
    for _ in range(int(rng.integers(2, 5))):
        p0 = (int(rng.uniform(0, width)), int(rng.uniform(0, height)))
        p1 = (int(rng.uniform(0, width)), int(rng.uniform(0, height)))
        shade = float(rng.uniform(-45, -15))
        cv2.line(img, p0, p1, (shade + img[p0[1], p0[0]]).tolist(), 1, cv2.LINE_AA)
    img += rng.normal(0.0, 3.0, size=img.shape).astype(np.float32)   # static grain
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _pts(points: np.ndarray) -> np.ndarray:
    return np.rint(points * _SCALE).astype(np.int32).reshape(-1, 1, 2)


def _circle(img: np.ndarray, centre: np.ndarray, radius: float, color, line_type: int) -> None:
    cv2.circle(img, tuple(int(c) for c in np.rint(centre * _SCALE)), int(round(radius * _SCALE)),
               color, -1, line_type, _SHIFT)


def _draw_shape(img: np.ndarray, shape: AnimalShape, colors: dict[str, tuple], line_type: int
                ) -> None:
    # Back to front: tail under the body, ears and nose on top.
    cv2.fillPoly(img, [_pts(shape.tail)], colors["tail"], line_type, _SHIFT)
    _circle(img, shape.keypoints[-1], shape.tail_tip_radius, colors["tail"], line_type)
    cv2.fillPoly(img, [_pts(shape.body)], colors["body"], line_type, _SHIFT)
    cv2.fillPoly(img, [_pts(shape.head)], colors["head"], line_type, _SHIFT)
    for ear in shape.ears:
        _circle(img, ear, shape.ear_radius, colors["ear"], line_type)
        _circle(img, ear, 0.6 * shape.ear_radius, colors["ear_inner"], line_type)
    _circle(img, shape.keypoints[0], shape.nose_radius, colors["nose"], line_type)


def _colors(pose: AnimalPose) -> dict[str, tuple]:
    # Part colours follow the body colour's jitter so that the whole animal varies together.
    base = np.asarray(pose.color, np.float64)
    delta = base - 60.0

    def c(rgb) -> tuple:
        return tuple(float(v) for v in np.clip(np.asarray(rgb) + 0.5 * delta, 0, 255))

    return {"body": tuple(float(v) for v in base), "head": tuple(float(v) for v in base + 8),
            "ear": tuple(float(v) for v in base + 15), "ear_inner": c(EAR_INNER),
            "nose": c(NOSE), "tail": c(TAIL)}


def draw_animals(img: np.ndarray, poses: list[AnimalPose]) -> np.ndarray:
    """Draw ``poses`` onto ``img`` in place (anti-aliased); returns (A, K, 2) keypoints."""
    kps = []
    for pose in poses:
        shape = animal_shape(pose)
        _draw_shape(img, shape, _colors(pose), cv2.LINE_AA)
        kps.append(shape.keypoints)
    return np.stack(kps)


def animal_masks(poses: list[AnimalPose], width: int, height: int) -> np.ndarray:
    """(A, H, W) bool masks of each animal, drawn without anti-aliasing (for tests)."""
    masks = np.zeros((len(poses), height, width), np.uint8)
    white = {k: (255,) for k in ("tail", "body", "head", "ear", "ear_inner", "nose")}
    for mask, pose in zip(masks, poses):
        _draw_shape(mask, animal_shape(pose), white, cv2.LINE_8)
    return masks.astype(bool)


def photometric_noise(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per-frame illumination change and sensor noise, so no two frames are pixel-identical."""
    gain = rng.uniform(0.88, 1.12)
    offset = rng.uniform(-10.0, 10.0)
    sigma = rng.uniform(1.5, 5.0)
    noise = rng.standard_normal(img.shape, dtype=np.float32) * np.float32(sigma)
    out = img.astype(np.float32) * np.float32(gain) + np.float32(offset) + noise
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def render_frame(background: np.ndarray, poses: list[AnimalPose], rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Render one frame.

    Args:
        background: (H, W, 3) uint8 floor (not modified).
        poses: one pose per animal, drawn in order (later animals on top).
        rng: stream for the photometric noise.
    Returns:
        image (H, W, 3) uint8 BGR and keypoints (A, K, 2) float64, not yet NaN-masked.
    """
    img = background.copy()
    kps = draw_animals(img, poses)
    return photometric_noise(img, rng), kps
