"""Evaluation metrics on hand-made predictions whose answers are worked out by hand: RMSE (all
and above pcutoff, per keypoint), PCK, OKS, mAP / mAR, DeepLabCut's greedy matching (its quirks
included), identity accuracy; and the choice of snapshots, bodyparts and pcutoff."""
from __future__ import annotations

import math

import numpy as np
import pytest

from dlc_train.config import ConfigError
from dlc_train.evaluation.identity import identity_accuracy
from dlc_train.evaluation.matching import closest_neighbors, oks
from dlc_train.evaluation.metrics import canonical_poses, compute_metrics
from dlc_train.evaluation.selection import (bodypart_subset, parse_index, resolve_pcutoff,
                                            select_snapshots)
from dlc_train.runners.metrics import compute_metrics as runner_metrics
from dlc_train.runners.snapshots import SnapshotError


def pose(*rows) -> np.ndarray:
    """One animal (K, 3) from (x, y, third) rows."""
    return np.array(rows, dtype=np.float64)


# -- single animal: RMSE, pcutoff, per keypoint, PCK -------------------------------------------

# Errors (px) image A: 5, 0, - (kp2 unlabeled); image B: 5, 10, 0.
GT = {"A": pose((10, 10, 2), (20, 20, 2), (0, 0, 0))[None],
      "B": pose((0, 0, 2), (6, 8, 2), (1, 1, 2))[None]}
PRED = {"A": pose((13, 14, 0.9), (20, 20, 0.3), (50, 50, 0.99))[None],
        "B": pose((3, 4, 0.8), (0, 0, 0.7), (1, 1, 0.5))[None]}


def test_single_animal_rmse_pcutoff_per_keypoint_and_pck():
    m = compute_metrics(GT, PRED, single_animal=True, pcutoff=0.6, per_keypoint_rmse=True,
                        pck_thresholds=[1, 5, 10])
    assert m["rmse"] == pytest.approx(20 / 5)            # the unlabeled keypoint is left out
    assert m["rmse_pcutoff"] == pytest.approx(20 / 3)    # scores .9, .8, .7 pass 0.6
    assert [m[f"rmse_keypoint_{k}"] for k in range(3)] == pytest.approx([5, 5, 0])
    assert (m["PCK@1px"], m["PCK@5px"], m["PCK@10px"]) == pytest.approx((2 / 5, 4 / 5, 1))


def test_pcutoff_per_bodypart():
    m = compute_metrics(GT, PRED, single_animal=True, pcutoff=[0.95, 0.0, 0.0])
    assert m["rmse_pcutoff"] == pytest.approx((0 + 10 + 0) / 3)  # kp0 (.9, .8) below .95
    nothing = compute_metrics(GT, PRED, single_animal=True, pcutoff=1.0)
    assert math.isnan(nothing["rmse_pcutoff"]) and nothing["rmse"] == pytest.approx(4)


def test_unique_bodyparts_join_the_rmse():
    ugt = {"A": pose((30, 30, 2))[None], "B": pose((0, 0, 0))[None]}
    upred = {"A": pose((30, 33, 0.9))[None], "B": pose((5, 5, 0.9))[None]}
    m = compute_metrics(GT, PRED, single_animal=True, pcutoff=0.6, unique_bodypart_gt=ugt,
                        unique_bodypart_poses=upred, per_keypoint_rmse=True)
    assert m["rmse"] == pytest.approx((20 + 3) / 6)
    assert m["rmse_unique_keypoint_0"] == pytest.approx(3)


def test_negative_scores_and_nan_are_missing():
    pred = {"A": pose((13, 14, 0.9), (0, 0, -1), (50, 50, 0.99))[None],
            "B": pose((3, 4, 0.8), (np.nan, np.nan, 0), (1, 1, 0.5))[None]}
    m = compute_metrics(GT, {k: canonical_poses(v) for k, v in pred.items()},
                        single_animal=True, pcutoff=0.6)
    assert m["rmse"] == pytest.approx((5 + 5 + 0) / 3)


# -- OKS and mAP --------------------------------------------------------------------------------

def square(x0: float, y0: float, size: float = 10, score: float = 1.0) -> np.ndarray:
    """A 4-keypoint animal on the corners of a square."""
    return pose((x0, y0, score), (x0 + size, y0, score), (x0, y0 + size, score),
                (x0 + size, y0 + size, score))


def test_oks_formula_and_visibility():
    gt = pose((0, 0, 2), (10, 0, 2), (0, 10, 2), (10, 10, 0))
    area = (10 + np.spacing(1)) ** 2
    pred = gt.copy()
    pred[0, :2] = (3, 4)
    expected = (math.exp(-25 / (2 * area * 0.2 ** 2)) + 2) / 3  # kp3 is not visible
    assert oks(pred, gt, 0.1) == pytest.approx(expected)
    assert oks(pred, gt, np.full(4, 0.1)) == pytest.approx(expected)
    assert math.isnan(oks(pred, pose((0, 0, 2), (5, 5, 0), (1, 1, 0), (2, 2, 0)), 0.1))
    missing = pred.copy()
    missing[0, :2] = np.nan  # a missing prediction counts as infinitely far
    assert oks(missing, gt, 0.1) == pytest.approx(2 / 3)


def test_map_between_thresholds():
    gt = {"img": pose((0, 0, 2), (10, 10, 2))[None]}
    # kp0 2.5 px off: OKS = (exp(-6.25 / 8) + 1) / 2 = 0.729, a hit for 0.50 ... 0.70 only.
    pred = {"img": pose((2.5, 0, 0.9), (10, 10, 0.9))[None]}
    m = compute_metrics(gt, pred)
    assert m["mAP"] == pytest.approx(50) and m["mAR"] == pytest.approx(50)


def test_map_counts_a_duplicate_as_false_positive():
    gt = {"img": np.stack([square(0, 0), square(100, 100)])}
    pred = {"img": np.stack([square(0, 0, score=0.9), square(1, 1, score=0.8),
                             square(100, 100, score=0.7)])}
    m = compute_metrics(gt, pred)
    # Ranked: hit, duplicate (false positive), hit -> precision 1, 1/2, 2/3 at recall 1/2,
    # 1/2, 1; made monotone: 1 up to recall 0.5 (51 of 101 points), 2/3 above (50 points).
    assert m["mAP"] == pytest.approx(100 * (51 + 50 * 2 / 3) / 101)
    assert m["mAR"] == pytest.approx(100)


def test_map_with_a_missed_animal_and_no_prediction():
    gt = {"img": np.stack([square(0, 0), square(100, 100)])}
    m = compute_metrics(gt, {"img": square(100, 100, score=0.5)[None]})
    assert m["mAP"] == pytest.approx(100 * 51 / 101) and m["mAR"] == pytest.approx(50)
    empty = compute_metrics(gt, {"img": np.full((1, 4, 3), np.nan)})
    assert (empty["mAP"], empty["mAR"]) == (0, 0) and math.isnan(empty["rmse"])


def test_multi_animal_rmse_matches_by_oks_in_score_order():
    gt = {"img": np.stack([square(0, 0), square(100, 100)])}
    near_second = square(101, 100, score=0.9)    # 1 px from animal 2
    near_first = square(0, 2, score=0.8)         # 2 px from animal 1
    exact_first = square(0, 0, score=0.7)        # ranked after near_first: its best is taken
    far = square(400, 400, score=0.95)           # OKS 0 with both: never matched
    pred = {"img": np.stack([near_second, exact_first, far, near_first])}
    m = compute_metrics(gt, pred, pcutoff=0.85)
    # DeepLabCut does not fall back to a prediction's second-best animal, so the exact one
    # stays unmatched and the RMSE is over the two matched predictions only.
    assert m["rmse"] == pytest.approx(1.5)
    assert m["rmse_pcutoff"] == pytest.approx(1.0)  # only near_second scores >= 0.85


def test_runner_metrics_are_the_evaluation_metrics():
    gts = [GT["A"], GT["B"]]
    preds = [PRED["A"], PRED["B"]]
    assert runner_metrics(gts, preds, pcutoff=0.6) == pytest.approx(
        {k: v for k, v in compute_metrics(GT, PRED, single_animal=True, pcutoff=0.6).items()})
    # An assembly slot without a keypoint (NaN, NaN, score 0) does not lower an animal's rank:
    # DeepLabCut's NaN scores leave the mean. Ranked first (0.6 > 0.5), the 3-keypoint animal
    # (OKS 3 * exp(-1/8) / 4 = 0.66) takes the ground truth at thresholds 0.50 ... 0.65 (AP 1);
    # at 0.70 ... 0.90 it misses and the other (OKS 0.94) hits second (AP 0.5); at 0.95 both
    # miss: mAP (4 + 5 * 0.5) / 10 = 65. Ranked by (0 + 3 * 0.6) / 4 = 0.45 it would be 90.
    three = square(1, 0, score=0.6)
    three[0] = (np.nan, np.nan, 0)
    ranked = runner_metrics([square(0, 0)[None]], [np.stack([square(0.5, 0.5, score=0.5),
                                                              three])])
    assert ranked["mAP"] == pytest.approx(65) and ranked["mAR"] == pytest.approx(90)


def test_canonical_poses_marks_padding_missing():
    padded = np.array([[[5, 5, 0.5], [6, 6, 0.5]], [[-1, -1, 0], [-1, -1, 0]]], np.float32)
    out = canonical_poses(padded)
    assert np.isnan(out[1]).all() and np.array_equal(out[0], padded[0])


# -- identity ------------------------------------------------------------------------------------

def test_identity_accuracy():
    gt = {"img": np.array([[[0, 0, 2], [5, 0, 2]], [[50, 50, 2], [0, 0, 0]]], float)}
    pred = {"img": np.array([[[51, 50, 0.9], [6, 0, 0.9]], [[1, 0, 0.9], [np.nan] * 3]])}
    # Identity scores of each predicted keypoint for individuals (0, 1).
    ids = {"img": np.array([[[0.2, 0.8], [0.9, 0.1]], [[0.7, 0.3], [0.5, 0.5]]])}
    acc = identity_accuracy(["head", "tail"], gt, pred, ids)
    # head: individual 0 pairs with pred 1 (says 0: right), individual 1 with pred 0 (says 1:
    # right); tail: individual 0 pairs with pred 0 (says 0: right); individual 1 unlabeled.
    assert acc == {"head_accuracy": 1.0, "tail_accuracy": 1.0}
    ids["img"][0, 0] = (0.9, 0.1)
    assert identity_accuracy(["head", "tail"], gt, pred, ids)["head_accuracy"] == 0.5


def test_closest_neighbors_serves_the_closest_pair_first():
    query = np.array([[0.0, 0.0], [1.0, 0.0]])
    ref = np.array([[0.9, 0.0], [10.0, 0.0]])
    assert closest_neighbors(query, ref).tolist() == [1, 0]  # query 1 is closer to ref 0
    assert closest_neighbors(query, ref[:1]).tolist() == [-1, 0]
    assert closest_neighbors(query[:0], ref).tolist() == []


# -- what to evaluate ---------------------------------------------------------------------------

def test_snapshot_index_follows_deeplabcut(tmp_path):
    for name in ("snapshot-005.pt", "snapshot-010.pt", "snapshot-best-007.pt",
                 "snapshot-detector-010.pt", "notes.pt"):
        (tmp_path / name).write_bytes(b"")
    names = lambda index: [s.path.name for s in select_snapshots(tmp_path, index)]  # noqa: E731
    assert names(-1) == ["snapshot-best-007.pt"]  # the best one is last
    assert names(0) == ["snapshot-005.pt"] and names("best") == ["snapshot-best-007.pt"]
    assert names("all") == ["snapshot-005.pt", "snapshot-010.pt", "snapshot-best-007.pt"]
    picked = select_snapshots(tmp_path, -1, names=["snapshot-010"])
    assert [s.epoch for s in picked] == [10]
    with pytest.raises(SnapshotError, match="out of range: .* holds 3 snapshot"):
        select_snapshots(tmp_path, 3)
    with pytest.raises(SnapshotError, match="snapshot-099 is not in"):
        select_snapshots(tmp_path, 0, names=["snapshot-099"])
    with pytest.raises(SnapshotError, match="no snapshot-\\*.pt in"):
        select_snapshots(tmp_path / "none", -1)


def test_arguments_are_read_like_deeplabcut():
    assert parse_index(None, -1) == -1 and parse_index("-2", 0) == -2
    assert parse_index("Best", 0) == "best"
    with pytest.raises(ConfigError, match="snapshot index 'last'"):
        parse_index("last", 0)
    assert bodypart_subset(["a", "b", "c"], ["u"], ["c", "u"]) == ([2], [0])
    assert bodypart_subset(["a", "b"], [], "all") == ([0, 1], [])
    with pytest.raises(ConfigError, match=r"\['z'\] are not bodyparts"):
        bodypart_subset(["a"], [], ["z"])
    assert resolve_pcutoff(None, 0.4, ["a"]) == 0.4
    assert resolve_pcutoff({"b": 0.9}, 0.4, ["a", "b"]) == [0.6, 0.9]
    with pytest.raises(ConfigError, match="2 values but 3 bodyparts"):
        resolve_pcutoff([0.1, 0.2], None, ["a", "b", "c"])
