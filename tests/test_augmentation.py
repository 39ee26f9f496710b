"""Augmentation keeps keypoints on the image content: dots drawn at known keypoints are found,
after every transform of ``build_transforms``, where the transformed keypoints say."""
from __future__ import annotations

import numpy as np
import pytest

from dlc_train.data import augmentations as dlc
from dlc_train.data.transforms import Augmentation, build_transforms

H, W = 96, 120


def dot_image(x: float, y: float, sigma: float = 1.5) -> np.ndarray:
    """A black RGB image with a bright blob centred on (x, y) in pixel-index coordinates (pixel
    ``i`` centred on ``i``, as DeepLabCut's labels)."""
    yy, xx = np.mgrid[0:H, 0:W]
    blob = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2))
    return np.repeat((255 * blob)[..., None], 3, axis=2).astype(np.uint8)


def blob_centre(image: np.ndarray, x: float, y: float, radius: int = 5) -> np.ndarray:
    """Intensity centroid of the blob near (x, y), in pixel-index coordinates."""
    g = np.asarray(image[..., 0], np.float64)
    g = g - g.min()
    x0, x1 = max(0, int(x) - radius), min(g.shape[1], int(x) + radius + 1)
    y0, y1 = max(0, int(y) - radius), min(g.shape[0], int(y) + radius + 1)
    win = g[y0:y1, x0:x1]
    win = np.where(win > 0.3 * win.max(), win, 0.0)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    return np.array([(win * xx).sum() / win.sum(), (win * yy).sum() / win.sum()])


def always(pipeline: Augmentation) -> Augmentation:
    """The same pipeline with every transform applied (DeepLabCut fixes some p at 0.5)."""
    for t in pipeline.transforms:
        t.p = 1.0
    return pipeline


# (name, config section, tolerance in px). Tolerances hold the blob-centroid error of
# interpolation; a pixel-convention slip in the flip (1 px) exceeds them. Resizing keeps
# albumentations' x * s (DeepLabCut's, and what inference divides by to map keypoints back),
# 0.5 * |s - 1| px from the exact index mapping: up to 0.33 px more for the scales below.
GEOMETRIC = [
    ("affine", {"affine": {"p": 1.0, "rotation": 40, "scaling": [0.6, 1.4],
                           "translation": 10}}, 0.35),
    ("hflip", {"hflip": {"p": 1.0, "symmetries": []}}, 0.35),
    ("resize_keep_ratio", {"resize": {"height": 50, "width": 70, "keep_ratio": True}}, 0.75),
    ("resize", {"resize": {"height": 150, "width": 60, "keep_ratio": False}}, 0.6),
    ("longest_max_size", {"longest_max_size": 200}, 0.6),
    ("crop_sampling", {"crop_sampling": {"width": 64, "height": 48, "max_shift": 0.2,
                                         "method": "hybrid"}}, 0.35),
    ("crop_sampling_pads", {"crop_sampling": {"width": 200, "height": 150, "max_shift": 0.1,
                                              "method": "uniform"}}, 0.35),
    ("auto_padding", {"auto_padding": {"pad_height_divisor": 64, "pad_width_divisor": 64}}, 0.35),
    ("elastic_transform", {"elastic_transform": True}, 0.75),
]
# Image-only transforms: keypoints must not move, and the blob must not either.
IMAGE_ONLY = [
    ("motion_blur", {"motion_blur": True}, 0.35),
    ("hist_eq", {"hist_eq": True}, 0.35),
    ("grayscale", {"grayscale": True}, 0.35),
    ("gaussian_noise", {"gaussian_noise": 12.75}, 0.6),
    ("normalize_images", {"normalize_images": True}, 0.35),
    ("scale_to_unit_range", {"scale_to_unit_range": True}, 0.35),
]


@pytest.mark.parametrize("name,section,tol", GEOMETRIC + IMAGE_ONLY,
                         ids=[c[0] for c in GEOMETRIC + IMAGE_ONLY])
def test_keypoint_stays_on_its_dot(name, section, tol):
    pipeline = always(build_transforms(section))
    assert len(pipeline) >= 1
    rng = np.random.default_rng(0)
    checked = 0
    for trial in range(12):
        x, y = rng.uniform(30, 90), rng.uniform(25, 70)
        image = dot_image(x, y)
        out, kps = pipeline(image, [np.array([[[x, y, 2.0]]], np.float32)],
                            np.random.default_rng(trial))
        kx, ky, vis = kps[0][0, 0]
        if (name, section) in [(c[0], c[1]) for c in IMAGE_ONLY]:
            assert (kx, ky, vis) == (np.float32(x), np.float32(y), 2.0), name
        if vis == 0:
            assert not (0 <= kx < out.shape[1] and 0 <= ky < out.shape[0])
            continue
        if not (5 <= kx < out.shape[1] - 5 and 5 <= ky < out.shape[0] - 5):
            continue  # the blob is cut by the border: its centroid is not its centre
        np.testing.assert_allclose(blob_centre(out, kx, ky), (kx, ky), atol=tol,
                                   err_msg=f"{name}, trial {trial}")
        checked += 1
    assert checked >= 6, f"{name}: only {checked} keypoints could be checked"


def test_flip_swaps_symmetric_bodyparts_of_every_individual():
    # Two animals, bodyparts (snout, leftear, rightear), one unique bodypart.
    pipeline = build_transforms({"hflip": {"p": 1.0, "symmetries": [["leftear", "rightear"]]}},
                                bodyparts=["snout", "leftear", "rightear"])
    kps = np.array([[[50, 10, 2], [40, 20, 2], [60, 20, 2]],
                    [[20, 70, 2], [10, 80, 2], [30, 80, 1]]], np.float32)
    unique = np.array([[7, 7, 2]], np.float32)
    image = np.zeros((H, W, 3), np.uint8)
    _, (out, out_unique) = pipeline(image, [kps, unique], np.random.default_rng(0))
    expected = kps[:, [0, 2, 1]].copy()  # left and right exchange their labels
    expected[..., 0] = W - 1 - expected[..., 0]
    np.testing.assert_allclose(out, expected)
    np.testing.assert_allclose(out_unique, [[W - 1 - 7, 7, 2]])


def test_keypoints_under_a_covering_hole_become_unlabeled():
    pipeline = always(build_transforms({"covering": True}))
    image = np.full((H, W, 3), 200, np.uint8)
    yy, xx = np.mgrid[2:H:4, 2:W:4] + 0.5
    kps = np.stack([xx.ravel(), yy.ravel(), np.full(xx.size, 2.0)], -1)[None].astype(np.float32)
    covered = 0
    for seed in range(5):
        out, (res,) = pipeline(image, [kps], np.random.default_rng(seed))
        under = out[kps[0, :, 1].astype(int), kps[0, :, 0].astype(int), 0] == 0
        np.testing.assert_array_equal(res[0, :, 2] == 0, under)
        covered += under.sum()
    assert covered > 0  # the holes did cover keypoints


def test_leaving_the_image_makes_a_keypoint_invisible_and_keeps_unlabeled_ones_unlabeled():
    pipeline = build_transforms({"crop_sampling": {"width": 40, "height": 40, "max_shift": 0.1,
                                                   "method": "keypoints"}})
    kps = np.array([[[5, 5, 2], [95, 90, 2], [0, 0, 0], [-3, 10, 2]]], np.float32)
    image = np.zeros((H, W, 3), np.uint8)
    for seed in range(10):
        _, (res,) = pipeline(image, [kps], np.random.default_rng(seed))
        inside = ((res[0, :, :2] >= 0) & (res[0, :, :2] < 40)).all(1)
        np.testing.assert_array_equal(res[0, :2, 2] > 0, inside[:2])
        assert res[0, 2, 2] == 0 and res[0, 3, 2] == 0  # unlabeled; outside the input image
        # DeepLabCut's guarantee: the crop is placed around a labeled keypoint.
        assert inside[:2].any()
    assert kps[0, 0, 2] == 2  # the input is not modified


def test_density_sampling_prefers_crowded_keypoints():
    kps = np.array([[[20, 20, 2], [22, 21, 2], [21, 23, 2], [100, 80, 2]]], np.float32)
    image = np.zeros((H, W, 3), np.uint8)

    def isolated_kept(method: str) -> int:
        pipeline = build_transforms({"crop_sampling": {"width": 24, "height": 24,
                                                       "max_shift": 0.0, "method": method}})
        return sum(pipeline(image, [kps], np.random.default_rng(s))[1][0][0, 3, 2] > 0
                   for s in range(200))

    # Weights 1 + neighbours: 3 for each clustered keypoint, 1 for the isolated one (1 in 10),
    # against 1 in 4 when every keypoint weighs the same.
    density, uniform_over_keypoints = isolated_kept("density"), isolated_kept("keypoints")
    assert 8 <= density <= 35 and 30 <= uniform_over_keypoints <= 75
    assert density < uniform_over_keypoints


def test_gaussian_noise_draws_the_variance_uniformly_as_deeplabcut():
    noise = dlc.GaussianNoise(std=12.75, p=1.0)
    pipeline = Augmentation([noise])
    grey = np.full((64, 64, 3), 128, np.uint8)
    variances = []
    for seed in range(300):
        out, _ = pipeline(grey, [], np.random.default_rng(seed))
        assert out.dtype == np.uint8
        variances.append(np.var(noise.params["noise_map"]))  # the noise added, in pixel values
    # Variance uniform in [0, 12.75**2]: mean and median 81.3; a uniform standard deviation
    # (albumentations 2's law) would give a mean of 54.2 and a median of 40.6.
    assert np.mean(variances) == pytest.approx(12.75 ** 2 / 2, rel=0.1)
    assert np.median(variances) == pytest.approx(12.75 ** 2 / 2, rel=0.15)
    assert max(variances) <= 12.75 ** 2 * 1.1


def test_boxes_follow_the_image_and_the_bbox_jitter_moves_boxes_only():
    image = dot_image(30, 40)
    boxes = np.array([[20, 30, 20, 20], [0, 0, 0, 0]], np.float64)
    flip = build_transforms({"hflip": {"p": 1.0, "symmetries": []}})
    out = flip.apply(image, [np.array([[[30, 40, 2]]], np.float32)], np.random.default_rng(0),
                     bboxes=boxes)
    np.testing.assert_allclose(out.bboxes[0], [W - 40, 30, 20, 20], atol=1e-6)
    np.testing.assert_array_equal(out.bboxes[1], 0)  # an empty box stays empty
    jitter = build_transforms({"random_bbox_transform": {"shift_prob": 1.0}})
    moved = jitter.apply(image, [np.array([[[30, 40, 2]]], np.float32)],
                         np.random.default_rng(1), bboxes=boxes[:1])
    np.testing.assert_array_equal(moved.image, image)
    np.testing.assert_array_equal(moved.keypoints[0], [[[30, 40, 2]]])
    assert not np.allclose(moved.bboxes[0], boxes[0])
    x, y, w, h = moved.bboxes[0]
    assert 0 <= x and 0 <= y and x + w <= W + 1e-6 and y + h <= H + 1e-6


def test_transforms_draw_from_one_stream():
    # Two flips with p=0.5: with correlated draws they would always cancel out.
    pipeline = Augmentation([dlc.SymmetricHFlip([], p=0.5), dlc.SymmetricHFlip([], p=0.5)])
    kps = [np.array([[[10, 10, 2]]], np.float32)]
    image = np.zeros((H, W, 3), np.uint8)
    xs = {float(pipeline(image, kps, np.random.default_rng(s))[1][0][0, 0, 0]) for s in range(40)}
    assert xs == {10.0, W - 1 - 10.0}
