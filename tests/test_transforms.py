"""build_transforms: DeepLabCut 3's config keys, order and defaults, as albumentations; the dataset.

Keypoints following the image, transform by transform: tests/test_augmentation.py.
"""
from __future__ import annotations

import albumentations as A
import numpy as np
import pytest
import torch

from dlc_train.config import ConfigError
from dlc_train.config.defaults import TRANSFORM_KEYS, augmentation
from dlc_train.data import augmentations as dlc
from dlc_train.data.dataset import PoseDataset, collate
from dlc_train.data.transforms import (IMAGENET_MEAN, IMAGENET_STD, TRANSFORM_OPTIONS,
                                       build_transforms)
from dlc_train.task import Task


def _kps(x: float, y: float) -> list[np.ndarray]:
    return [np.array([[[x, y, 2.0]]], dtype=np.float32)]


def test_deeplabcut_default_bottom_up_augmentation():
    """aug_default.yaml: the albumentations transforms DeepLabCut 3 builds from it."""
    pipeline = build_transforms(augmentation(Task.BOTTOM_UP)["train"])
    names = [type(t).__name__ for t in pipeline.transforms]
    assert names == ["Affine", "PadIfNeeded", "KeypointAwareCrop", "MotionBlur", "GaussianNoise",
                     "Normalize"]
    affine, pad, crop, blur, noise, _ = pipeline.transforms
    assert isinstance(affine, A.Affine) and affine.p == 0.5
    assert affine.rotate == (-30.0, 30.0) and affine.scale == {"x": (0.5, 1.25),
                                                               "y": (0.5, 1.25)}
    assert (pad.min_height, pad.min_width) == (448, 448)
    assert (crop.width, crop.height, crop.max_shift, crop.crop_sampling) == (448, 448, 0.1,
                                                                             "hybrid")
    assert isinstance(blur, A.MotionBlur) and blur.p == 0.5
    assert noise.std == 12.75 and noise.p == 0.5


def test_deeplabcut_defaults_where_the_config_leaves_them_out():
    pipeline = build_transforms({"affine": {"rotation": 10}, "hflip": 0.3,
                                 "gaussian_noise": True, "hist_eq": True, "covering": True,
                                 "elastic_transform": True, "grayscale": True,
                                 "crop_sampling": {"width": 32, "height": 32}})
    by_name = {type(t).__name__: t for t in pipeline.transforms}
    assert by_name["Affine"].p == 0.9  # DeepLabCut's default (ours used to be 0.5)
    assert by_name["Affine"].scale == {"x": (1.0, 1.0), "y": (1.0, 1.0)}
    assert by_name["SymmetricHFlip"].p == 0.3  # a float hflip is its probability
    assert by_name["GaussianNoise"].std == 12.75  # true: DeepLabCut's 0.05 * 255
    assert by_name["KeypointAwareCrop"].max_shift == 0.4
    assert by_name["KeypointAwareCrop"].crop_sampling == "hybrid"
    assert by_name["Equalize"].p == 0.5
    assert by_name["CoarseDropout"].num_holes_range == (10, 10)
    assert by_name["ElasticTransform"].alpha == 20 and by_name["ElasticTransform"].sigma == 5
    assert by_name["Grayscale"].alpha == (0.5, 1.0)
    # DeepLabCut's order, whatever the order of the keys.
    assert list(by_name) == ["SymmetricHFlip", "Affine", "PadIfNeeded", "KeypointAwareCrop",
                             "Equalize", "CoarseDropout", "ElasticTransform", "Grayscale",
                             "GaussianNoise"]


def test_resize_auto_padding_and_inference_sections():
    pipeline = build_transforms({"resize": {"height": 64, "width": 96}, "auto_padding": {
        "pad_height_divisor": 32, "pad_width_divisor": 32, "position": "top_left",
        "border_mode": "constant"}, "normalize_images": True})
    image = np.full((50, 60, 3), 255, np.uint8)
    out, (kps,) = pipeline(image, _kps(30, 25), np.random.default_rng(0))
    # Scaled by 64 / 50 to 64 x 77, padded at the right to 96, then already a multiple of 32.
    assert out.shape == (64, 96, 3) and out.dtype == np.float32
    np.testing.assert_allclose(kps[0, 0], [30 * 64 / 50, 25 * 64 / 50, 2], rtol=1e-5)
    np.testing.assert_allclose(out[0, 90], -IMAGENET_MEAN / IMAGENET_STD, rtol=1e-5)
    plain = build_transforms(augmentation(Task.BOTTOM_UP)["inference"])
    assert [type(t).__name__ for t in plain.transforms] == ["Normalize"]
    assert len(build_transforms(None)) == 0


def test_same_generator_same_augmentation():
    aug = dict(augmentation(Task.BOTTOM_UP)["train"],
               crop_sampling={"width": 48, "height": 40, "max_shift": 0.1, "method": "hybrid"},
               hflip={"p": 0.5, "symmetries": [[0, 1]]}, covering=True, elastic_transform=True)
    pipeline = build_transforms(aug)
    image = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    kps = [np.array([[[30, 30, 2], [40, 20, 2]]], np.float32)]
    a = pipeline(image, kps, np.random.default_rng(7))
    b = pipeline(image, kps, np.random.default_rng(7))
    c = pipeline(image, kps, np.random.default_rng(8))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1][0], b[1][0])
    assert not np.array_equal(a[0], c[0])
    assert a[0].shape == (40, 48, 3) and a[0].dtype == np.float32


@pytest.mark.parametrize("section,message", [
    ({"covring": True}, "unknown transform key 'covring'; known keys: resize, "),
    ({"affine": {"rotate": 10}}, "transform 'affine' has no option 'rotate'; its options: p, "
                                 "rotation, scaling, translation"),
    ({"affine": {"p": 2}}, "transform 'affine': "),
    ({"crop_sampling": {"width": 10, "height": 10, "method": "random"}},
     "crop_sampling method 'random': expected one of uniform, keypoints, density, hybrid"),
    ({"crop_sampling": {"width": 10}}, "transform 'crop_sampling' needs height"),
    ({"covering": {"p": 0.2}}, "transform 'covering' takes true or false"),
    ({"hflip": {"symmetries": [["leftear", "rightlear"]]}}, "names 'rightlear', which is not a "
                                                            "bodypart"),
    ({"auto_padding": {"border_mode": "wrap"}}, "auto_padding border_mode 'wrap'"),
])
def test_bad_sections_are_one_line_config_errors(section, message):
    with pytest.raises(ConfigError) as info:
        build_transforms(section, bodyparts=["snout", "leftear", "rightear"])
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_every_key_is_known_and_options_belong_to_keys():
    assert set(TRANSFORM_OPTIONS) <= set(TRANSFORM_KEYS)
    # top_down_crop and collate are part of the section, read by the dataset and the trainer.
    assert len(build_transforms({"top_down_crop": {"width": 256, "height": 256},
                                 "collate": None})) == 0


def test_the_shared_stream_comes_from_the_generator():
    flip = build_transforms({"hflip": {"p": 0.5, "symmetries": []}})
    image = np.zeros((10, 20, 3), np.uint8)
    xs = [float(flip(image, _kps(4, 5), np.random.default_rng(s))[1][0][0, 0, 0])
          for s in range(30)]
    assert set(xs) == {4.0, 15.0}   # x -> W - 1 - x, as albumentations flips
    again = [float(flip(image, _kps(4, 5), np.random.default_rng(s))[1][0][0, 0, 0])
             for s in range(30)]
    assert xs == again
    assert isinstance(flip.transforms[0], dlc.SymmetricHFlip)


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
    np.testing.assert_array_equal(item["annotations"]["keypoints"].numpy(),
                                  [[[10, 10, 2], [0, 0, 0]]])
    batch = collate([ds[0], ds[1]])
    assert batch["image"].shape == (2, 3, 40, 60)
    assert batch["annotations"]["keypoints"].shape == (2, 1, 2, 3)
    assert torch.all(batch["image"][1, :, 30:, :] == 0)
