"""Poses: independent random poses for labeled frames and smooth trajectories for the video.

Both draw from the same ranges (scale +-15 %, any heading, slight bend, tail curl, colour jitter)
so that a model trained on the labeled frames sees the video's animals in distribution.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .body import AnimalPose, keypoints
from .render import Appearance
from .spec import SyntheticSpec

SCALE_RANGE = (0.85, 1.15)
MAX_BEND = 0.12
COLOR_JITTER = 15.0
EDGE_MARGIN = 2.0   # px a keypoint keeps from the frame border when the sampler can choose


def inside(kps: np.ndarray, width: int, height: int, margin: float = 0.0) -> np.ndarray:
    """Bool mask (...,) of keypoints (..., 2) within the frame (pixel centres 0..W-1, 0..H-1)."""
    x, y = kps[..., 0], kps[..., 1]
    return (x >= margin) & (x <= width - 1 - margin) & (y >= margin) & (y <= height - 1 - margin)


def _excess(kps: np.ndarray, spec: SyntheticSpec) -> float:
    """Total distance (px) by which keypoints lie beyond the frame minus EDGE_MARGIN."""
    lo = EDGE_MARGIN
    hi = np.array([spec.width - 1 - EDGE_MARGIN, spec.height - 1 - EDGE_MARGIN])
    return float(np.clip(lo - kps, 0, None).sum() + np.clip(kps - hi, 0, None).sum())


def jitter_color(rng: np.random.Generator, appearance: Appearance) -> tuple[float, float, float]:
    """The project's animal colour, jittered per animal."""
    c = np.asarray(appearance.animal) + rng.uniform(-COLOR_JITTER, COLOR_JITTER, size=3)
    return tuple(float(v) for v in np.clip(c, 0, 255))  # type: ignore[return-value]


def sample_pose(rng: np.random.Generator, spec: SyntheticSpec, appearance: Appearance
                ) -> AnimalPose:
    """One random pose anywhere in the frame (the centre at least 0.3 L from the border)."""
    length = spec.length_px * rng.uniform(*SCALE_RANGE)
    m = 0.3 * length
    return AnimalPose(
        x=float(rng.uniform(m, spec.width - m)), y=float(rng.uniform(m, spec.height - m)),
        heading=float(rng.uniform(-np.pi, np.pi)), length=float(length),
        bend=float(rng.uniform(-MAX_BEND, MAX_BEND)),
        tail_curl=float(np.clip(rng.normal(0.0, 0.6), -1.5, 1.5)),
        tail_wave=float(rng.uniform(0.0, 0.5)), tail_phase=float(rng.uniform(0, 2 * np.pi)),
        color=jitter_color(rng, appearance))


def _apart(pose: AnimalPose, others: list[AnimalPose]) -> bool:
    # Bodies (+-0.5 L around the centre) must not overlap; tails may cross other animals.
    return all(np.hypot(pose.x - o.x, pose.y - o.y) > 0.8 * (pose.length + o.length)
               for o in others)


def sample_frame_poses(rng: np.random.Generator, spec: SyntheticSpec, appearance: Appearance,
                       tries: int = 100) -> list[AnimalPose]:
    """Poses of all animals in one labeled frame: keypoints inside the frame, bodies apart.

    Rejection sampling; if no candidate fits within ``tries`` the last one is kept (its outside
    keypoints become NaN later), so the loop always ends.
    """
    poses: list[AnimalPose] = []
    for _ in range(spec.num_animals):
        for _ in range(tries):
            pose = sample_pose(rng, spec, appearance)
            if (inside(keypoints(pose), spec.width, spec.height, EDGE_MARGIN).all()
                    and _apart(pose, poses)):
                break
        poses.append(pose)
    return poses


@dataclasses.dataclass
class _Walker:
    pose: AnimalPose
    speed: float        # body lengths per second
    omega: float        # turning rate, rad/s (positive turns towards +y)
    curl: float         # slow tail curl component, rad


def _wrap(a: float) -> float:
    return float((a + np.pi) % (2 * np.pi) - np.pi)


def _step(w: _Walker, others: list[_Walker], rng: np.random.Generator, spec: SyntheticSpec
          ) -> AnimalPose:
    """Advance one walker by one frame (Ornstein-Uhlenbeck turning, speed and tail curl)."""
    dt = 1.0 / spec.fps
    sq = np.sqrt(dt)
    p = w.pose
    w.omega += -2.0 * w.omega * dt + 3.0 * sq * rng.standard_normal()
    w.speed = float(np.clip(w.speed + 1.5 * (1.0 - w.speed) * dt + 0.8 * sq * rng.standard_normal(),
                            0.0, 2.5))
    w.curl += -1.0 * w.curl * dt + 0.8 * sq * rng.standard_normal()
    # Steer away from animals that come close (multi-animal only).
    for o in others:
        d = np.hypot(p.x - o.pose.x, p.y - o.pose.y)
        if d < 0.9 * (p.length + o.pose.length):
            away = np.arctan2(p.y - o.pose.y, p.x - o.pose.x)
            w.omega += 30.0 * dt * np.sign(_wrap(away - p.heading))
    # Walls: look ahead and turn towards the centre early, like an animal avoiding a wall.
    to_centre = np.arctan2(spec.height / 2 - p.y, spec.width / 2 - p.x)
    towards = 1.0 if _wrap(to_centre - p.heading) >= 0 else -1.0
    ahead = np.array([p.x + p.length * np.cos(p.heading), p.y + p.length * np.sin(p.heading)])
    if not inside(ahead, spec.width, spec.height, 0.1 * p.length):
        w.omega += 15.0 * dt * towards
    # Then propose the move; when it would take keypoints (further) out of the frame, turn
    # harder towards the centre and slow down, and try again.
    current = _excess(keypoints(p), spec)
    tries = [(w.omega, w.speed)] + [(towards * o, w.speed * f) for o, f in
                                    ((3.0, 0.5), (6.0, 0.25), (6.0, 0.0))]
    for omega, speed in tries:
        heading = _wrap(p.heading + omega * dt)
        bend_target = float(np.clip(0.03 * omega, -MAX_BEND, MAX_BEND))
        moved = dataclasses.replace(
            p, heading=heading,
            x=p.x + speed * p.length * np.cos(heading) * dt,
            y=p.y + speed * p.length * np.sin(heading) * dt,
            bend=p.bend + (bend_target - p.bend) * min(1.0, 6.0 * dt),
            tail_phase=float((p.tail_phase + 2 * np.pi * (0.5 + 1.5 * speed) * dt) % (2 * np.pi)))
        # A tail that would leave the frame flexes instead, as a real tail does along a wall.
        curl = w.curl - 0.05 * omega
        for dc in (0.0, 0.25, -0.25, 0.5, -0.5):
            new = dataclasses.replace(moved, tail_curl=float(np.clip(curl + dc, -1.5, 1.5)))
            excess = _excess(keypoints(new), spec)
            if excess == 0.0 or excess < current:
                break
        if excess == 0.0 or excess < current:
            w.curl += dc
            break
    else:
        # Nothing helps (e.g. the tail swings out while turning): slide towards the centre.
        step = p.length * dt
        new = dataclasses.replace(new, x=p.x + step * np.cos(to_centre),
                                  y=p.y + step * np.sin(to_centre))
    w.omega, w.speed = omega, speed
    w.curl = float(np.clip(w.curl, -1.5, 1.5))
    w.pose = new
    return new


def simulate_video_poses(rng: np.random.Generator, spec: SyntheticSpec, appearance: Appearance
                         ) -> list[list[AnimalPose]]:
    """Smooth trajectories: ``[frame][animal]`` poses for ``spec.num_video_frames`` frames.

    Each animal keeps its size and colour for the whole video (a 2 % breathing-like size change
    aside), like a real animal; turning, speed and the tail are random walks.
    """
    walkers = [_Walker(pose=p, speed=float(rng.uniform(0.5, 1.5)), omega=0.0, curl=p.tail_curl)
               for p in sample_frame_poses(rng, spec, appearance)]
    base_len = [w.pose.length for w in walkers]
    breath = rng.uniform(0, 2 * np.pi, size=len(walkers))
    frames: list[list[AnimalPose]] = []
    for t in range(spec.num_video_frames):
        poses = []
        for i, w in enumerate(walkers):
            if t > 0:
                _step(w, walkers[:i] + walkers[i + 1:], rng, spec)
            scale = 1.0 + 0.02 * np.sin(2 * np.pi * 0.5 * t / spec.fps + breath[i])
            poses.append(dataclasses.replace(w.pose, length=float(base_len[i] * scale)))
        frames.append(poses)
    return frames
