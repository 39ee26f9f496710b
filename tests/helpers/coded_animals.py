"""Three animals with known identities, shown to the runtime through a coded video
(``dlc_runtime.testing``): the toy multi-animal bundle reads back exactly these detections."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dlc_runtime.testing import write_coded_video

F, N, K = 120, 3, 4
#: frames where animal 2 is missed (no detection)
LOST = range(50, 53)


def truth_poses() -> np.ndarray:
    """(F, N, K, 3): animals 0 and 1 walk towards each other and cross (10 px apart in y),
    animal 2 circles below them."""
    t = np.arange(F, dtype=float)
    centres = np.stack([np.stack([20 + 1.5 * t, 60 + 0 * t], -1),
                        np.stack([200 - 1.5 * t, 70 + 0 * t], -1),
                        np.stack([110 + 40 * np.cos(t / 15), 180 + 40 * np.sin(t / 15)], -1)], 1)
    offsets = np.array([[0, 0], [8, 0], [0, 8], [8, 8]], float)
    xy = centres[:, :, None, :] + offsets
    return np.concatenate([xy, np.full((F, N, K, 1), 0.9)], -1)


def shuffled_video(path: Path, truth: np.ndarray, seed: int = 0) -> Path:
    """The animals listed in a random order each frame, animal 2 missed in ``LOST``."""
    rng = np.random.default_rng(seed)
    order = np.array([rng.permutation(N) for _ in range(len(truth))])
    shown = np.take_along_axis(truth, order[:, :, None, None], axis=1).copy()
    lost = (order == 2) & np.isin(np.arange(len(truth)), LOST)[:, None]
    shown[lost] = np.nan
    return write_coded_video(path, shown)


def followed(tracks: np.ndarray, truth: np.ndarray, tolerance: float = 0.5) -> list[int]:
    """Which animal each track of (F, N, K, 3) follows; asserts it is that one in every frame
    the track has (within ``tolerance`` px: the coded video rounds to whole pixels)."""
    animals = []
    for i in range(tracks.shape[1]):
        seen = np.isfinite(tracks[:, i, 0, 0])
        error = [np.abs(tracks[seen, i, :, :2] - truth[seen, a, :, :2]).max()
                 for a in range(truth.shape[1])]
        animals.append(int(np.argmin(error)))
        assert min(error) <= tolerance, f"track {i} jumps between animals: max errors {error}"
    return animals
