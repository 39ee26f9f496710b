"""Trackers and stitching together: per-frame animals in an arbitrary order -> tracklets
(streamed) -> N tracks, each following one animal, written as DeepLabCut's ``_el.h5``."""
from __future__ import annotations

import numpy as np
import pytest

from dlc_runtime.tracking import (Tracklets, make_tracker, read_stitched_h5, stitch_tracklets,
                                  stitched_frame, write_stitched_h5)

K = 4  # keypoints per animal


def _poses(n_frames: int, seed: int = 0) -> np.ndarray:
    """(F, 2, K, 3): two animals walking towards each other and past, slightly apart in y."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_frames, dtype=float)
    centres = np.stack([np.stack([20 + 2.0 * t, 40 + 0 * t], -1),
                        np.stack([20 + 2.0 * (n_frames - 1 - t), 75 + 0 * t], -1)], 1)
    offsets = np.array([[0, 0], [8, 0], [0, 8], [8, 8]], float)
    xy = centres[:, :, None, :] + offsets + rng.normal(0, 0.3, (n_frames, 2, K, 2))
    return np.concatenate([xy, np.full((n_frames, 2, K, 1), 0.9)], -1)


@pytest.mark.parametrize("method", ["ellipse", "box", "skeleton"])
def test_shuffled_detections_come_out_as_one_track_per_animal(method, tmp_path):
    truth = _poses(60)
    rng = np.random.default_rng(1)
    order = np.array([rng.permutation(2) for _ in range(len(truth))])  # slot order means nothing
    shuffled = np.take_along_axis(truth, order[:, :, None, None], axis=1).copy()
    shuffled[30, 0] = np.nan  # one animal missed for a frame
    store = Tracklets()
    params = {"min_hits": 1, "max_age": 3} if method != "box" else {"max_age": 3}
    tracker = make_tracker(method, tracklets=store, **params)
    for start in range(0, len(truth), 8):  # batches, as the analysis produces them
        tracker.track_batch(shuffled[start:start + 8],
                            frames=np.arange(start, min(start + 8, len(truth))))
    tracker.finish()
    result = stitch_tracklets(store.pop_closed(), n_tracks=2, min_length=3)
    tracked = result.to_array(len(truth))  # (F, 2, K, 3)
    # Each track follows one animal through the whole video (the one it starts on).
    for track in range(2):
        first = np.flatnonzero(np.isfinite(tracked[:, track, 0, 0]))[0]
        animal = int(np.argmin([np.nanmean(np.abs(tracked[first, track, :, :2]
                                                  - truth[first, a, :, :2])) for a in range(2)]))
        seen = np.isfinite(tracked[:, track, 0, 0])
        assert seen.sum() >= len(truth) - 2
        np.testing.assert_allclose(tracked[seen, track, :, :2], truth[seen, animal, :, :2])

    path = write_stitched_h5(tmp_path / f"v_scorer_{method}.h5",
                             stitched_frame(result, "scorer", [f"kp{i}" for i in range(K)],
                                            n_frames=len(truth)))
    back = read_stitched_h5(path)
    assert back.shape == (len(truth), 2 * K * 3)
    np.testing.assert_allclose(back.to_numpy().reshape(len(truth), 2, K, 3), tracked)
