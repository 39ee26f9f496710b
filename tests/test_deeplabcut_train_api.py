"""dlc_train.deeplabcut_api: DeepLabCut 3's training names, used as a DeepLabCut script uses them."""
from __future__ import annotations

import numpy as np
import pytest

import dlc_train.deeplabcut_api as dlc
from dlc_train.synthetic import SyntheticSpec, generate_project


def test_every_name_deeplabcut_exports_is_here():
    # deeplabcut.pose_estimation_pytorch's training-side names, plus train and build_transforms.
    for name in ("COCOLoader", "DLCLoader", "Loader", "PoseDataset", "Task",
                 "available_detectors", "available_models", "evaluate_network", "fix_seeds",
                 "train_network", "train", "build_transforms", "PoseTrainingRunner"):
        assert getattr(dlc, name) is not None, name
    assert {"resnet_50", "cspnext_s", "hrnet_w32"} <= set(dlc.available_models())
    assert "ssdlite" in dlc.available_detectors()
    assert {t.name for t in dlc.Task} >= {"BOTTOM_UP", "TOP_DOWN", "COND_TOP_DOWN"}


def test_a_deeplabcut_style_loader_script_runs(tmp_path):
    spec = SyntheticSpec(seed=0, width=64, height=48, num_labeled_frames=6, num_video_frames=1,
                         body_length=0.3, net_type="resnet_tiny")
    config = generate_project(tmp_path, spec).config_path
    loader = dlc.DLCLoader(config, 0, 1)   # DeepLabCut's positional order
    transform = dlc.build_transforms({"hflip": {"p": 1.0, "symmetries": None},
                                      "normalize_images": False}, loader.bodyparts)
    dataset = loader.create_dataset(transform, mode="train", task=dlc.Task.BOTTOM_UP)
    assert isinstance(dataset, dlc.PoseDataset) and len(dataset) == len(loader.train_images)
    item = dataset[0]
    raw = loader.create_dataset(None, mode="train", task=dlc.Task.BOTTOM_UP)[0]
    # The flip mirrored every labeled keypoint about one vertical axis (the pixel convention
    # of that axis is tests/test_augmentation.py's business) and left y alone.
    flipped, plain = item["annotations"]["keypoints"][0], raw["annotations"]["keypoints"][0]
    seen = plain[:, 2] > 0
    assert seen.sum() >= 2
    mirror = (flipped[seen, 0] + plain[seen, 0]).numpy()
    np.testing.assert_allclose(mirror, mirror[0], atol=1e-3)
    assert abs(mirror[0] - spec.width) <= 1
    np.testing.assert_allclose(flipped[seen, 1], plain[seen, 1])
    np.testing.assert_allclose(item["image"].numpy(), raw["image"].numpy()[:, :, ::-1])
    with pytest.raises(ValueError, match="unknown mode"):
        loader.create_dataset(transform, mode="val")
