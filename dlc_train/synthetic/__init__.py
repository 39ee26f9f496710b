"""Synthetic DeepLabCut projects: mouse-like animals with known keypoints (numpy + cv2 only).

Drives ``dlc demo`` and the end-to-end accuracy tests::

    from dlc_train.synthetic import generate_project, SyntheticSpec, load_ground_truth
    paths = generate_project(tmp_dir, SyntheticSpec(seed=0))
    truth = load_ground_truth(paths.ground_truth_path)   # (n_frames, n_animals, K, 2)

Modules: ``spec`` (parameters), ``body`` (pose -> outlines + keypoints), ``render`` (background,
drawing, noise), ``motion`` (random poses, video trajectories), ``project`` (DeepLabCut files).
"""
from .body import AnimalPose, animal_shape, keypoints
from .project import SyntheticProject, generate_project, label_columns, load_ground_truth
from .spec import BODYPARTS, SKELETON, SyntheticSpec

__all__ = [
    "AnimalPose", "BODYPARTS", "SKELETON", "SyntheticProject", "SyntheticSpec", "animal_shape",
    "generate_project", "keypoints", "label_columns", "load_ground_truth",
]
