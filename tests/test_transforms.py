"""Keypoint-aware augmentation: keypoints follow the image."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dlc_train.data.dataset import PoseDataset, collate
from dlc_train.data.transforms import (IMAGENET_MEAN, IMAGENET_STD, Affine, AutoPadding,
                                       CropSampling, HFlip, Resize, build_transforms)


def _dot_image(h: int, w: int, x: float, y: float) -> np.ndarray:
    """A black RGB image with a small bright blob centred on continuous coords (x, y)."""
    yy, xx = np.mgrid[0:h, 0:w] + 0.5  # pixel centres
    blob = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.5 ** 2))
    return np.repeat((255 * blob)[..., None], 3, axis=2).astype(np.uint8)


def _blob_centre(image: np.ndarray) -> np.ndarray:
    g = image[..., 0].astype(np.float64)
    g = np.where(g > 0.3 * g.max(), g, 0)
    yy, xx = np.mgrid[0:g.shape[0], 0:g.shape[1]] + 0.5
    return np.array([(g * xx).sum() / g.sum(), (g * yy).sum() / g.sum()])


def _kps(x: float, y: float) -> list[np.ndarray]:
    return [np.array([[[x, y, 2.0]]], dtype=np.float32)]


@pytest.mark.parametrize("transform", [
    Affine(p=1.0, rotation=40, scaling=(0.6, 1.4), translation=10),
    CropSampling(64, 48, max_shift=0.2, method="hybrid"),
    CropSampling(200, 150, method="uniform"),  # larger than the image: pads
    Resize(50, 70, keep_ratio=True),
    Resize(150, 60, keep_ratio=False),
    HFlip([], p=1.0),
    AutoPadding(32, 32),
])
def test_keypoint_follows_dot(transform):
    rng = np.random.default_rng(0)
    for trial in range(8):
        x, y = rng.uniform(30, 90), rng.uniform(25, 70)
        image = _dot_image(96, 120, x, y)
        out, kps = transform(image, _kps(x, y), np.random.default_rng(trial))
        kp = kps[0][0, 0]
        if kp[2] == 0:  # left the image: the blob must be (mostly) gone too
            assert out[..., 0].max() < 200 or not (0 <= kp[0] < out.shape[1])
            continue
        np.testing.assert_allclose(_blob_centre(out), kp[:2], atol=1.5,
                                   err_msg=f"{transform} trial {trial}")


def test_outside_keypoints_become_invisible():
    image = np.zeros((100, 100, 3), np.uint8)
    kps = [np.array([[[5, 5, 2], [95, 95, 2]]], dtype=np.float32)]
    crop = CropSampling(40, 40, method="uniform")
    _, out = crop(image, kps, np.random.default_rng(1))
    inside = (out[0][0, :, :2] >= 0).all(1) & (out[0][0, :, :2] < 40).all(1)
    np.testing.assert_array_equal(out[0][0, :, 2] > 0, inside)
    assert kps[0][0, 0, 2] == 2  # input not modified


def test_hflip_swaps_symmetric_pairs():
    image = np.zeros((10, 20, 3), np.uint8)
    kps = [np.array([[[2, 5, 2], [15, 5, 2], [8, 1, 2]]], dtype=np.float32)]
    _, out = HFlip([(0, 1)], p=1.0)(image, kps, np.random.default_rng(0))
    np.testing.assert_allclose(out[0][0, :, 0], [20 - 15, 20 - 2, 20 - 8])


def test_build_from_dlc_config_is_deterministic():
    aug = {"resize": None, "longest_max_size": None, "hflip": True,
           "affine": {"p": 0.5, "rotation": 30, "scaling": [0.5, 1.25], "translation": 0},
           "crop_sampling": {"width": 48, "height": 40, "max_shift": 0.1, "method": "hybrid"},
           "hist_eq": True, "motion_blur": True, "gaussian_noise": 12.75,
           "auto_padding": None, "normalize_images": True, "covering": None}
    pipeline = build_transforms(aug)
    names = [type(t).__name__ for t in pipeline.transforms]
    assert names == ["Affine", "CropSampling", "HistEq", "MotionBlur", "GaussianNoise",
                     "Normalize"]  # hflip without symmetries is ignored
    image = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    a = pipeline(image, _kps(30, 30), np.random.default_rng(7))
    b = pipeline(image, _kps(30, 30), np.random.default_rng(7))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1][0], b[1][0])
    assert a[0].shape == (40, 48, 3) and a[0].dtype == np.float32


def test_unsupported_key_raises():
    with pytest.raises(ValueError, match="covering"):
        build_transforms({"covering": {"p": 0.5}})


def test_dataset_and_collate(tmp_path):
    import cv2
    paths = []
    for i, (h, w) in enumerate([(40, 50), (30, 60)]):
        img = np.zeros((h, w, 3), np.uint8)
        img[..., 0] = 255  # red in RGB
        p = tmp_path / f"img{i}.png"
        cv2.imwrite(str(p), img[..., ::-1])
        paths.append(str(p))
    samples = [(p, np.array([[[10, 10, 2], [0, 0, 0]]], np.float32)) for p in paths]
    ds = PoseDataset(samples, build_transforms({"normalize_images": True}), ["a", "b"])
    item = ds[0]
    assert item["image"].shape == (3, 40, 50) and item["image"].dtype == torch.float32
    expected_red = (1.0 - IMAGENET_MEAN[0]) / IMAGENET_STD[0]
    assert torch.allclose(item["image"][0], torch.tensor(expected_red))
    batch = collate([ds[0], ds[1]])
    assert batch["image"].shape == (2, 3, 40, 60)
    assert batch["annotations"]["keypoints"].shape == (2, 1, 2, 3)
    assert torch.all(batch["image"][1, :, 30:, :] == 0)
