"""Crowded labeled frames: animals touching, overlapping or partly outside the frame.

The tracking scenario's video has animals in contact, covering each other and leaving the
frame; a DeepLabCut user labels such frames too, so the scenario's project does (the default
project keeps its labeled animals apart and inside). A keypoint covered by an animal drawn
later cannot be seen, so it is unlabeled (NaN), like a keypoint outside the frame.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .body import AnimalPose, keypoints
from .motion import EDGE_MARGIN, _apart, inside, sample_pose
from .render import Appearance, animal_masks
from .spec import SyntheticSpec

# Per frame: the chance that an animal after the first is put against an earlier one, and the
# chance that one animal is put across the frame border.
P_CLOSE = 0.5
P_BORDER = 0.2
# Centre distance of a close pair, in units of their mean length: from overlapping to touching.
CLOSE_RANGE = (0.3, 0.8)


def covered_keypoints(poses: list[AnimalPose], kps: np.ndarray, width: int, height: int
                      ) -> np.ndarray:
    """(A, K) keypoints inside the frame that an animal drawn later covers."""
    masks = animal_masks(poses, width, height)
    pix = np.clip(np.rint(kps), 0, [width - 1, height - 1]).astype(np.int64)
    covered = np.zeros(kps.shape[:2], bool)
    for i in range(len(poses) - 1):
        above = masks[i + 1:].any(axis=0)
        covered[i] = above[pix[i, :, 1], pix[i, :, 0]]
    return covered & inside(kps, width, height)


def _near(rng: np.random.Generator, spec: SyntheticSpec, appearance: Appearance,
          other: AnimalPose) -> AnimalPose:
    pose = sample_pose(rng, spec, appearance)
    d = rng.uniform(*CLOSE_RANGE) * 0.5 * (pose.length + other.length)
    angle = rng.uniform(-np.pi, np.pi)
    return dataclasses.replace(pose, x=other.x + d * np.cos(angle), y=other.y + d * np.sin(angle))


def _across_border(rng: np.random.Generator, spec: SyntheticSpec, appearance: Appearance
                   ) -> AnimalPose:
    pose = sample_pose(rng, spec, appearance)
    side = rng.integers(4)
    m = rng.uniform(-0.3, 0.3) * pose.length       # centre just inside or just outside
    x = (m, spec.width - 1 - m, pose.x, pose.x)[side]
    y = (pose.y, pose.y, m, spec.height - 1 - m)[side]
    return dataclasses.replace(pose, x=float(x), y=float(y))


def sample_crowded_poses(rng: np.random.Generator, spec: SyntheticSpec,
                         appearance: Appearance, tries: int = 100) -> list[AnimalPose]:
    """Poses of all animals in one crowded labeled frame.

    Each animal after the first is, with chance P_CLOSE, placed against a random earlier one
    (centres CLOSE_RANGE mean lengths apart, any heading); otherwise apart from all, as in
    :func:`~dlc_train.synthetic.motion.sample_frame_poses`. With chance P_BORDER one animal
    straddles the frame border (at least two keypoints inside). Rejection sampling with
    ``tries`` candidates per animal; the last candidate is kept if none fits.
    """
    border = int(rng.integers(spec.num_animals)) if rng.random() < P_BORDER else -1
    poses: list[AnimalPose] = []
    for a in range(spec.num_animals):
        close = bool(poses) and rng.random() < P_CLOSE
        for _ in range(tries):
            if a == border:
                pose = _across_border(rng, spec, appearance)
                ok = inside(keypoints(pose), spec.width, spec.height).sum() >= 2
            elif close:
                pose = _near(rng, spec, appearance, poses[int(rng.integers(len(poses)))])
                ok = inside(keypoints(pose), spec.width, spec.height, EDGE_MARGIN).all()
            else:
                pose = sample_pose(rng, spec, appearance)
                ok = inside(keypoints(pose), spec.width, spec.height, EDGE_MARGIN).all()
            if ok and (close or _apart(pose, poses)):
                break
        poses.append(pose)
    return poses
