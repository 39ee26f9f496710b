"""Condition keypoints for training conditional top-down (CTD / BUCTD) models.

At inference a CTD model reads the keypoints a bottom-up model found (its "conditions"). In
training DeepLabCut makes them from the ground truth instead, with the error model of PoseFix
(Moon et al. 2019) that BUCTD adapted: each labeled keypoint becomes, at random,

- good: within the OKS-0.85 distance of the truth;
- jitter: between the OKS-0.85 and OKS-0.5 distances of the truth;
- inversion: near its symmetric partner (left <-> right) of the same animal;
- swap: near the same (or the partner) keypoint of another animal whose box overlaps;
- miss: between the OKS-0.5 and OKS-0.1 distances of any of those positions;

with the probabilities of ``data.gen_sampling`` (jitter_prob, swap_prob, inv_prob, miss_prob;
good takes the rest). A kind that cannot happen (no partner, no neighbour, no free position)
is dropped and the others renormalized. The OKS distances grow with the animal's box area and
``keypoint_sigmas``. Unlabeled keypoints give no condition (0, 0, 0); conditions get
visibility 2, as DeepLabCut's.

Ours, not DeepLabCut's code: each keypoint draws its kind first and then only that kind's
position (the same distribution, far fewer random points), and every draw comes from the
``numpy.random.Generator`` passed in, so a seeded item is reproducible.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

KINDS = ("jitter", "miss", "inversion", "swap", "good")
DEFAULTS = {"keypoint_sigmas": 0.1, "keypoints_symmetry": None, "jitter_prob": 0.16,
            "swap_prob": 0.08, "inv_prob": 0.03, "miss_prob": 0.1}
POINTS = 200  # positions drawn per try


@dataclass
class GenerativeSampler:
    """Args:
        num_keypoints: K.
        keypoint_sigmas: one sigma for all keypoints, or K of them (OKS sigmas).
        keypoints_symmetry: (left, right) index pairs; None: random pairs per call (as
            DeepLabCut, for animals without declared symmetries).
        jitter_prob, swap_prob, inv_prob, miss_prob: see the module docstring.
    """

    num_keypoints: int
    keypoint_sigmas: float | Sequence[float] = 0.1
    keypoints_symmetry: Sequence[Sequence[int]] | None = None
    jitter_prob: float = 0.16
    swap_prob: float = 0.08
    inv_prob: float = 0.03
    miss_prob: float = 0.1

    def __post_init__(self) -> None:
        from dlc_train.config import ConfigError

        sigmas = np.broadcast_to(np.asarray(self.keypoint_sigmas, np.float64),
                                 (self.num_keypoints,)) if np.ndim(self.keypoint_sigmas) == 0 \
            else np.asarray(self.keypoint_sigmas, np.float64)
        if sigmas.shape != (self.num_keypoints,):
            raise ConfigError(f"gen_sampling.keypoint_sigmas has {len(sigmas)} values for "
                              f"{self.num_keypoints} bodyparts")
        self.sigmas = sigmas
        probs = [self.jitter_prob, self.miss_prob, self.inv_prob, self.swap_prob]
        if min(probs) < 0 or sum(probs) > 1:
            raise ConfigError(f"gen_sampling probabilities {probs} must be >= 0 and sum to at "
                              "most 1 (the rest is the chance of a good keypoint)")
        self.probs = np.array(probs + [1.0 - sum(probs)])

    @classmethod
    def from_config(cls, section: dict | None, num_keypoints: int) -> "GenerativeSampler":
        """From ``data.gen_sampling`` (None: DeepLabCut's defaults); unknown keys refused."""
        from dlc_train.config import ConfigError

        given = dict(section or {})
        unknown = sorted(set(given) - set(DEFAULTS))
        if unknown:
            raise ConfigError(f"data.gen_sampling has no key {unknown[0]!r}; its keys: "
                              f"{', '.join(DEFAULTS)}")
        return cls(num_keypoints, **{**DEFAULTS,
                                     **{k: v for k, v in given.items() if v is not None}})

    def distance(self, similarity: float, area: float) -> np.ndarray:
        """Per keypoint, the distance at which OKS equals ``similarity`` for this area."""
        return np.sqrt(-2.0 * max(area, 1.0) * (2 * self.sigmas) ** 2 * np.log(similarity))

    def __call__(self, keypoints: np.ndarray, near: np.ndarray, area: float,
                 image_hw: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
        """Conditions for one animal.

        Args:
            keypoints: (K, 3) its ground truth (x, y, visibility).
            near: (M, K, 3) the animals whose boxes overlap its box.
            area: its box area (pixels).
            image_hw: clip the conditions to this image.
            rng: the random source.

        Returns:
            (K, 3) x, y, visibility (2 for a condition, 0 where none).
        """
        kps = np.asarray(keypoints, np.float64)
        near = np.asarray(near, np.float64).reshape(-1, self.num_keypoints, 3)
        d10, d50, d85 = (self.distance(s, area) for s in (0.10, 0.50, 0.85))
        partner = self._partners(rng)
        out = np.zeros((self.num_keypoints, 3))
        for j in np.flatnonzero(kps[:, 2] > 0):
            gt = kps[j, :2]
            p = partner.get(j)
            inv = kps[p, :2][None] if p is not None and kps[p, 2] > 0 else np.zeros((0, 2))
            swaps = [near[near[:, j, 2] > 0, j, :2]]
            if p is not None:
                swaps.append(near[near[:, p, 2] > 0, p, :2])
            swap = np.concatenate(swaps)
            others = {"gt": gt[None], "inv": inv, "swap": swap}
            xy = self._draw(j, others, (d10[j], d50[j], d85[j]), rng)
            if xy is not None:
                out[j] = (*xy, 2.0)
        out[:, 0] = np.clip(out[:, 0], 0, image_hw[1])
        out[:, 1] = np.clip(out[:, 1], 0, image_hw[0])
        return out.astype(np.float32)

    def _partners(self, rng: np.random.Generator) -> dict[int, int]:
        pairs = self.keypoints_symmetry
        if not pairs:
            order = rng.permutation(self.num_keypoints)
            pairs = order[:2 * (self.num_keypoints // 2)].reshape(-1, 2)
        partner: dict[int, int] = {}
        for a, b in pairs:
            partner[int(a)], partner[int(b)] = int(b), int(a)
        return partner

    def _draw(self, j: int, sources: dict[str, np.ndarray], dist: tuple[float, float, float],
              rng: np.random.Generator) -> tuple[float, float] | None:
        """Draws the kind of error, then its position; a kind without a possible position is
        dropped and the others renormalized."""
        d10, d50, d85 = dist
        gt, inv, swap = sources["gt"], sources["inv"], sources["swap"]
        every = np.concatenate([gt, inv, swap])
        probs = self.probs.copy()
        while probs.sum() > 0:
            kind = KINDS[rng.choice(len(KINDS), p=probs / probs.sum())]
            if kind == "jitter":  # (the distances grow: d85 < d50 < d10)
                xy = _ring(rng, gt, d85, d50, away_from=every[1:], clear=None)
            elif kind == "good":
                xy = _ring(rng, gt, 0.0, d85, away_from=every[1:], clear=None)
            elif kind == "inversion":
                xy = _ring(rng, inv, 0.0, d50, away_from=np.concatenate([gt, swap]), clear=None)
            elif kind == "swap":
                xy = _ring(rng, swap, 0.0, d50, away_from=np.concatenate([gt, inv]), clear=None)
            else:  # miss: far from all of them; around the truth 4 times as often (PoseFix)
                weights = np.r_[4.0, np.ones(len(every) - 1)]
                xy = _ring(rng, every, d50, d10, away_from=every, clear=d50,
                           weights=weights / weights.sum())
            if xy is not None:
                return xy
            probs[KINDS.index(kind)] = 0.0
        return None


def _ring(rng: np.random.Generator, centres: np.ndarray, r_min: float, r_max: float,
          away_from: np.ndarray, clear: float | None, weights: np.ndarray | None = None
          ) -> tuple[float, float] | None:
    """A random position at a distance in [r_min, r_max) of one of ``centres`` (picked with
    ``weights``; None: uniformly), farther from every point of ``away_from`` than ``clear``
    (None: than its own distance to its centre); None when no drawn position qualifies."""
    if len(centres) == 0:
        return None
    which = rng.choice(len(centres), size=POINTS, p=weights)
    angle = rng.uniform(0, 2 * np.pi, POINTS)
    r = rng.uniform(r_min, r_max, POINTS)
    xy = centres[which] + r[:, None] * np.stack((np.cos(angle), np.sin(angle)), axis=1)
    keep = np.ones(POINTS, bool)
    for point in away_from:
        gap = np.linalg.norm(xy - point, axis=1)
        own = np.linalg.norm(centres[which] - point, axis=1) < 1e-9  # its own centre
        keep &= own | (gap > (r if clear is None else clear))
    if not keep.any():
        return None
    x, y = xy[rng.choice(np.flatnonzero(keep))]
    return float(x), float(y)
