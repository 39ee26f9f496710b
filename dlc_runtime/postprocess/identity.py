"""Identity assignment on the host (numpy only): which predicted animal is which individual.

The graph samples the identity head's maps at keypoints (``IdentityPredictor.keypoint_scores``,
inside the exported graph); what is left is a small assignment per frame, done here.
"""
from __future__ import annotations

import numpy as np

from dlc_runtime.postprocess.paf_assembly import linear_sum_assignment

__all__ = ["assign_identity", "reorder_by_identity", "scores_at_peaks"]


def assign_identity(poses: np.ndarray, identity_scores: np.ndarray) -> np.ndarray:
    """DeepLabCut's identity assignment for one image.

    Args:
        poses: (N, K, 3) predicted animals (score last).
        identity_scores: (N, K, num_ids) from ``IdentityPredictor.keypoint_scores``.

    Returns:
        ``order`` such that ``poses[order][i]`` is individual ``i``: the assignment maximizing
        the keypoint-confidence weighted mean identity score, as DeepLabCut computes it (with
        N == num_ids, as after DeepLabCut's padding to the number of individuals).
    """
    poses = np.asarray(poses, dtype=np.float64)
    identity_scores = np.asarray(identity_scores, dtype=np.float64)
    if len(poses) != len(identity_scores):
        raise ValueError(f"{len(poses)} predicted animals but {len(identity_scores)} sets of "
                         f"identity scores")
    if identity_scores.ndim != 3 or identity_scores.shape[0] != identity_scores.shape[2]:
        # DeepLabCut pads the predictions to the number of individuals before assigning.
        raise ValueError(f"identity scores of shape {identity_scores.shape}: pad the "
                         f"predictions to one per individual (N == num_ids) first")
    # Missing keypoints (NaN score) weigh nothing, as their score 0 does in DeepLabCut.
    weights = np.nan_to_num(poses[:, :, 2:3], nan=0.0)
    cost = np.mean(weights * np.nan_to_num(identity_scores, nan=0.0), axis=1)  # (N, num_ids)
    rows, cols = linear_sum_assignment(cost, maximize=True)
    order = np.zeros(len(rows), dtype=np.int64)
    order[cols] = rows
    return order


def reorder_by_identity(poses: np.ndarray, identity_scores: np.ndarray) -> np.ndarray:
    """Applies :func:`assign_identity` to every frame of a batch.

    Args:
        poses: (B, N, K, 3); identity_scores: (B, N, K, num_ids) with N == num_ids.

    Returns:
        (B, N, K, 3): animal ``i`` of each frame is individual ``i``.
    """
    out = np.empty_like(poses)
    for b in range(len(poses)):
        out[b] = poses[b][assign_identity(poses[b], identity_scores[b])]
    return out


def scores_at_peaks(poses: np.ndarray, peaks: np.ndarray,
                    peak_scores: np.ndarray) -> np.ndarray:
    """Identity scores of assembled keypoints, looked up from the scores of the peaks they are.

    PAF models assemble animals on the host, after the graph, so the graph samples the identity
    maps at every candidate peak (``peak_identity``) and each assembled keypoint takes the scores
    of the peak it was built from (its coordinates are that peak's, copied exactly).

    Args:
        poses: (B, N, K, 3) assembled animals (NaN where missing).
        peaks: (B, K, P, 2) candidate peaks (-1 where none).
        peak_scores: (B, K, P, num_ids) identity scores at the peaks.

    Returns:
        (B, N, K, num_ids); 0 where a keypoint is missing.
    """
    batch, n, k = poses.shape[:3]
    out = np.zeros((batch, n, k, peak_scores.shape[-1]), dtype=np.float32)
    # (B, N, K, 1, 2) == (B, 1, K, P, 2): which peak slot each keypoint came from.
    same = np.all(poses[:, :, :, None, :2] == peaks[:, None], axis=-1)     # (B, N, K, P)
    found = same.any(-1)
    slot = same.argmax(-1)                                                 # (B, N, K)
    b_idx, k_idx = np.arange(batch)[:, None, None], np.arange(k)[None, None, :]
    picked = peak_scores[b_idx, k_idx, slot]                               # (B, N, K, ids)
    out[found] = picked[found]
    return out
