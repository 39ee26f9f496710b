"""Synthetic DeepLabCut project generator: determinism, file layout, keypoint placement, video."""
from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from dlc_train.synthetic import (BODYPARTS, AnimalPose, SyntheticSpec, generate_project,
                                 keypoints, load_ground_truth)
from dlc_train.synthetic.motion import inside, sample_frame_poses
from dlc_train.synthetic.project import _streams
from dlc_train.synthetic.render import (animal_masks, draw_animals, make_background,
                                        sample_appearance)
from helpers.frames import read_video_frames

SMALL = dict(width=128, height=96, num_labeled_frames=6, num_video_frames=20, fps=30)


def _digest(project_dir: Path, pattern: str) -> dict[str, str]:
    return {p.relative_to(project_dir).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(project_dir.rglob(pattern))}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return generate_project(tmp_path_factory.mktemp("a"), SyntheticSpec(seed=3, **SMALL))


def test_same_seed_is_byte_identical(project, tmp_path):
    other = generate_project(tmp_path, SyntheticSpec(seed=3, **SMALL))
    for pattern in ("*.png", "*.csv"):
        a, b = _digest(project.project_dir, pattern), _digest(other.project_dir, pattern)
        assert a and a == b, pattern
    np.testing.assert_array_equal(load_ground_truth(project.ground_truth_path),
                                  load_ground_truth(other.ground_truth_path))
    pd.testing.assert_frame_equal(pd.read_hdf(project.labels_h5), pd.read_hdf(other.labels_h5))


def test_different_seed_differs(project, tmp_path):
    other = generate_project(tmp_path, SyntheticSpec(seed=4, **SMALL))
    a, b = _digest(project.project_dir, "*.png"), _digest(other.project_dir, "*.png")
    assert a.keys() == b.keys() and all(a[k] != b[k] for k in a)
    assert not np.allclose(load_ground_truth(project.ground_truth_path),
                           load_ground_truth(other.ground_truth_path), equal_nan=True)


def test_labels_in_deeplabcut_layout(project):
    spec = SyntheticSpec(seed=3, **SMALL)
    df = pd.read_hdf(project.labels_h5, key="df_with_missing")
    assert df.columns.names == ["scorer", "bodyparts", "coords"]
    assert list(df.columns.get_level_values("scorer").unique()) == ["synth"]
    assert list(df.columns.get_level_values("bodyparts").unique()) == list(BODYPARTS)
    assert list(df.columns.get_level_values("coords").unique()) == ["x", "y"]
    assert df.shape == (spec.num_labeled_frames, 2 * len(BODYPARTS))
    assert df.index[0] == "labeled-data/synthmouse/img0000.png"
    assert all((project.project_dir / p).is_file() for p in df.index)
    assert df.dtypes.eq(np.float64).all()
    csv = pd.read_csv(project.labels_csv, header=[0, 1, 2], index_col=0)
    pd.testing.assert_frame_equal(csv, df, check_names=False, check_index_type=False)
    assert csv.columns.equals(df.columns)
    lines = project.labels_csv.read_text().splitlines()
    assert [line.split(",")[0] for line in lines[:4]] == [
        "scorer", "bodyparts", "coords", "labeled-data/synthmouse/img0000.png"]


def test_config_yaml(project):
    cfg = yaml.safe_load(project.config_path.read_text())
    real = Path(__file__).resolve().parents[2] / "shared/data/openfield-Pranav-2018-10-30/config.yaml"
    if real.is_file():   # same keys as a real DeepLabCut project, in the same order
        real_keys = list(yaml.safe_load(real.read_text()))
        assert [k for k in cfg if k in real_keys] == real_keys
    assert cfg["project_path"] == str(project.project_dir)
    assert Path(cfg["project_path"]).is_absolute()
    assert cfg["bodyparts"] == list(BODYPARTS) and cfg["multianimalproject"] is False
    assert cfg["video_sets"] == {str(project.video_path): {"crop": "0, 128, 0, 96"}}
    assert cfg["TrainingFraction"] == [0.95] and cfg["iteration"] == 0
    assert all(a in BODYPARTS and b in BODYPARTS for a, b in cfg["skeleton"])


def test_video_frames_and_ground_truth(project):
    frames = read_video_frames(project.video_path)
    assert len(frames) == SMALL["num_video_frames"]
    assert frames[0].shape == (SMALL["height"], SMALL["width"], 3)
    truth = load_ground_truth(project.ground_truth_path)
    assert truth.shape == (SMALL["num_video_frames"], 1, len(BODYPARTS), 2)
    visible = np.isfinite(truth)
    assert visible[:, :, :4].all()   # only the tail tip may leave a frame this short
    assert inside(truth[visible.all(-1)], SMALL["width"], SMALL["height"]).all()
    # The animal moves smoothly: no keypoint jumps more than a fraction of the body length.
    step = np.linalg.norm(np.diff(truth[:, 0, :4], axis=0), axis=-1)
    assert step.max() < 0.4 * SyntheticSpec(**SMALL).length_px
    assert step.mean() > 0.05   # and it does move


def test_video_matches_rendered_keypoints(project):
    # The decoded frame is darker at the snout (dark animal, light floor) than the median floor.
    cap = cv2.VideoCapture(str(project.video_path))
    ok, frame = cap.read()
    cap.release()
    assert ok
    x, y = np.rint(load_ground_truth(project.ground_truth_path)[0, 0, 0]).astype(int)
    gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY).astype(float)
    assert gray[y, x] < np.median(gray) - 30


def test_labeled_keypoints_lie_on_the_drawn_animal():
    spec = SyntheticSpec(seed=11, **SMALL)
    rngs = _streams(spec.seed)
    look = sample_appearance(rngs["background"])
    bg = make_background(rngs["background"], spec.width, spec.height, look)
    for _ in range(20):
        poses = sample_frame_poses(rngs["labeled"], spec, look)
        img = bg.copy()
        kps = draw_animals(img, poses)
        mask = animal_masks(poses, spec.width, spec.height)[0]
        assert inside(kps, spec.width, spec.height).all()
        for x, y in np.rint(kps[0]).astype(int):
            assert mask[y, x]
            assert np.abs(img[y, x].astype(int) - bg[y, x].astype(int)).sum() > 30
        assert 0.01 < mask.mean() < 0.3   # the animal is a reasonable part of the frame


def test_keypoint_geometry():
    # Facing +x (heading 0) seen from above with y down: the left ear is at smaller y.
    p = AnimalPose(x=100.0, y=80.0, heading=0.0, length=60.0)
    k = dict(zip(BODYPARTS, keypoints(p)))
    assert k["snout"][0] > k["leftear"][0] > k["tailbase"][0] > k["tailtip"][0]
    assert k["leftear"][1] < 80.0 < k["rightear"][1]
    assert np.linalg.norm(k["snout"] - k["tailbase"]) == pytest.approx(0.99 * 60.0)
    # Rotation by 90 degrees rotates every keypoint about the centre.
    q = keypoints(AnimalPose(x=100.0, y=80.0, heading=np.pi / 2, length=60.0))
    rel = keypoints(p) - [100.0, 80.0]
    np.testing.assert_allclose(q - [100.0, 80.0], np.stack([-rel[:, 1], rel[:, 0]], 1), atol=1e-9)


def test_labeled_frames_cover_all_headings():
    spec = SyntheticSpec(seed=0, width=256, height=192, num_labeled_frames=60)
    rngs = _streams(spec.seed)
    look = sample_appearance(rngs["background"])
    poses = [sample_frame_poses(rngs["labeled"], spec, look)[0] for _ in range(60)]
    quadrants = {int((p.heading + np.pi) // (np.pi / 2)) % 4 for p in poses}
    assert quadrants == {0, 1, 2, 3}
    lengths = [p.length / spec.length_px for p in poses]
    assert 0.85 <= min(lengths) < 0.95 and 1.05 < max(lengths) <= 1.15   # +-15 % scale


def test_multi_animal_layout(tmp_path):
    spec = SyntheticSpec(seed=1, width=192, height=160, num_labeled_frames=3, num_video_frames=8,
                         num_animals=2, body_length=0.2)
    paths = generate_project(tmp_path, spec)
    df = pd.read_hdf(paths.labels_h5, key="df_with_missing")
    assert df.columns.names == ["scorer", "individuals", "bodyparts", "coords"]
    assert list(df.columns.get_level_values("individuals").unique()) == ["mouse1", "mouse2"]
    csv = pd.read_csv(paths.labels_csv, header=[0, 1, 2, 3], index_col=0)
    pd.testing.assert_frame_equal(csv, df, check_names=False, check_index_type=False)
    cfg = yaml.safe_load(paths.config_path.read_text())
    assert cfg["multianimalproject"] is True and cfg["bodyparts"] == "MULTI!"
    assert cfg["individuals"] == ["mouse1", "mouse2"]
    assert cfg["multianimalbodyparts"] == list(BODYPARTS) and cfg["uniquebodyparts"] == []
    assert load_ground_truth(paths.ground_truth_path).shape == (8, 2, len(BODYPARTS), 2)


def test_bad_specs_raise():
    with pytest.raises(ValueError):
        SyntheticSpec(num_animals=0)
    with pytest.raises(ValueError):
        SyntheticSpec(num_animals=6, width=128, height=96)   # no room
    with pytest.raises(ValueError):
        SyntheticSpec(video_stem="a/b")


def test_refuses_to_overwrite(project):
    with pytest.raises(FileExistsError):
        generate_project(project.project_dir.parent, SyntheticSpec(seed=3, **SMALL))
