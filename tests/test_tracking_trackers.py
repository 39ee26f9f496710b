"""The box, ellipse and skeleton trackers on hand-made detections with known answers."""
from __future__ import annotations

import numpy as np
import pytest

from dlc_runtime.tracking import (BoxTracker, EllipseTracker, SkeletonTracker, Tracklets,
                                  make_tracker)

METHODS = ["box", "ellipse", "skeleton"]
K = 6
# An animal's keypoints around its centre: spread ~15 px, not symmetric (so ellipses have an axis).
SHAPE = np.array([[-20, -4], [-10, 3], [0, -2], [10, 4], [20, -3], [5, 8]], dtype=float)


def animal(x: float, y: float) -> np.ndarray:
    """(K, 3) pose centred at (x, y), likelihood 1."""
    return np.c_[SHAPE + [x, y], np.ones(K)]


def frames_of(centres: np.ndarray) -> np.ndarray:
    """(T, N, 2) centres -> (T, N, K, 3) poses; NaN centres give all-NaN animals (no detection)."""
    out = np.stack([[animal(*c) for c in row] for row in centres])
    return np.where(np.isnan(centres).any(-1)[..., None, None], np.nan, out)


def crossing(n_frames: int = 40) -> np.ndarray:
    """Two animals walking at each other on nearly the same line, passing at frame 20."""
    t = np.arange(n_frames)
    a = np.c_[100 + 5.0 * t, 100 + 0 * t]
    b = np.c_[300 - 5.0 * t, 106 + 0 * t]
    return np.stack([a, b], axis=1)


def tracker(method: str, **params):
    defaults = {"max_age": 1, "min_hits": 1}
    return make_tracker(method, **{**defaults, **params})


@pytest.mark.parametrize("method", METHODS)
def test_crossing_animals_keep_their_identities(method):
    trk = tracker(method)
    ids = trk.track_batch(frames_of(crossing()))
    assert (ids[:, 0] == ids[0, 0]).all() and (ids[:, 1] == ids[0, 1]).all()
    assert ids[0, 0] != ids[0, 1]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("gap", [1, 2])
def test_a_missed_detection_shorter_than_max_age_keeps_the_track(method, gap):
    centres = crossing()
    centres[10:10 + gap, 1] = np.nan
    ids = tracker(method, max_age=gap).track_batch(frames_of(centres))
    assert (ids[10:10 + gap, 1] == -1).all()
    assert ids[10 + gap, 1] == ids[9, 1] and ids[-1, 1] == ids[0, 1]
    assert (ids[:, 0] == ids[0, 0]).all()


@pytest.mark.parametrize("method", METHODS)
def test_a_track_dies_after_max_age(method):
    centres = crossing()
    centres[10:13, 1] = np.nan  # 3 frames missing > max_age 2
    store = Tracklets()
    trk = tracker(method, max_age=2, tracklets=store)
    ids = trk.track_batch(frames_of(centres))
    assert ids[13, 1] not in (ids[9, 1], ids[0, 0], -1)
    assert sorted(set(ids[:, 1]) - {-1}) == [ids[9, 1], ids[13, 1]]
    closed = store.pop_closed()
    assert [t.id for t in closed] == [ids[9, 1]]
    assert closed[0].frames.tolist() == list(range(10))
    np.testing.assert_allclose(closed[0].keypoints[3], animal(*centres[3, 1]))


@pytest.mark.parametrize("method", METHODS)
def test_a_new_animal_gets_a_new_id(method):
    centres = np.full((20, 3, 2), np.nan)
    centres[:, :2] = crossing(20)[:, :2]
    centres[8:, 2] = np.c_[200 + np.zeros(12), 300 + 2.0 * np.arange(12)]
    ids = tracker(method).track_batch(frames_of(centres))
    assert (ids[:8, 2] == -1).all()
    assert (ids[8:, 2] == ids[8, 2]).all() and ids[8, 2] not in ids[:8, :2]


@pytest.mark.parametrize("method", METHODS)
def test_min_hits(method):
    centres = np.full((12, 2, 2), np.nan)
    centres[:, 0] = np.c_[100 + 3.0 * np.arange(12), 100 + np.zeros(12)]
    centres[6:, 1] = np.c_[300 + np.zeros(6), 300 - 3.0 * np.arange(6)]
    ids = tracker(method, min_hits=3).track_batch(frames_of(centres))
    # The first min_hits frames of the video are reported at once (DeepLabCut's SORT rule).
    assert (ids[:, 0] == ids[0, 0]).all()
    # A later track is reported from its third consecutive detection on.
    assert (ids[6:8, 1] == -1).all() and (ids[8:, 1] == ids[8, 1]).all() and ids[8, 1] >= 0


@pytest.mark.parametrize("method", METHODS)
def test_identity_scores_decide_when_geometry_is_ambiguous(method):
    # Two still animals 10 px apart; then the detections land between them, the one carrying
    # animal B's identity slightly closer to A.
    centres = np.array([[[100, 100], [110, 100]]] * 6 + [[[104, 100], [106, 100]]], dtype=float)
    identity = np.tile(np.array([[0.9, 0.1], [0.1, 0.9]]), (7, 1, 1))
    identity[-1] = [[0.1, 0.9], [0.9, 0.1]]
    poses = frames_of(centres)
    plain = tracker(method).track_batch(poses)
    assert plain[-1].tolist() == plain[0].tolist()  # geometry alone: nearest wins
    ids = tracker(method).track_batch(poses, identity)
    assert ids[-1].tolist() == ids[0, ::-1].tolist()  # identity swaps the assignment


def test_track_identity_is_the_running_mean_of_its_detections():
    trk = EllipseTracker(max_age=1, min_hits=1)
    poses = frames_of(crossing(3))
    scores = [np.array([[0.8, 0.2], [0.3, 0.7]]), np.array([[0.6, 0.4], [0.1, 0.9]]),
              np.array([[1.0, 0.0], [0.2, 0.8]])]
    for frame, s in zip(poses, scores):
        ids = trk.update(frame, s)
    np.testing.assert_allclose(trk.track_identity(ids[0]), [0.8, 0.2])
    np.testing.assert_allclose(trk.track_identity(ids[1]), [0.2, 0.8])


@pytest.mark.parametrize("method", METHODS)
def test_missing_keypoints(method):
    rng = np.random.default_rng(3)
    poses = frames_of(crossing())
    hidden = rng.random(poses.shape[:3]) < 0.25
    hidden[..., :3] = False  # at least three visible keypoints, so an ellipse always fits
    poses[hidden, :2] = np.nan
    ids = tracker(method).track_batch(poses)
    assert (ids[:, 0] == ids[0, 0]).all() and (ids[:, 1] == ids[0, 1]).all()


def test_ellipse_needs_three_keypoints_and_all_nan_animals_are_no_detection():
    frame = np.stack([animal(100, 100), animal(300, 100), animal(500, 100)])
    frame[1, 2:, :2] = np.nan  # two keypoints left: no ellipse
    frame[2, :, :2] = np.nan
    assert EllipseTracker().update(frame).tolist() == [0, -1, -1]
    assert BoxTracker().update(frame).tolist() == [0, 1, -1]
    assert SkeletonTracker(min_hits=1).update(frame).tolist() == [0, 1, -1]


@pytest.mark.parametrize("method", METHODS)
def test_batches_give_the_same_ids_and_tracklets_as_frame_by_frame(method):
    rng = np.random.default_rng(0)
    n_frames, n = 60, 5
    centres = 200 + np.cumsum(rng.normal(0, 1, (n_frames, n, 2)), axis=0) + 60 * np.arange(n)[:, None]
    centres[20:22, 2] = np.nan
    poses = frames_of(centres)
    identity = rng.dirichlet(np.ones(n), (n_frames, n))
    unique = rng.random((n_frames, 2, 3))

    one, store_one = tracker(method, max_age=3), Tracklets()
    one.tracklets = store_one
    by_frame = np.stack([one.update(p, s, u) for p, s, u in zip(poses, identity, unique)])
    batched, store_b = tracker(method, max_age=3), Tracklets()
    batched.tracklets = store_b
    by_batch = np.concatenate([batched.track_batch(poses[i:i + 7], identity[i:i + 7],
                                                   unique[i:i + 7], range(i, min(i + 7, n_frames)))
                               for i in range(0, n_frames, 7)])
    np.testing.assert_array_equal(by_frame, by_batch)
    assert len(set(by_frame[:, 0])) == 1  # well separated walkers are followed throughout
    for trk in (one, batched):
        trk.finish()
    a, b = store_one.pop_closed(), store_b.pop_closed()
    assert [t.id for t in a] == [t.id for t in b] and len(a) == len(set(by_frame.ravel()) - {-1})
    for ta, tb in zip(a, b):
        np.testing.assert_array_equal(ta.frames, tb.frames)
        np.testing.assert_array_equal(ta.keypoints, tb.keypoints)
        np.testing.assert_array_equal(ta.identity, tb.identity)
    single = store_one.pop_single()
    assert sorted(single) == list(range(n_frames))
    np.testing.assert_array_equal(single[5], unique[5])


def test_bad_inputs_are_named():
    trk = EllipseTracker()
    with pytest.raises(ValueError, match="animals, keypoints, 3"):
        trk.update(np.zeros((2, 5)))
    trk.update(np.stack([animal(0, 0)]))
    with pytest.raises(ValueError, match="keypoints per animal"):
        trk.update(np.zeros((1, K + 1, 3)))
    with pytest.raises(ValueError, match="identity scores"):
        trk.update(np.stack([animal(0, 0)]), np.ones((2, 3)))
    with pytest.raises(ValueError, match="unknown track method"):
        make_tracker("transformer")
    with pytest.raises(ValueError, match="max_age"):
        BoxTracker(max_age=-1)
