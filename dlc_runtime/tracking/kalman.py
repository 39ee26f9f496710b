"""Constant-velocity Kalman filters of all live tracks, stepped together.

DeepLabCut's tracker models (box, ellipse, skeleton) have diagonal noise matrices and a
transition that couples each measured component only with its own velocity, so the filter is a
set of independent two-state (position, velocity) filters, one per measured component. Keeping
the 2x2 covariances as arrays (tracks x components) makes a frame a few elementwise operations
instead of per-track matrix inverses; the result equals the full matrix filter.
Missing measurement components (a keypoint not found) are left uncorrected, which is what
DeepLabCut's zeroed rows of H amount to.
"""
from __future__ import annotations

import numpy as np


class KalmanBank:
    """Filters sharing one model, one row per track, one column per measured component.

    Args (each (m,) or a scalar, per measured component):
        q_pos, q_vel: process noise of the position and of the velocity.
        r: measurement noise.
        p0_pos, p0_vel: initial variances of a new track (a component without velocity, such as
            a box's aspect ratio, has p0_vel = q_vel = 0: its velocity stays zero).
    """

    def __init__(self, m: int, q_pos, q_vel, r, p0_pos, p0_vel) -> None:
        as_m = lambda v: np.broadcast_to(np.asarray(v, dtype=np.float64), (m,)).copy()  # noqa: E731
        self.q_pos, self.q_vel, self.r = as_m(q_pos), as_m(q_vel), as_m(r)
        self.p0_pos, self.p0_vel = as_m(p0_pos), as_m(p0_vel)
        empty = np.zeros((0, m))
        self.pos, self.vel = empty.copy(), empty.copy()
        self.p_pp, self.p_pv, self.p_vv = empty.copy(), empty.copy(), empty.copy()

    def __len__(self) -> int:
        return len(self.pos)

    def add(self, z: np.ndarray) -> None:
        """New tracks at measurements ``z`` (k, m), velocities zero."""
        k = len(z)
        self.pos = np.concatenate([self.pos, z])
        self.vel = np.concatenate([self.vel, np.zeros_like(z)])
        self.p_pp = np.concatenate([self.p_pp, np.tile(self.p0_pos, (k, 1))])
        self.p_pv = np.concatenate([self.p_pv, np.zeros_like(z)])
        self.p_vv = np.concatenate([self.p_vv, np.tile(self.p0_vel, (k, 1))])

    def keep(self, mask: np.ndarray) -> None:
        """Drop the tracks where ``mask`` is false."""
        for name in ("pos", "vel", "p_pp", "p_pv", "p_vv"):
            setattr(self, name, getattr(self, name)[mask])

    def predict(self) -> np.ndarray:
        """Advance every track one frame; returns the predicted measurements (T, m)."""
        self.pos = self.pos + self.vel
        self.p_pp = self.p_pp + 2 * self.p_pv + self.p_vv + self.q_pos
        self.p_pv = self.p_pv + self.p_vv
        self.p_vv = self.p_vv + self.q_vel
        return self.pos.copy()

    def update(self, rows: np.ndarray, z: np.ndarray, observed: np.ndarray | None = None) -> None:
        """Correct tracks ``rows`` with measurements ``z`` (k, m); ``observed`` (k, m) false
        where a component is missing (its value is then ignored)."""
        if not len(rows):
            return
        pp, pv, vv = self.p_pp[rows], self.p_pv[rows], self.p_vv[rows]
        s = pp + self.r
        k_pos, k_vel = pp / s, pv / s
        if observed is not None:
            k_pos, k_vel = k_pos * observed, k_vel * observed
        innovation = np.nan_to_num(z - self.pos[rows])
        self.pos[rows] += k_pos * innovation
        self.vel[rows] += k_vel * innovation
        self.p_pp[rows] = (1 - k_pos) * pp
        self.p_pv[rows] = (1 - k_pos) * pv
        self.p_vv[rows] = vv - k_vel * pv
