"""Top-down training data: crops that carry their keypoints, detector boxes, CTD conditions, box
mAP, and a top-down pose model whose loss falls on a fixed batch of crops.

Images are drawn here with a bright blob on each keypoint, so where a keypoint lands in a crop
can be read off the crop's pixels.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dlc_train.config import ConfigError, make_pytorch_pose_config
from dlc_train.data.base import Loader
from dlc_train.data.generative_sampling import GenerativeSampler
from dlc_train.data.top_down import CropSettings, bbox_from_keypoints, top_down_crop
from dlc_train.data.transforms import build_transforms
from dlc_train.runners.detector import box_map
from dlc_train.task import Task

pytestmark = pytest.mark.usefixtures("one_thread")

BODYPARTS = ["a", "b", "c"]
# Two animals per image; the third keypoint of the second animal is unlabeled in image 1.
KEYPOINTS = [np.array([[[30, 20, 2], [50, 35, 2], [40, 60, 2]],
                       [[110, 70, 2], [130, 90, 2], [120, 100, 2]]], np.float32),
             np.array([[[5, 5, 2], [25, 12, 2], [15, 30, 2]],
                       [[100, 40, 2], [140, 44, 2], [0, 0, 0]]], np.float32)]


def blob_image(keypoints: np.ndarray, size: tuple[int, int] = (120, 160)) -> np.ndarray:
    """Black (H, W, 3) uint8 image with a white 3x3 blob centred on each labeled keypoint
    (keypoint x, y in continuous pixels: the blob's centre pixel is int(x), int(y))."""
    image = np.zeros(size + (3,), np.uint8)
    for x, y, v in keypoints.reshape(-1, 3):
        if v > 0:
            image[int(y) - 1:int(y) + 2, int(x) - 1:int(x) + 2] = 255
    return image


def blob_centre(image: np.ndarray, near: np.ndarray, radius: float = 6) -> np.ndarray:
    """Intensity centroid (continuous pixels: pixel i's centre is i + 0.5) around ``near``."""
    gray = image.astype(np.float64).mean(axis=-1)
    ys, xs = np.mgrid[0:gray.shape[0], 0:gray.shape[1]]
    mask = (np.hypot(xs + 0.5 - near[0], ys + 0.5 - near[1]) < radius) & (gray > 20)
    w = gray * mask
    return np.array([(w * (xs + 0.5)).sum(), (w * (ys + 0.5)).sum()]) / w.sum()


class BlobLoader(Loader):
    """Two blob images (KEYPOINTS) written to ``folder``; the same two for train and test."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.paths = []
        for i, kps in enumerate(KEYPOINTS):
            path = folder / f"img{i}.png"
            # Blob centres sit on pixel centres: keypoint (x, y) -> pixel (int(x), int(y)).
            cv2.imwrite(str(path), blob_image(kps + np.array([0.5, 0.5, 0], np.float32)))
            self.paths.append(str(path))

    bodyparts = property(lambda self: list(BODYPARTS))
    individuals = property(lambda self: ["m1", "m2"])
    pose_config_path = property(lambda self: self.folder / "train" / "pytorch_config.yaml")

    def samples(self, mode: str = "train"):
        return [(p, (k + np.array([0.5, 0.5, 0], np.float32)) * (k[..., 2:] > 0))
                for p, k in zip(self.paths, KEYPOINTS)]


def _config(crop: int = 64, margin: int = 10) -> dict:
    project = {"multianimalproject": True, "multianimalbodyparts": BODYPARTS,
               "individuals": ["m1", "m2"], "uniquebodyparts": [], "project_path": "/tmp/x"}
    cfg = make_pytorch_pose_config(project, "/tmp/x/pytorch_config.yaml", "top_down_resnet_tiny")
    cfg["data"]["bbox_margin"] = margin
    for section in ("train", "inference"):
        cfg["data"][section] = {"normalize_images": True,
                                "top_down_crop": {"width": crop, "height": crop}}
    cfg["model"]["backbone"]["pretrained"] = False
    return cfg


# -- the crop ---------------------------------------------------------------------------------

@pytest.mark.parametrize("box,size,with_context", [
    ((20, 10, 40, 40), (40, 40), True),     # scale 1
    ((20, 10, 40, 40), (80, 80), True),     # upscaled x2
    ((-15, 30, 60, 30), (64, 48), True),    # across the left border, widened to 4:3
    ((10, 10, 60, 30), (64, 64), False),    # no context: zero-padded to a square
])
def test_crop_carries_known_points(box, size, with_context):
    points = np.array([[35.5, 25.5, 1], [50.5, 40.5, 1], [25.5, 45.5, 1], [8.5, 50.5, 1]])
    image = blob_image(points)
    crop, offset, scale = top_down_crop(image, box, size, 0, with_context)
    assert crop.shape == (size[1], size[0], 3)
    for x, y, _ in points:
        cx, cy = (x - offset[0]) / scale[0], (y - offset[1]) / scale[1]
        inside_box = box[0] <= x < box[0] + box[2] and box[1] <= y < box[1] + box[3]
        if 2 < cx < size[0] - 2 and 2 < cy < size[1] - 2 and (with_context or inside_box):
            np.testing.assert_allclose(blob_centre(crop, (cx, cy)), (cx, cy), atol=0.35)


def test_training_crop_is_the_exported_graphs_reference_crop():
    """The crops the model trains on are those the bundle's reference crops take at inference
    (top-down with context, CTD without), over random boxes, margins and output sizes."""
    from dlc_export.tasks.ctd_graph import deeplabcut_ctd_crop
    from dlc_export.tasks.top_down_graph import deeplabcut_crop

    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, (90, 120, 3)).astype(np.float32)
    for _ in range(20):
        x, y = rng.uniform(-20, 110), rng.uniform(-20, 80)
        box = np.array([x, y, rng.uniform(4, 60), rng.uniform(4, 60)])
        size, margin = (int(rng.integers(16, 64)), int(rng.integers(16, 64))), int(rng.integers(4))
        ours = top_down_crop(image, box, size, margin, with_context=True)
        xyxy = np.r_[box[:2], box[:2] + box[2:]]
        ref = deeplabcut_crop(image, xyxy, size[0], size[1], margin)
        np.testing.assert_allclose(ours[0], ref[0], atol=1e-3)
        assert ours[1:] == ref[1:]
        inside = np.clip(box, 0, None)  # CTD boxes come clipped to the frame
        ours = top_down_crop(image, inside, (48, 48), margin, with_context=False)
        ref = deeplabcut_ctd_crop(image, inside, 48, 48, margin, with_context=False)
        np.testing.assert_allclose(ours[0], ref[0], atol=1e-3)
        assert ours[1:] == ref[1:]


def test_crop_margin_and_padding():
    image = np.full((50, 60, 3), 200, np.uint8)
    crop, offset, scale = top_down_crop(image, (0, 0, 20, 20), (32, 32), margin=5)
    assert offset == (-5.0, -5.0) and scale == (30 / 32, 30 / 32)
    assert crop[0, 0].tolist() == [0, 0, 0] and crop[-1, -1].tolist() == [200, 200, 200]


def test_bbox_from_keypoints_margin_clip_and_unlabeled():
    boxes = bbox_from_keypoints(KEYPOINTS[1], 120, 160, margin=10)
    np.testing.assert_allclose(boxes[0], [0, 0, 35, 40])         # clipped at 0
    np.testing.assert_allclose(boxes[1], [90, 30, 60, 24])       # unlabeled point ignored
    assert bbox_from_keypoints(np.zeros((1, 3, 3)), 120, 160, 10).tolist() == [[0, 0, 0, 0]]


def test_crop_settings_from_config():
    assert CropSettings.from_config(None) == CropSettings(256, 256, 0, True)
    assert not CropSettings.from_config({"width": 64}, with_context_default=False).with_context
    with pytest.raises(ConfigError, match="top_down_crop has no option 'pad'"):
        CropSettings.from_config({"pad": 3})


# -- datasets -------------------------------------------------------------------------------------

@pytest.mark.parametrize("jitter", [False, True])
def test_top_down_items_carry_keypoints(tmp_path, jitter):
    """Each labeled individual is one item; every visible keypoint of the crop sits on its
    blob, also when random_bbox_transform moves and scales the box."""
    loader = BlobLoader(tmp_path)
    cfg = _config(crop=48)
    before = {"random_bbox_transform": {"shift_prob": 1.0}} if jitter else {}
    dataset = loader.create_dataset(build_transforms(before), "train", Task.TOP_DOWN, seed=3,
                                    config=cfg)
    assert len(dataset) == 4
    for epoch in (1, 2):
        dataset.set_epoch(epoch)
        for index in range(len(dataset)):
            item = dataset[index]
            assert item["image"].shape == (3, 48, 48)
            kps = item["annotations"]["keypoints"].numpy()
            assert kps.shape == (1, 3, 3)
            image = item["image"].numpy().transpose(1, 2, 0)
            for x, y, v in kps[0]:
                if v > 0 and 2 < x < 46 and 2 < y < 46:
                    np.testing.assert_allclose(blob_centre(image, (x, y)), (x, y), atol=0.6)
            i, n = dataset.items[index]
            frame = KEYPOINTS[i][n] + np.array([0.5, 0.5, 0])
            offsets, scales = item["offsets"].numpy(), item["scales"].numpy()
            shown = kps[0, :, 2] > 0
            np.testing.assert_allclose(kps[0, shown, :2] * scales + offsets,
                                       frame[shown, :2], atol=1e-3)


def test_top_down_crop_is_normalized_after_cropping(tmp_path):
    """Padding outside the image is black, normalized (as at inference), not the mean colour."""
    loader = BlobLoader(tmp_path)
    dataset = loader.create_dataset(None, "test", Task.TOP_DOWN, config=_config(crop=48),
                                    after_crop=build_transforms({"normalize_images": True}))
    assert dataset[0]["image"].shape == (3, 48, 48)  # data.inference's crop
    corner = dataset[2]["image"][:, 0, 0]  # image 1, animal 1: its box is clipped at (0, 0)
    black = -np.array([0.485, 0.456, 0.406]) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(corner.numpy(), black, atol=1e-5)


def test_detection_items(tmp_path):
    loader = BlobLoader(tmp_path)
    dataset = loader.create_dataset(None, "train", Task.DETECT, config=_config(margin=4))
    ann = dataset[1]["annotations"]
    np.testing.assert_allclose(ann["boxes"].numpy(), [[1.5, 1.5, 28, 33], [96.5, 36.5, 48, 12]])
    assert ann["labels"].tolist() == [1, 1] and dataset[1]["image"].shape == (3, 120, 160)
    flipped = loader.create_dataset(build_transforms({"hflip": {"p": 1.0}}), "train",
                                    Task.DETECT, config=_config(margin=4))[1]["annotations"]
    np.testing.assert_allclose(flipped["boxes"][0].numpy(), [160 - 29.5, 1.5, 28, 33])


def test_resize_collate_moves_keypoints_and_boxes(tmp_path):
    """The detectors' ResizeFromDataSizeCollate: one size per batch (multiple of 32), each blob
    still under its keypoint, each visible keypoint inside its animal's box."""
    from dlc_train.data.collate import build_collate

    loader = BlobLoader(tmp_path)
    dataset = loader.create_dataset(None, "train", Task.DETECT, config=_config(margin=4))
    spec = {"type": "ResizeFromDataSizeCollate", "min_scale": 0.5, "max_scale": 1.5,
            "min_short_side": 32, "max_short_side": 400, "multiple_of": 32, "max_shift": 10}
    collate_fn = build_collate(spec, seed=1)
    for _ in range(4):
        batch = collate_fn([dataset[0], dataset[1]])
        _, _, h, w = batch["image"].shape
        assert h % 32 == 0 and w % 32 == 0
        for image, kps, boxes in zip(batch["image"], batch["annotations"]["keypoints"],
                                     batch["annotations"]["boxes"]):
            image = image.numpy().transpose(1, 2, 0)
            for animal, box in zip(kps.numpy(), boxes.numpy()):
                for x, y, v in animal:
                    if v > 0 and 3 < x < w - 3 and 3 < y < h - 3:
                        np.testing.assert_allclose(blob_centre(image, (x, y), 4), (x, y),
                                                   atol=0.75)
                        assert box[0] <= x <= box[0] + box[2] and box[1] <= y <= box[1] + box[3]
    with pytest.raises(ConfigError, match="collate type 'Resize' is not known"):
        build_collate({"type": "Resize"})
    with pytest.raises(ConfigError, match="ResizeFromListCollate: .*scale"):
        build_collate({"type": "ResizeFromListCollate", "scale": [64]})


# -- CTD conditions ---------------------------------------------------------------------------

def test_generative_sampler_kinds_and_seeding():
    gt = KEYPOINTS[0][0].astype(np.float64)
    near = KEYPOINTS[0][1:].astype(np.float64)
    good = GenerativeSampler(3, jitter_prob=0, swap_prob=0, inv_prob=0, miss_prob=0)
    out = good(gt, near, 400.0, (120, 160), np.random.default_rng(0))
    assert np.all(np.hypot(*(out[:, :2] - gt[:, :2]).T) <= good.distance(0.85, 400.0))
    assert out[:, 2].tolist() == [2, 2, 2]
    swap = GenerativeSampler(3, jitter_prob=0, swap_prob=1, inv_prob=0, miss_prob=0,
                             keypoints_symmetry=[(0, 1)])
    out = swap(gt, near, 400.0, (120, 160), np.random.default_rng(1))
    assert np.all(np.hypot(*(out[:, :2] - near[0, :, :2]).T).min() < swap.distance(0.5, 400))
    unlabeled = gt.copy()
    unlabeled[1, 2] = 0
    a = good(unlabeled, near, 400.0, (120, 160), np.random.default_rng(5))
    b = good(unlabeled, near, 400.0, (120, 160), np.random.default_rng(5))
    assert a[1].tolist() == [0, 0, 0] and np.array_equal(a, b)
    with pytest.raises(ConfigError, match="data.gen_sampling has no key 'jiter_prob'"):
        GenerativeSampler.from_config({"jiter_prob": 0.1}, 3)


def test_ctd_items_carry_conditions_in_crop_pixels(tmp_path):
    loader = BlobLoader(tmp_path)
    cfg = _config(crop=48)
    cfg["data"]["gen_sampling"] = {"jitter_prob": 0.0, "swap_prob": 0.0, "inv_prob": 0.0,
                                   "miss_prob": 0.0, "keypoint_sigmas": 0.01}
    dataset = loader.create_dataset(None, "train", Task.COND_TOP_DOWN, config=cfg)
    item = dataset[0]
    cond, kps = item["annotations"]["cond_keypoints"].numpy(), item["annotations"]["keypoints"]
    assert cond.shape == (3, 3) and np.all(cond[:, 2] == 2)
    # "good" conditions only, tiny sigmas: within a pixel of the truth, in crop pixels too.
    np.testing.assert_allclose(cond[:, :2], kps[0, :, :2].numpy(), atol=1.0)


# -- box mAP -----------------------------------------------------------------------------------

def test_box_map():
    gts = [np.array([[0, 0, 10, 10], [20, 20, 40, 40.]]), np.zeros((0, 4))]
    perfect = [(gts[0], np.array([0.9, 0.8])), (np.zeros((0, 4)), np.zeros(0))]
    assert box_map(gts, perfect)["mAP@50:95"] == pytest.approx(100)
    shifted = [(gts[0] + [[2, 0, 2, 0], [0, 0, 0, 0]],
                np.array([0.9, 0.8])), (np.array([[50, 50, 60, 60.]]), np.array([0.95]))]
    result = box_map(gts, shifted)
    assert 0 < result["mAP@75"] < result["mAP@50"] < 100
    assert box_map(gts, [(np.zeros((0, 4)), np.zeros(0))] * 2)["mAP@50"] == 0


# -- a top-down pose model learns from the crops -------------------------------------------------

def test_top_down_pose_loss_falls_on_a_fixed_batch(tmp_path):
    from dlc_train.data.dataset import collate
    from dlc_train.models.model import PoseModel

    loader = BlobLoader(tmp_path)
    cfg = _config(crop=64)
    dataset = loader.create_dataset(None, "train", Task.TOP_DOWN, config=cfg,
                                    after_crop=build_transforms({"normalize_images": True}))
    batch = collate([dataset[i] for i in range(len(dataset))])
    torch.manual_seed(0)
    model = PoseModel.build(cfg["model"]).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        outputs = model(batch["image"])
        loss = model.get_loss(outputs, model.get_target(outputs, batch["annotations"]))
        optimizer.zero_grad()
        loss["total_loss"].backward()
        optimizer.step()
        losses.append(float(loss["total_loss"].detach()))
    assert losses[-1] < 0.7 * losses[0], losses


def test_ctd_model_trains_on_generated_conditions(tmp_path):
    """train(loader) on a conditional top-down config: the conditions reach the model (a
    CondPreNet around resnet_tiny) and the snapshot holds its condition pre-network."""
    from dlc_train.apis import train

    loader = BlobLoader(tmp_path)
    cfg = _config(crop=64)
    backbone = cfg["model"]["backbone"]
    cfg["model"]["backbone"] = {"type": "CondPreNet", "backbone": backbone, "img_size": [64, 64],
                                "kpt_encoder": {"type": "StackedKeypointEncoder",
                                                "num_joints": 3, "kernel_size": [15, 15]}}
    cfg.update(method="ctd", detector=None)
    cfg["data"]["gen_sampling"] = {"jitter_prob": 0.5}
    cfg["train_settings"].update(epochs=1, batch_size=2)
    folder = train(loader, cfg, device="cpu")
    state = torch.load(folder / "snapshot-001.pt", weights_only=True)["model"]
    assert any(k.startswith("backbone.cond_preNet.") for k in state)
