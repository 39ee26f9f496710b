"""Tracking metrics on hand-made cases whose answers are known."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from dlc_runtime.tracking.metrics import animal_extent, pair_distances, tracking_metrics

F, K = 100, 4


def _truth(n_animals: int = 2) -> np.ndarray:
    """(F, A, K, 2): animals walking along parallel lanes 100 px apart, 20 px in size."""
    t = np.arange(F, dtype=float)
    shape = np.array([[0, 0], [20, 0], [0, 10], [20, 10]], float)
    centres = np.stack([np.stack([10 + t, np.full(F, 50.0 + 100 * a)], -1)
                        for a in range(n_animals)], 1)
    return centres[:, :, None] + shape


def _with_likelihood(xy: np.ndarray, p: float = 0.9) -> np.ndarray:
    return np.concatenate([xy, np.full(xy.shape[:-1] + (1,), p)], axis=-1)


def test_perfect_tracks_score_one():
    truth = _truth(3)
    tracks = _with_likelihood(truth[:, [2, 0, 1]])   # track order is irrelevant
    m = tracking_metrics(tracks, truth)
    assert (m.idf1, m.mota, m.precision, m.recall) == (1.0, 1.0, 1.0, 1.0)
    assert (m.id_switches, m.fragmentations, m.misses, m.false_positives) == (0, 0, 0, 0)
    assert (m.frames, m.objects, m.animals, m.mostly_tracked) == (F, 3 * F, 3, 3)
    assert m.motp_px == 0.0
    assert "IDF1 1.000, MOTA 1.000, 0 identity switches" in m.summary()


def test_one_swap_is_two_switches():
    truth = _truth(2)
    tracks = truth.copy()
    tracks[50:] = truth[50:, ::-1]   # the tracks exchange their animals at frame 50
    m = tracking_metrics(tracks, truth)
    assert m.id_switches == 2                        # each animal changes track once
    assert m.mota == pytest.approx(1 - 2 / (2 * F))
    assert m.idf1 == pytest.approx(0.5)              # each track right half of the time
    assert m.precision == m.recall == 1.0


def test_missing_track_lowers_recall_and_mota():
    truth = _truth(3)
    tracks = _with_likelihood(truth.copy())
    tracks[:, 1] = np.nan                            # one animal never tracked
    m = tracking_metrics(tracks, truth)
    assert m.misses == F and m.false_positives == 0
    assert m.recall == pytest.approx(2 / 3) and m.mota == pytest.approx(2 / 3)
    assert m.idf1 == pytest.approx(0.8)              # 2 * 2F / (2 * 2F + F)


def test_far_track_is_a_false_positive_and_a_miss():
    truth = _truth(2)
    tracks = truth.copy()
    tracks[:, 1] += 30.0                             # 42 px: beyond the default 11 px
    m = tracking_metrics(tracks, truth)
    assert m.max_distance_px == pytest.approx(0.5 * np.hypot(20, 10))
    assert (m.misses, m.false_positives) == (F, F) and m.mota == pytest.approx(0.0)
    far = tracking_metrics(tracks, truth, max_distance=50.0)
    assert far.mota == 1.0 and far.motp_px == pytest.approx((0 + 30 * np.sqrt(2)) / 2)


def test_missing_keypoints_and_likelihood():
    truth = _truth(2)
    tracks = _with_likelihood(truth.copy())
    tracks[:, 0, :2, :2] = np.nan                    # half the keypoints of track 0 missing
    tracks[40:50, 1, :, 2] = 0.1                     # track 1 unsure for 10 frames
    m = tracking_metrics(tracks, truth, min_likelihood=0.5)
    assert m.misses == 10 and m.id_switches == 0 and m.fragmentations == 1
    assert tracking_metrics(tracks, truth).misses == 0
    # Animals outside the frame (NaN truth) are not objects; tracks there are false positives.
    truth[60:, 1] = np.nan
    m = tracking_metrics(tracks, truth)
    assert m.objects == 2 * F - 40 and m.false_positives == 40


def test_pair_distances_use_shared_keypoints():
    a = np.array([[[0, 0], [10, 0]]], float)
    b = np.array([[[3, 4], [np.nan, np.nan]], [[np.nan, np.nan], [np.nan, np.nan]]])
    d = pair_distances(a, b)
    assert d[0, 0] == 5.0 and np.isnan(d[0, 1])
    assert animal_extent(_truth(2)) == pytest.approx(np.hypot(20, 10))


@pytest.mark.parametrize("tracks, truth, message", [
    (np.zeros((5, 2, 4)), np.zeros((5, 2, 4, 2)), "tracks must be"),
    (np.zeros((5, 2, 4, 3)), np.zeros((5, 2, 4, 3)), "truth must be"),
    (np.zeros((5, 2, 4, 3)), np.zeros((6, 2, 4, 2)), "same frames and keypoints"),
])
def test_bad_shapes_raise_one_line(tracks, truth, message):
    with pytest.raises(ValueError, match=message):
        tracking_metrics(tracks, truth)


def test_without_motmetrics_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "motmetrics", None)   # import fails as if not installed
    with pytest.raises(ImportError, match=r"tracking-metrics\]'$"):
        tracking_metrics(_truth(2), _truth(2))
