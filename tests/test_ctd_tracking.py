"""CTD tracking (``dlc_runtime/pipelines/ctd_tracking.py``): identities kept from frame to frame,
when bottom-up runs, lost animals re-seeded into their free slot, state across batches, reset,
options.

Most tests run a real exported CTD bundle (``test_export_ctd``'s fixtures) with its two graphs
replaced by scripted ones over a known world of two moving animals, so who is in which slot is
checked exactly: the scripted bottom-up model returns the animals present in a frame in a
shuffled order with a pixel of noise; the scripted pose graph returns, for each condition, the
exact pose of the nearest present animal (likelihood falling with the distance), or a pose below
``threshold_ctd`` when none is near (the animal is lost). One test runs the real ONNX graphs.
"""
from __future__ import annotations

import numpy as np
import pytest

from dlc_runtime.bundle import Bundle
from dlc_runtime.errors import BundleError, TrackingError
from dlc_runtime.pipelines.base import PoseResult
from dlc_runtime.pipelines.ctd import CondTopDownPipeline
from dlc_runtime.pipelines.ctd_tracking import (CTDTrackingOptions, CTDTrackingPipeline,
                                                object_keypoint_similarity)
from dlc_train.runners.metrics import oks as reference_oks
from helpers.frames import textured_frames
from test_export_ctd import ctd_bundle, ctd_project  # noqa: F401  (module fixtures used here)

pytestmark = pytest.mark.usefixtures("one_thread")

H, W = 120, 160


# -- a scripted world ---------------------------------------------------------------------------

class World:
    """Animals 0 and 1 (24 px wide) walking towards each other on two rows at 3 px a frame (the
    bottom-up poses of frame t stay within DeepLabCut's threshold_bu_add of the tracked poses of
    t-1). ``absent[a]``: frames where animal a is not in the video; ``start`` / ``step``: per
    animal, centre at frame 0 and motion per frame."""

    def __init__(self, k: int, absent: dict[int, range] | None = None,
                 start=((30.0, 40.0), (130.0, 85.0)), step=((3.0, 0.0), (-3.0, 0.0))) -> None:
        self.k, self.absent = k, absent or {}
        self.start, self.step = np.asarray(start), np.asarray(step)
        angles = np.linspace(0, 2 * np.pi, k, endpoint=False)
        self.body = 12.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)

    def present(self, t: int) -> list[int]:
        return [a for a in range(len(self.start)) if t not in self.absent.get(a, ())]

    def pose(self, a: int, t: int) -> np.ndarray:
        xy = self.start[a] + t * self.step[a] + self.body
        return np.concatenate([xy, np.full((self.k, 1), 0.9)], axis=1).astype(np.float32)

    def frames(self, n: int, first: int = 0) -> np.ndarray:
        """Blank frames carrying their index in pixel (0, 0), for the scripted graphs."""
        out = np.zeros((n, H, W, 3), np.uint8)
        out[:, 0, 0, 0] = np.arange(first, first + n)
        return out


class ScriptedBottomUp:
    """The conditions model: the present animals, shuffled, with noise. Records its frames."""

    def __init__(self, world: World, seed: int = 0) -> None:
        self.world, self.rng, self.frames = world, np.random.default_rng(seed), []

    def __call__(self, images: np.ndarray) -> PoseResult:
        out = np.full((len(images), 2, self.world.k, 3), np.nan, np.float32)
        out[..., 2] = 0
        for b, image in enumerate(images):
            t = int(image[0, 0, 0])
            self.frames.append(t)
            present = self.world.present(t)
            for slot, a in enumerate(self.rng.permutation(present)):
                out[b, slot] = self.world.pose(a, t)
                out[b, slot, :, :2] += self.rng.normal(0, 1.0, (self.world.k, 2))
        return PoseResult(keypoints=out)


class ScriptedPose:
    """The CTD pose graph: per condition, the nearest present animal within 20 px (likelihood
    0.95 - 0.01 * centre distance), else the condition with likelihood 0.005 (lost)."""

    def __init__(self, world: World) -> None:
        self.world = world

    def run(self, images: np.ndarray, conditions: np.ndarray) -> dict[str, np.ndarray]:
        out = np.zeros(conditions.shape, np.float32)
        for b, image in enumerate(images):
            t = int(image[0, 0, 0])
            for m, cond in enumerate(conditions[b]):
                seen = cond[:, 2] > 0
                if not seen.any():
                    continue
                centre = cond[seen, :2].mean(0)
                dist = {a: np.linalg.norm(self.world.pose(a, t)[:, :2].mean(0) - centre)
                        for a in self.world.present(t)}
                near = min(dist, key=dist.get) if dist else None
                if near is not None and dist[near] < 20:
                    out[b, m] = self.world.pose(near, t)
                    out[b, m, :, 2] = 0.95 - 0.01 * dist[near]
                else:
                    out[b, m] = cond
                    out[b, m, :, 2] = 0.005
        return {"keypoints": out}


@pytest.fixture(scope="module")
def bundle(ctd_bundle):  # noqa: F811  (the imported fixture)
    loaded = Bundle.load(ctd_bundle.bundle_dir)
    assert loaded.manifest.decoder["max_individuals"] == 2 == len(loaded.individuals)
    return loaded


def scripted(bundle, world: World, cls=CTDTrackingPipeline, seed: int = 0, **options):
    """A pipeline on ``bundle`` whose two graphs are the scripted ones."""
    pipe = cls(bundle, **options)
    pipe.conditions = ScriptedBottomUp(world, seed)
    pipe.pose = ScriptedPose(world)
    return pipe


def identities(keypoints: np.ndarray, world: World) -> np.ndarray:
    """(T, M) which animal each slot shows (-1: empty or lost, below threshold_ctd); fails on a
    pose that is no animal's."""
    out = np.full(keypoints.shape[:2], -1)
    for t, frame in enumerate(keypoints):
        for m, pose in enumerate(frame):
            if not pose[0, 2] > 0.01:
                continue
            hits = [a for a in world.present(t)
                    if np.allclose(pose[:, :2], world.pose(a, t)[:, :2], atol=1e-4)]
            assert len(hits) == 1, f"frame {t} slot {m} is no animal's pose"
            out[t, m] = hits[0]
    return out


def assert_one_identity_per_slot(ids: np.ndarray) -> None:
    for m in range(ids.shape[1]):
        assert len(set(ids[:, m]) - {-1}) <= 1, f"slot {m} changed animal: {ids[:, m]}"


def run(pipe, world: World, n: int, splits=None) -> np.ndarray:
    frames = world.frames(n)
    if splits is None:
        return pipe(frames).keypoints
    edges = np.cumsum([0, *splits])
    assert edges[-1] == n
    return np.concatenate([pipe(frames[a:b]).keypoints for a, b in zip(edges, edges[1:])])


# -- identities ------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_identities_survive_shuffled_reseeding(bundle, seed):
    """Bottom-up re-seeds every 2 frames, and every frame while animal 1 is away (frames 6-9),
    each time with the animals in a new order: the animal still tracked is not added again, and
    animal 1 comes back into its own slot at the first re-seed that sees it."""
    world = World(bundle_k(bundle), absent={1: range(6, 10)})
    pipe = scripted(bundle, world, seed=seed, bu_min_frequency=2, bu_max_frequency=1)
    kp = run(pipe, world, 18)
    assert pipe.conditions.frames == [0, 2, 4, 6, 7, 8, 9, 10, 12, 14, 16]
    ids = identities(kp, world)
    assert_one_identity_per_slot(ids)
    slot_of = {a: int(np.flatnonzero(ids[0] == a)[0]) for a in (0, 1)}
    assert set(slot_of.values()) == {0, 1}
    assert (ids[:, slot_of[0]] == 0).all()  # animal 0 tracked throughout
    back = ids[:, slot_of[1]]
    assert (back[:6] == 1).all() and (back[6:10] == -1).all() and (back[10:] == 1).all()
    assert np.isnan(kp[7:10, slot_of[1], :, :2]).all() and (kp[7:10, slot_of[1], :, 2] == 0).all()
    # The shuffles matter: the plain CTD pipeline, in bottom-up order on every frame, swaps.
    plain = scripted(bundle, world, cls=CondTopDownPipeline, seed=seed)
    plain_ids = identities(plain(world.frames(18)).keypoints, world)
    assert any(len(set(plain_ids[:, m]) - {-1}) > 1 for m in range(2))


def test_lost_animal_does_not_take_anothers_slot(bundle):
    """Re-seeding while animal 1 is away: bottom-up (with every frame's order shuffled) finds
    animal 0 only, which is already tracked: the free slot stays free."""
    world = World(bundle_k(bundle), absent={1: range(3, 100)})
    pipe = scripted(bundle, world, bu_max_frequency=1, seed=3)
    ids = identities(run(pipe, world, 10), world)
    assert_one_identity_per_slot(ids)
    assert ((ids == 0).sum(1) == 1).all()  # never twice
    assert (ids[4:] == 1).sum() == 0 and ((ids[4:] == -1).sum(1) == 1).all()
    assert pipe.conditions.frames == [0, *range(4, 10)]


def test_converged_conditions_keep_the_better_track(bundle):
    """Animal 1 vanishes next to animal 0: its condition lands on animal 0 (OKS 1 with it); the
    track matching worse (lower likelihood) is freed, animal 0 keeps its slot."""
    world = World(bundle_k(bundle), absent={1: range(3, 100)}, start=((60, 60), (75, 60)),
                  step=((0, 0), (0, 0)))
    pipe = scripted(bundle, world)
    kp = run(pipe, world, 6)
    ids = identities(kp, world)
    slot0 = int(np.flatnonzero(ids[0] == 0)[0])
    assert (ids[:, slot0] == 0).all()
    assert (ids[3] == 0).all()  # frame 3: both slots on animal 0 (written, as DeepLabCut)
    assert (ids[4:, 1 - slot0] == -1).all() and np.isnan(kp[4:, 1 - slot0, :, :2]).all()


# -- when bottom-up runs ---------------------------------------------------------------------

@pytest.mark.parametrize("absent, options, expected", [
    ({}, {}, [0]),                                                   # defaults, all tracked
    ({}, {"bu_min_frequency": 4}, [0, 4, 8]),                         # every 4 frames
    ({1: range(3, 100)}, {"bu_max_frequency": 3}, [0, 4, 7, 10]),     # lost at 3
    ({1: range(3, 100)}, {"bu_max_frequency": None}, [0, *range(4, 12)]),
    ({1: range(3, 100)}, {"bu_max_frequency": 3, "bu_on_lost_idv": False}, [0]),
    ({1: range(3, 100)}, {"bu_min_frequency": 5, "bu_max_frequency": 3}, [0, 4, 7, 10]),
    ({0: range(3, 6), 1: range(3, 6)}, {}, [0, 4, 5, 6]),             # all lost: every frame
])
def test_bottom_up_runs(bundle, absent, options, expected):
    world = World(bundle_k(bundle), absent=absent)
    pipe = scripted(bundle, world, **options)
    ids = identities(run(pipe, world, 12), world)
    assert pipe.conditions.frames == expected
    assert pipe.bottom_up_runs == len(expected)
    assert_one_identity_per_slot(ids[:3])
    if absent == {0: range(3, 6), 1: range(3, 6)}:  # re-seeded at frame 6 from bottom-up
        assert (ids[4:6] == -1).all() and sorted(ids[6]) == [0, 1]


# -- state across batches, reset -----------------------------------------------------------------

def test_split_batches_give_the_same_result(bundle):
    world = World(bundle_k(bundle), absent={1: range(5, 9)})
    whole = scripted(bundle, world, bu_max_frequency=2)
    one = run(whole, world, 16)
    split = scripted(bundle, world, bu_max_frequency=2)
    parts = run(split, world, 16, splits=[7, 1, 3, 5])
    np.testing.assert_array_equal(one, parts)
    assert whole.conditions.frames == split.conditions.frames
    assert (identities(one, world) >= 0).sum() > 16  # something was tracked


def test_reset_starts_a_new_video(bundle):
    first, second = World(bundle_k(bundle)), World(bundle_k(bundle), start=((40, 90), (120, 30)))
    pipe = scripted(bundle, first)
    run(pipe, first, 5)
    pipe.reset()
    assert pipe.bottom_up_runs == 0
    pipe.conditions, pipe.pose = ScriptedBottomUp(second), ScriptedPose(second)
    after_reset = run(pipe, second, 5)
    assert pipe.conditions.frames == [0]
    fresh = scripted(bundle, second)
    np.testing.assert_array_equal(after_reset, run(fresh, second, 5))
    # Without reset the old tracks are the conditions: no bottom-up, the animals are not found.
    stale = scripted(bundle, first)
    run(stale, first, 5)
    stale.conditions, stale.pose = ScriptedBottomUp(second), ScriptedPose(second)
    kept = run(stale, second, 1)
    assert stale.conditions.frames == [] and not (kept[0, :, 0, 2] > 0.01).any()


# -- the real graphs ----------------------------------------------------------------------------

def test_real_graphs_follow_the_previous_frame(bundle):
    """ONNX graphs of the exported bundle: frame 0 is the plain CTD pipeline's; frame 1's
    conditions are frame 0's poses (passed through threshold_ctd); split batches agree."""
    frames = textured_frames(5, H, W, seed=3)
    plain = CondTopDownPipeline(bundle)
    pipe = CTDTrackingPipeline(bundle, bu_min_frequency=3)
    try:
        got = pipe(frames).keypoints
        assert got.shape == (5, 2, bundle_k(bundle), 3)
        np.testing.assert_array_equal(got[:1], plain(frames[:1]).keypoints)
        assert (got[0, :, :, 2] > 0.01).sum() >= 2, "frame 0 tracked nothing: check is empty"
        conds = np.where(((got[0, ..., 2] > 0.01) & (got[0, ..., 0] >= 0) & (got[0, ..., 1] >= 0)
                          & (got[0, ..., 0] < W) & (got[0, ..., 1] < H))[..., None], got[0], 0)
        conds = np.nan_to_num(conds).astype(np.float32)
        expected = plain.pose.run(frames[1:2], conditions=conds[None])["keypoints"][0]
        tracked = (conds[..., 2] > 0).sum(-1) >= 2
        np.testing.assert_allclose(got[1, tracked], expected[tracked], atol=1e-4)
        assert pipe.bottom_up_runs == 2  # frames 0 and 3
        pipe.reset()
        parts = np.concatenate([pipe(frames[:2]).keypoints, pipe(frames[2:]).keypoints])
        np.testing.assert_array_equal(got, parts)
    finally:
        pipe.close()
        plain.close()


# -- options ---------------------------------------------------------------------------------

def test_options_defaults_are_deeplabcuts():
    opts = CTDTrackingOptions()
    assert (opts.bu_on_lost_idv, opts.bu_min_frequency, opts.bu_max_frequency,
            opts.threshold_bu_add, opts.threshold_ctd, opts.threshold_nms) == \
        (True, None, 100, 0.25, 0.01, 0.9)
    assert CTDTrackingOptions.build(True) == opts
    assert CTDTrackingOptions.build(False) is None and CTDTrackingOptions.build(None) is None
    assert CTDTrackingOptions.build({"threshold_ctd": 0.2}).threshold_ctd == 0.2
    assert CTDTrackingOptions.from_dict({"bu_min_frequency": 1, "bu_max_frequency": 2.5},
                                        video_fps=30).bu_max_frequency == 75
    assert CTDTrackingOptions(bu_min_frequency=4.0).bu_min_frequency == 4


@pytest.mark.parametrize("config, words", [
    ({"bu_max_freq": 3}, ["bu_max_freq", "bu_max_frequency"]),
    ({"bu_min_frequency": 0}, ["bu_min_frequency", ">= 1"]),
    ({"bu_max_frequency": 2.5}, ["bu_max_frequency", "whole number"]),
    ({"threshold_ctd": 1.5}, ["threshold_ctd", "[0, 1]"]),
    ({"threshold_nms": "high"}, ["threshold_nms"]),
    ({"bu_on_lost_idv": "yes"}, ["bu_on_lost_idv"]),
    ([("threshold_ctd", 0.1)], ["mapping"]),
])
def test_bad_options_are_one_line(config, words):
    with pytest.raises(TrackingError) as err:
        CTDTrackingOptions.build(config)
    message = str(err.value)
    assert "\n" not in message and all(w in message for w in words), message


def test_bad_pipeline_arguments(bundle, ctd_bundle):  # noqa: F811
    with pytest.raises(TrackingError, match="threshold_bu_add"):
        CTDTrackingPipeline(bundle, threshold_bu_add=-0.1)
    with pytest.raises(BundleError, match="cond_top_down"):
        CTDTrackingPipeline(Bundle.load(ctd_bundle.bundle_dir / "conditions"))


def test_oks_is_deeplabcuts():
    rng = np.random.default_rng(0)
    pred = rng.uniform(0, 50, (3, 5, 2))
    true = pred[[1, 0]] + rng.normal(0, 3, (2, 5, 2))
    pred[0, 1] = np.nan  # a hidden predicted keypoint counts 0
    true[1, 2:] = np.nan  # only the visible ground-truth keypoints count
    for margin in (0.0, 1.0):
        got = object_keypoint_similarity(pred, true, margin=margin)
        for p in range(3):
            for t in range(2):
                gt = np.concatenate([true[t], np.isfinite(true[t]).all(1, keepdims=True)], 1)
                assert got[p, t] == pytest.approx(reference_oks(pred[p], np.nan_to_num(gt),
                                                                0.1, margin))
    one = true[:1].copy()
    one[0, 1:] = np.nan
    assert np.isnan(object_keypoint_similarity(pred, one)).all()  # one keypoint: no area


def bundle_k(bundle) -> int:
    return len(bundle.bodyparts)
