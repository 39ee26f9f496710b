"""A scripted three-animal video for tracking: known identities through the hard cases.

``SyntheticSpec(num_animals=3, video_motion="tracking")`` makes the project's video follow this
script instead of random walks (and its labeled frames crowded, see
:mod:`~dlc_train.synthetic.crowded`). Times are fractions of the video, places fractions of the
frame, contact offsets body lengths, so the same events happen at any size, frame rate and
length (``num_video_frames`` >= ``MIN_FRAMES``):

1. mouse1 and mouse2 cross each other's paths (an X, mouse2 a few tenths of a second behind);
2. mouse2 and mouse3 walk side by side with their bodies touching (no keypoint covered);
3. mouse3 walks out of the frame on the right, is away about a second, and comes back further up;
4. mouse2 walks over mouse1, which rests, and pauses on its head (mouse1's head keypoints
   hidden: animals are drawn in order, so a later one occludes an earlier one).

Paths are Catmull-Rom curves through waypoints; the heading follows the direction of motion and
turns smoothly while an animal stands still. :func:`scenario_events` measures
what happens in the rendered geometry (contacts and hidden keypoints from the drawn masks), so
tests check the events rather than trust the script.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.interpolate import CubicHermiteSpline
from scipy.ndimage import gaussian_filter1d

from .body import AnimalPose, keypoints
from .crowded import covered_keypoints
from .motion import MAX_BEND, SCALE_RANGE, inside, jitter_color
from .render import Appearance, animal_masks
from .spec import SCENARIO_ANIMALS as ANIMALS
from .spec import SCENARIO_MIN_FRAMES as MIN_FRAMES
from .spec import SyntheticSpec

# The scenario's own random stream (sizes, tails, colours): independent of the project's
# streams, so that the events can be recomputed from the spec alone.
_STREAM = 7_001
# Centre distance of two animals walking side by side, per unit of their summed lengths: a
# little under a body's half-width (0.19 L), so that the outlines touch.
_SIDE_BY_SIDE = 0.18
# ... and one of them this many body lengths ahead, so that their ears do not overlap.
_AHEAD = 0.3
# Beyond the frame by this many body lengths (from the centre), nothing of the animal shows.
_AWAY = 1.7


def _waypoints(spec: SyntheticSpec, lengths: np.ndarray) -> list[list[tuple[float, float, float]]]:
    """(time fraction, x px, y px) per animal: the script. A repeated place is a rest."""
    W, H = spec.width, spec.height
    lane3 = 0.82 * H
    lane2 = lane3 - _SIDE_BY_SIDE * (lengths[1] + lengths[2])
    ahead = _AHEAD * lengths[1]                 # mouse2 a little ahead: its ears clear mouse3's
    cross = (0.48 * W, 0.41 * H)                # mouse1 passes here at 0.15, mouse2 at 0.20
    rest1 = (0.52 * W, 0.33 * H)                # mouse1 rests here, facing left
    head1 = rest1[0] - 0.3 * lengths[0]         # x of mouse1's head centre while it rests
    out_x = W + _AWAY * lengths[2]
    m1 = [(0.00, 0.10 * W, 0.22 * H), (0.15, *cross), (0.30, 0.86 * W, 0.60 * H),
          (0.40, 0.72 * W, 0.38 * H), (0.47, *rest1), (0.88, *rest1), (1.00, 0.16 * W, 0.52 * H)]
    m2 = [(0.00, 0.86 * W, 0.22 * H), (0.05, 0.86 * W, 0.22 * H), (0.20, *cross),
          (0.35, 0.10 * W, 0.60 * H), (0.39, 0.12 * W + ahead, lane2),
          (0.41, 0.12 * W + ahead, lane2), (0.48, 0.33 * W + ahead, lane2),
          (0.55, 0.55 * W + ahead, lane2), (0.57, 0.55 * W + ahead, lane2),
          (0.62, 0.55 * W + ahead, 0.62 * H), (0.69, head1, 0.60 * H),
          (0.76, head1, rest1[1]), (0.84, head1, rest1[1]),
          (0.93, 0.22 * W, 0.15 * H), (1.00, 0.14 * W, 0.20 * H)]
    m3 = [(0.00, 0.45 * W, 0.86 * H), (0.25, 0.12 * W, lane3), (0.41, 0.12 * W, lane3),
          (0.48, 0.33 * W, lane3), (0.55, 0.55 * W, lane3), (0.56, 0.55 * W, lane3),
          (0.74, out_x, lane3), (0.81, out_x, 0.50 * H), (0.92, 0.74 * W, 0.50 * H),
          (1.00, 0.64 * W, 0.70 * H)]
    return [m1, m2, m3]


def _path(points: list[tuple[float, float, float]], s: np.ndarray) -> np.ndarray:
    """(len(s), 2) positions at times ``s``: a Catmull-Rom curve through the waypoints that
    starts, ends and rests with zero velocity."""
    t = np.array([p[0] for p in points])
    xy = np.array([p[1:] for p in points])
    v = np.zeros_like(xy)
    for i in range(1, len(points) - 1):
        if not (np.array_equal(xy[i], xy[i - 1]) or np.array_equal(xy[i], xy[i + 1])):
            v[i] = (xy[i + 1] - xy[i - 1]) / (t[i + 1] - t[i - 1])
    return CubicHermiteSpline(t, xy, v, axis=0)(s)


def _headings(xy: np.ndarray, fps: float, length: float) -> tuple[np.ndarray, np.ndarray]:
    """Heading (F,) along the motion, turning linearly while still; and the speed (L/s)."""
    v = np.gradient(xy, axis=0) * fps
    speed = np.linalg.norm(v, axis=1) / length
    moving = speed > 0.05
    raw = np.arctan2(v[:, 1], v[:, 0])
    idx = np.flatnonzero(moving)
    if len(idx) == 0:
        return np.zeros(len(xy)), speed
    # Unwrap the headings of moving frames, then interpolate over the still ones.
    unwrapped = np.unwrap(raw[idx])
    heading = np.interp(np.arange(len(xy)), idx, unwrapped)
    return gaussian_filter1d(heading, sigma=0.1 * fps, mode="nearest"), speed


def scenario_poses(spec: SyntheticSpec, appearance: Appearance | None = None
                   ) -> list[list[AnimalPose]]:
    """``[frame][animal]`` poses of the scripted video.

    The geometry depends on the spec only; ``appearance`` gives the colours (None: the default
    pose colour, e.g. to measure events).
    Raises:
        ValueError: when the spec does not have 3 animals or has fewer than MIN_FRAMES frames.
    """
    if spec.num_animals != ANIMALS:
        raise ValueError(f"the tracking scenario scripts {ANIMALS} animals, the spec has "
                         f"{spec.num_animals}")
    if spec.num_video_frames < MIN_FRAMES:
        raise ValueError(f"the tracking scenario needs at least {MIN_FRAMES} video frames, the "
                         f"spec has {spec.num_video_frames}")
    shape_seq, colour_seq = np.random.SeedSequence([spec.seed, _STREAM]).spawn(2)
    rng, colour_rng = np.random.default_rng(shape_seq), np.random.default_rng(colour_seq)
    lengths = spec.length_px * rng.uniform(*SCALE_RANGE, size=ANIMALS)
    n, fps = spec.num_video_frames, float(spec.fps)
    s = np.arange(n) / (n - 1)
    frames: list[list[AnimalPose]] = [[] for _ in range(n)]
    for a, points in enumerate(_waypoints(spec, lengths)):
        xy = _path(points, s)
        heading, speed = _headings(xy, fps, lengths[a])
        omega = np.gradient(heading) * fps
        bend = np.clip(0.03 * omega, -MAX_BEND, MAX_BEND)
        curl0, curl_phase = rng.uniform(-0.4, 0.4), rng.uniform(0, 2 * np.pi)
        wave = rng.uniform(0.1, 0.4)
        tail_phase = np.cumsum(2 * np.pi * (0.5 + 1.5 * speed) / fps) + rng.uniform(0, 2 * np.pi)
        breath = rng.uniform(0, 2 * np.pi)
        color = jitter_color(colour_rng, appearance) if appearance else AnimalPose.color
        for f in range(n):
            sec = f / fps
            curl = curl0 + 0.4 * np.sin(2 * np.pi * 0.2 * sec + curl_phase) - 0.05 * omega[f]
            frames[f].append(AnimalPose(
                x=float(xy[f, 0]), y=float(xy[f, 1]),
                heading=float((heading[f] + np.pi) % (2 * np.pi) - np.pi),
                length=float(lengths[a] * (1.0 + 0.02 * np.sin(np.pi * sec + breath))),
                bend=float(bend[f]), tail_curl=float(np.clip(curl, -1.5, 1.5)),
                tail_wave=float(wave), tail_phase=float(tail_phase[f] % (2 * np.pi)),
                color=color))
    return frames


@dataclass(frozen=True)
class ScenarioEvents:
    """What happens in each frame of a scripted video (A animals, K keypoints, F frames).

    Attributes:
        inside: (F, A, K) keypoint within the frame (the ground truth is NaN elsewhere).
        contact: (F, A, A) symmetric: the drawn animals touch or overlap (masks within 1 px).
        overlap: (F, A, A) symmetric: the drawn animals share pixels.
        hidden: (F, A, K) keypoint inside the frame and covered by an animal drawn later.
        centre_distance: (F, A, A) distance between body centres, px.
        crossings: (n, 3) rows ``frame, first, second``: ``second``'s centre path crossed
            ``first``'s within one second after ``first`` passed there, at that frame.
    """

    inside: np.ndarray
    contact: np.ndarray
    overlap: np.ndarray
    hidden: np.ndarray
    centre_distance: np.ndarray
    crossings: np.ndarray

    @property
    def out_of_frame(self) -> np.ndarray:
        """(F, A): no keypoint of the animal is in the frame."""
        return ~self.inside.any(axis=2)

    @property
    def occluded(self) -> np.ndarray:
        """(F, A): some keypoint of the animal is covered by another animal."""
        return self.hidden.any(axis=2)

    def counts(self) -> dict[str, int]:
        """Frames with each event (any animal), and the number of path crossings."""
        pair = np.triu(np.ones(self.contact.shape[1:], bool), 1)
        return {"crossings": int(len(self.crossings)),
                "touching_frames": int((self.contact & pair).any(axis=(1, 2)).sum()),
                "out_of_frame_frames": int(self.out_of_frame.any(axis=1).sum()),
                "occluded_frames": int(self.occluded.any(axis=1).sum())}


def _segments_cross(p0, p1, q0, q1) -> np.ndarray:
    """(n, m) whether segment i of p (p0[i]->p1[i]) properly crosses segment j of q."""
    def orient(a, b, c):
        return np.sign((b[..., 0] - a[..., 0]) * (c[..., 1] - a[..., 1])
                       - (b[..., 1] - a[..., 1]) * (c[..., 0] - a[..., 0]))
    P0, P1 = p0[:, None], p1[:, None]
    Q0, Q1 = q0[None, :], q1[None, :]
    return ((orient(P0, P1, Q0) * orient(P0, P1, Q1) < 0)
            & (orient(Q0, Q1, P0) * orient(Q0, Q1, P1) < 0))


def _crossings(centres: np.ndarray, fps: float) -> np.ndarray:
    rows = []
    window = int(round(fps))
    for i in range(centres.shape[1]):
        for j in range(i + 1, centres.shape[1]):
            p, q = centres[:, i], centres[:, j]
            hit = _segments_cross(p[:-1], p[1:], q[:-1], q[1:])
            for ti, tj in zip(*np.nonzero(hit)):
                if abs(ti - tj) <= window:
                    first, second = (i, j) if ti <= tj else (j, i)
                    rows.append((int(max(ti, tj)) + 1, first, second))
    return np.asarray(sorted(rows), np.int64).reshape(-1, 3)


def scenario_events(spec: SyntheticSpec, poses: list[list[AnimalPose]] | None = None
                    ) -> ScenarioEvents:
    """Measure the events of the scripted video of ``spec`` (or of the given poses)."""
    poses = poses if poses is not None else scenario_poses(spec)
    W, H = spec.width, spec.height
    kps = np.array([[keypoints(p) for p in frame] for frame in poses])   # (F, A, K, 2)
    centres = np.array([[(p.x, p.y) for p in frame] for frame in poses])
    n, a, k = kps.shape[:3]
    inside_ = inside(kps, W, H)
    contact = np.zeros((n, a, a), bool)
    overlap = np.zeros((n, a, a), bool)
    hidden = np.zeros((n, a, k), bool)
    kernel = np.ones((3, 3), np.uint8)
    for f, frame in enumerate(poses):
        masks = animal_masks(frame, W, H)
        grown = np.stack([cv2.dilate(m.astype(np.uint8), kernel).astype(bool) for m in masks])
        for i in range(a):
            for j in range(i + 1, a):
                contact[f, i, j] = contact[f, j, i] = bool((grown[i] & masks[j]).any())
                overlap[f, i, j] = overlap[f, j, i] = bool((masks[i] & masks[j]).any())
        hidden[f] = covered_keypoints(frame, kps[f], W, H)
    dist = np.linalg.norm(centres[:, :, None] - centres[:, None], axis=-1)
    return ScenarioEvents(inside=inside_, contact=contact, overlap=overlap, hidden=hidden,
                          centre_distance=dist, crossings=_crossings(centres, spec.fps))

