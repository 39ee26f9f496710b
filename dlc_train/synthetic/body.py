"""The mouse figure: a pose -> the shapes to draw and the keypoints, from one geometry.

The keypoints are computed from the same transformed points as the drawn outlines, so they lie
exactly where the parts are drawn. Local frame: ``u`` points forward (tail to snout), ``v`` to the
animal's right; units are the snout-to-tailbase length ``L``. Seen from above with image ``y``
pointing down, an animal facing +x has its left side towards -y, so the left ear is at ``v < 0``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .spec import BODYPARTS

# Shape constants in units of L; the body's rear end (u = -0.5) is the tailbase, the nose centre
# (u = 0.49) the snout, just inside the head tip (u = 0.5) so that it is on the drawn animal.
BODY_CENTER, BODY_A, BODY_B = -0.10, 0.40, 0.19
HEAD_CENTER, HEAD_A, HEAD_B = 0.30, 0.20, 0.13
SNOUT_U, NOSE_R = 0.49, 0.035
EAR_U, EAR_V, EAR_R = 0.24, 0.14, 0.075
TAILBASE_U = -0.5
TAIL_LENGTH = 0.7
TAIL_START_U = -0.42     # the tail is drawn from inside the body, so the tailbase is covered
TAIL_W0, TAIL_W1 = 0.06, 0.025   # tail width at its base and tip
TAIL_SEGMENTS = 16


@dataclass(frozen=True)
class AnimalPose:
    """One animal in one frame.

    Args:
        x, y: body centre (u = 0) in pixels.
        heading: direction of the snout in radians; 0 = +x, pi/2 = +y (image down).
        length: snout-to-tailbase length L in pixels (scale included).
        bend: lateral bend; the spine ends are displaced ``bend * L`` towards the right side.
        tail_curl: total turning of the tail from base to tip, radians.
        tail_wave, tail_phase: amplitude (radians) and phase of a sinusoidal tail wiggle.
        color: BGR body colour.
    """

    x: float
    y: float
    heading: float
    length: float
    bend: float = 0.0
    tail_curl: float = 0.0
    tail_wave: float = 0.0
    tail_phase: float = 0.0
    color: tuple[float, float, float] = (60.0, 62.0, 70.0)


@dataclass
class AnimalShape:
    """Image-space outlines (float pixel coordinates) and keypoints of one animal."""

    body: np.ndarray        # (N, 2) polygon
    head: np.ndarray        # (N, 2) polygon
    ears: np.ndarray        # (2, 2) centres, left then right
    ear_radius: float
    nose_radius: float
    tail: np.ndarray        # (M, 2) polygon around the tail polyline
    tail_tip_radius: float
    keypoints: np.ndarray   # (K, 2) in BODYPARTS order


def _bend(u: np.ndarray, v: np.ndarray, bend: float) -> tuple[np.ndarray, np.ndarray]:
    # Parabolic spine: offset bend*L at u = +-0.5, zero at the centre. Only used for |u| <= 0.5.
    return u, v + bend * (u / 0.5) ** 2


def _to_image(u: np.ndarray, v: np.ndarray, pose: AnimalPose) -> np.ndarray:
    c, s = np.cos(pose.heading), np.sin(pose.heading)
    x = pose.x + pose.length * (u * c - v * s)
    y = pose.y + pose.length * (u * s + v * c)
    return np.stack([x, y], axis=-1)


def _ellipse(cu: float, a: float, b: float, n: int = 40, taper: float = 0.0
             ) -> tuple[np.ndarray, np.ndarray]:
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    # taper > 0 narrows the front half: a pointed head instead of a round one.
    width = b * np.sin(t) * (1.0 - taper * np.clip(np.cos(t), 0.0, None))
    return cu + a * np.cos(t), width


def animal_shape(pose: AnimalPose) -> AnimalShape:
    """Build the outlines and keypoints of ``pose``."""
    L = pose.length
    body = _to_image(*_bend(*_ellipse(BODY_CENTER, BODY_A, BODY_B), pose.bend), pose)
    head = _to_image(*_bend(*_ellipse(HEAD_CENTER, HEAD_A, HEAD_B, taper=0.45), pose.bend), pose)
    ear_u = np.array([EAR_U, EAR_U])
    ears = _to_image(*_bend(ear_u, np.array([-EAR_V, EAR_V]), pose.bend), pose)
    snout = _to_image(*_bend(np.array([SNOUT_U]), np.array([0.0]), pose.bend), pose)[0]
    tailbase = _to_image(*_bend(np.array([TAILBASE_U]), np.array([0.0]), pose.bend), pose)[0]

    # Tail: starts along the bent spine's backward tangent, then curls and wiggles.
    slope = 2 * pose.bend * TAILBASE_U / 0.25          # dv/du of the spine at the tailbase
    theta0 = pose.heading + np.pi + np.arctan(slope)   # direction -(1, slope) in (u, v)
    s = np.linspace(0.0, 1.0, TAIL_SEGMENTS + 1)
    angle = (theta0 + pose.tail_curl * s
             + pose.tail_wave * (np.sin(np.pi * s + pose.tail_phase) - np.sin(pose.tail_phase)))
    ds = TAIL_LENGTH * L / TAIL_SEGMENTS
    steps = np.stack([np.cos(angle[:-1]), np.sin(angle[:-1])], axis=-1) * ds
    centre = tailbase + np.concatenate([np.zeros((1, 2)), np.cumsum(steps, axis=0)])
    # Prepend a point inside the body so the tail polygon covers the tailbase.
    inside = _to_image(*_bend(np.array([TAIL_START_U]), np.array([0.0]), pose.bend), pose)
    line = np.concatenate([inside, centre])
    tangent = np.gradient(line, axis=0)
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=-1)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True) + 1e-9
    half_w = 0.5 * L * np.concatenate([[TAIL_W0], np.linspace(TAIL_W0, TAIL_W1, len(centre))])
    tail = np.concatenate([line + normal * half_w[:, None], (line - normal * half_w[:, None])[::-1]])

    keypoints = np.stack([snout, ears[0], ears[1], tailbase, centre[-1]])
    assert len(keypoints) == len(BODYPARTS)
    return AnimalShape(body=body, head=head, ears=ears, ear_radius=EAR_R * L,
                       nose_radius=NOSE_R * L, tail=tail,
                       tail_tip_radius=max(0.5 * TAIL_W1 * L, 1.0), keypoints=keypoints)


def keypoints(pose: AnimalPose) -> np.ndarray:
    """(K, 2) keypoints of ``pose`` in BODYPARTS order."""
    return animal_shape(pose).keypoints
