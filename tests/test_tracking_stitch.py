"""Stitching tracklets into animals (min-cost flow) and DeepLabCut's ``_el`` files."""
from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("networkx", reason="stitching needs networkx")

from dlc_runtime.errors import OutputError  # noqa: E402
from dlc_runtime.tracking.el_format import (  # noqa: E402
    read_stitched_h5, read_tracklets_pickle, stitched_frame, stitched_h5_path,
    tracklets_pickle_path, write_stitched_chunks, write_stitched_h5, write_tracklets_pickle)
from dlc_runtime.tracking.stitch import (  # noqa: E402
    EdgeCost, compute_max_gap, stitch_tracklets)
from dlc_runtime.tracking.tracklets import Tracklet  # noqa: E402

OFFSETS = np.array([[-5.0, 0.0], [0.0, 0.0], [5.0, 2.0]])  # 3 keypoints around the centroid


def animal_path(n_frames, start, velocity):
    """(n_frames, 2) centroid positions of an animal moving at constant velocity."""
    return np.asarray(start, float) + np.arange(n_frames)[:, None] * np.asarray(velocity, float)


def piece(tid, path, frames, identity=None, n_ids=2):
    """A tracklet of the animal following ``path`` over ``frames``."""
    frames = np.asarray(list(frames))
    kp = np.empty((len(frames), len(OFFSETS), 3))
    kp[..., :2] = path[frames][:, None, :] + OFFSETS
    kp[..., 2] = 0.9
    ident = None
    if identity is not None:
        ident = np.full((len(frames), n_ids), 0.1)
        ident[:, identity] = 0.9
    return Tracklet(tid, frames, kp, ident)


def frames_of(track):
    return set(track.frames.tolist())


def two_animals_in_pieces():
    """Two animals 40 px apart moving right, each broken into 3 tracklets at different times."""
    a = animal_path(80, (0, 100), (2, 0))
    b = animal_path(80, (0, 140), (2, 0.5))
    pieces = [piece(7, a, range(0, 20)), piece(3, a, range(25, 50)), piece(11, a, range(55, 80)),
              piece(2, b, range(2, 15)), piece(9, b, range(20, 45)), piece(5, b, range(50, 80))]
    return pieces, a, b


def owner(track, a, b):
    """Which animal every pose of the track belongs to ('a', 'b', or 'mixed')."""
    c = track.keypoints[:, 1, :2]
    near_a = np.linalg.norm(c - a[track.frames], axis=1) < 1e-6
    near_b = np.linalg.norm(c - b[track.frames], axis=1) < 1e-6
    return "a" if near_a.all() else "b" if near_b.all() else "mixed"


def test_two_animals_broken_into_three_tracklets_each_are_stitched_back():
    pieces, a, b = two_animals_in_pieces()
    result = stitch_tracklets(pieces, n_tracks=2, min_length=10)
    assert [owner(t, a, b) for t in result.tracks] == ["a", "b"]  # ordered by first frame
    a_frames = set(range(0, 20)) | set(range(25, 50)) | set(range(55, 80))
    assert frames_of(result.tracks[0]) == a_frames
    b_frames = set(range(2, 15)) | set(range(20, 45)) | set(range(50, 80))
    assert frames_of(result.tracks[1]) == b_frames
    assert [[p.id for p in path] for path in result.paths] == [[7, 3, 11], [2, 9, 5]]
    assert result.residuals == []


def test_more_tracks_than_animals_leaves_tracks_empty():
    pieces, a, b = two_animals_in_pieces()
    result = stitch_tracklets(pieces, n_tracks=3, min_length=10)
    assert [owner(t, a, b) for t in result.tracks[:2]] == ["a", "b"]
    assert result.tracks[2] is None and result.paths[2] == []
    arr = result.to_array(n_frames=100)
    assert arr.shape == (100, 3, 3, 3)
    assert np.isnan(arr[:, 2]).all() and np.isnan(arr[80:]).all()
    np.testing.assert_allclose(arr[30, 0, :, :2], a[30] + OFFSETS)


def test_three_tracklets_competing_for_one_slot_the_nearest_wins():
    path = animal_path(70, (0, 100), (2, 0))
    first = piece("first", path, range(0, 30))
    near = piece("near", path, range(40, 70))  # continues the animal's motion
    far1 = piece("far1", path + [0, 120], range(40, 70))
    far2 = piece("far2", path + [150, 0], range(40, 70))
    result = stitch_tracklets([far2, first, far1, near], n_tracks=1, min_length=10)
    assert [p.id for p in result.paths[0]] == ["first", "near"]
    assert sorted(r.id for r in result.residuals) == ["far1", "far2"]


def test_overlapping_tracklets_are_never_joined():
    path = animal_path(60, (0, 100), (1, 0))
    early = piece("early", path, range(0, 30))
    # Same place as `early`, overlapping its last 10 frames: a join would be free but invalid.
    late = piece("late", path, range(20, 60))
    result = stitch_tracklets([early, late], n_tracks=1, min_length=10, add_back_residuals=True)
    track = result.tracks[0]
    assert len(np.unique(track.frames)) == len(track.frames)
    assert [p.id for p in result.paths[0]] == ["late"]  # the longer one covers more frames
    assert [r.id for r in result.residuals] == ["early"]
    two = stitch_tracklets([early, late], n_tracks=2, min_length=10)
    assert sorted(len(p) for p in two.paths) == [1, 1]


def test_identity_scores_decide_an_ambiguous_join():
    # Two animals vanish at frame 29 and reappear at frame 35; by distance alone the
    # crossing assignment is cheaper (40 + 40 px against 60 + 60), identity says otherwise.
    up, down = animal_path(70, (0, 100), (0, 0)), animal_path(70, (0, 200), (0, 0))
    mid_up, mid_down = animal_path(70, (0, 140), (0, 0)), animal_path(70, (0, 160), (0, 0))

    def pieces(with_identity):
        ids = (0, 1, 1, 0) if with_identity else (None,) * 4
        return [piece("A0", up, range(0, 30), ids[0]), piece("A1", down, range(0, 30), ids[1]),
                piece("B_near_A0", mid_up, range(35, 70), ids[2]),
                piece("B_near_A1", mid_down, range(35, 70), ids[3])]

    plain = stitch_tracklets(pieces(False), n_tracks=2, min_length=10)
    joins = {tuple(p.id for p in path) for path in plain.paths}
    assert joins == {("A0", "B_near_A0"), ("A1", "B_near_A1")}

    with_id = stitch_tracklets(pieces(True), n_tracks=2, min_length=10)
    joins = {tuple(p.id for p in path) for path in with_id.paths}
    assert joins == {("A0", "B_near_A1"), ("A1", "B_near_A0")}
    assert [t.identity_label for t in with_id.tracks] == [0, 1]  # ordered by identity


def test_animal_leaving_and_coming_back_rejoins_its_track():
    stay = animal_path(260, (0, 100), (1, 0))
    leave = animal_path(260, (400, 300), (0, 0))
    pieces = [piece("stay", stay, range(0, 100)), piece("out", leave, range(0, 30)),
              piece("back", leave, range(200, 260))]
    assert compute_max_gap(pieces) == 171  # 1.5x this bridges the absence
    result = stitch_tracklets(pieces, n_tracks=2, min_length=10)
    joins = {tuple(p.id for p in path) for path in result.paths}
    assert joins == {("stay",), ("out", "back")}


def test_short_residuals_are_attached_back_or_left_out():
    path = animal_path(60, (0, 100), (1, 0))
    pieces = [piece("a", path, range(0, 25)), piece("b", path, range(35, 60)),
              piece("short", path, range(27, 32)), piece("stray", path + [0, 50], range(10, 14))]
    kept = stitch_tracklets(pieces, n_tracks=1, min_length=10)
    assert frames_of(kept.tracks[0]) == set(range(0, 25)) | set(range(27, 32)) | set(range(35, 60))
    assert [r.id for r in kept.residuals] == ["stray"]  # overlaps the only track
    dropped = stitch_tracklets(pieces, n_tracks=1, min_length=10, add_back_residuals=False)
    assert frames_of(dropped.tracks[0]) == set(range(0, 25)) | set(range(35, 60))


def test_tracklets_with_a_missing_frame_are_split_unless_told_not_to():
    path = animal_path(60, (0, 100), (1, 0))
    other = animal_path(60, (0, 300), (1, 0))
    # The tracker swapped ids at frame 30 (missing frame 29): split_tracklets repairs it.
    t1 = Tracklet(1, np.r_[0:29, 30:60], np.concatenate(
        [piece(0, path, range(0, 29)).keypoints, piece(0, other, range(30, 60)).keypoints]))
    t2 = Tracklet(2, np.r_[0:29, 30:60], np.concatenate(
        [piece(0, other, range(0, 29)).keypoints, piece(0, path, range(30, 60)).keypoints]))
    fixed = stitch_tracklets([t1, t2], n_tracks=2, min_length=10)
    assert [owner(t, path, other) for t in fixed.tracks] == ["a", "b"]
    kept = stitch_tracklets([t1, t2], n_tracks=2, min_length=10, split_tracklets=False)
    assert [owner(t, path, other) for t in kept.tracks] == ["mixed", "mixed"]


def test_edge_cost_terms():
    path = animal_path(40, (0, 100), (2, 0))
    t1, t2 = piece(1, path, range(0, 10)), piece(2, path, range(15, 30))
    assert EdgeCost()(t1, t2) == pytest.approx(12.0)  # frames 9 -> 15 at 2 px a frame
    assert EdgeCost(distance=0, motion=1)(t1, t2) == pytest.approx(0.0)  # velocity predicts it
    assert EdgeCost(distance=0, time_gap=2)(t1, t2) == pytest.approx(12.0)
    bigger = Tracklet(3, t2.frames, t2.keypoints * [2, 1, 1] - [path[15][0], 0, 0])
    assert EdgeCost(distance=0, shape=1)(t1, t2) == pytest.approx(0.0)
    assert EdgeCost(distance=0, shape=1)(t1, bigger) > 1.0


def test_bad_arguments_say_what_is_wrong():
    path = animal_path(20, (0, 0), (1, 0))
    with pytest.raises(ValueError, match="n_tracks"):
        stitch_tracklets([piece(1, path, range(20))], n_tracks=0)
    with pytest.raises(ValueError, match="min_length"):
        stitch_tracklets([piece(1, path, range(20))], n_tracks=1, min_length=2)
    with pytest.raises(ValueError, match="nothing to stitch"):
        stitch_tracklets([piece(1, path, range(5))], n_tracks=1)
    with pytest.raises(ValueError, match="appears twice"):
        Tracklet(1, [0, 1, 1], np.zeros((3, 2, 3)))


# ---------------------------------------------------------------- DeepLabCut's _el files

BODYPARTS, UNIQUE = ["snout", "center", "tail"], ["arena_mark"]


def dlc_stitched_columns(scorer, names, bodyparts, unique):
    """The columns DeepLabCut's ``TrackletStitcher.format_df`` builds (from_product, then the
    unique bodyparts joined under ``single``)."""
    level_names = ["scorer", "individuals", "bodyparts", "coords"]
    cols = pd.MultiIndex.from_product([[scorer], names, bodyparts, ["x", "y", "likelihood"]],
                                      names=level_names)
    single = pd.MultiIndex.from_product([[scorer], ["single"], unique, ["x", "y", "likelihood"]],
                                        names=level_names)
    return cols.append(single)


def single_track(frames):
    kp = np.zeros((len(frames), 1, 3))
    kp[:, 0] = [50.0, 60.0, 0.8]
    return Tracklet("single", frames, kp)


def test_tracklets_pickle_has_deeplabcuts_layout(tmp_path):
    pieces, _, _ = two_animals_in_pieces()
    pieces[0] = piece(7, animal_path(80, (0, 100), (2, 0)), range(0, 20), identity=1)
    h5 = tmp_path / "videoDLC_resnet50_demoshuffle1_100.h5"
    path = write_tracklets_pickle(tracklets_pickle_path(h5), pieces, "DLC_scorer", BODYPARTS,
                                  UNIQUE, single=single_track(np.arange(0, 80, 2)), n_frames=120)
    assert path.name == "videoDLC_resnet50_demoshuffle1_100_el.pickle"
    assert not list(tmp_path.glob("*.part"))
    with open(path, "rb") as fh:
        raw = pickle.load(fh)
    assert type(raw) is dict
    assert set(raw) == {"header", "single", 7, 3, 11, 2, 9, 5}
    header = raw["header"]
    assert list(header.names) == ["scorer", "bodyparts", "coords"]
    assert list(header.get_level_values("bodyparts").unique()) == BODYPARTS + UNIQUE
    assert len(header) == 3 * 4
    assert list(raw[3])[:2] == ["frame025", "frame026"]  # width ceil(log10(120)) = 3
    assert raw[3]["frame025"].shape == (3, 4)
    assert (raw[3]["frame025"][:, 3] == -1).all() and (raw[7]["frame000"][:, 3] == 1).all()
    assert raw["single"][4].shape == (1, 3)

    back = read_tracklets_pickle(path)
    assert back.header.equals(header)
    by_id = {t.id: t for t in back.tracklets}
    for t in pieces:
        np.testing.assert_array_equal(by_id[t.id].frames, t.frames)
        np.testing.assert_array_equal(by_id[t.id].keypoints, t.keypoints)
    assert by_id[7].identity_label == 1 and by_id[3].identity is None
    np.testing.assert_array_equal(back.single.frames, np.arange(0, 80, 2))


def test_reads_a_deeplabcut_written_tracklets_dict(tmp_path):
    # DeepLabCut's tracker falls back to flat (x, y, 1) rows for predicted poses.
    raw = {"header": None, 0: {"frame00": np.array([[1.0, 2.0, 0.9, -1]] * 3),
                               "frame01": np.array([3.0, 4.0, 1.0] * 3)}}
    path = tmp_path / "v_el.pickle"
    path.write_bytes(pickle.dumps(raw))
    (t,) = read_tracklets_pickle(path).tracklets
    np.testing.assert_array_equal(t.frames, [0, 1])
    np.testing.assert_array_equal(t.keypoints[1, 0], [3.0, 4.0, 1.0])
    with pytest.raises(OutputError, match="no tracklets file"):
        read_tracklets_pickle(tmp_path / "missing_el.pickle")


def test_stitched_h5_round_trip_matches_deeplabcut_columns_and_index(tmp_path):
    pieces, a, _ = two_animals_in_pieces()
    result = stitch_tracklets(pieces, n_tracks=3, min_length=10)
    single = single_track(np.arange(0, 90, 3))
    frame = stitched_frame(result, "DLC_scorer", BODYPARTS, ["mouse1", "mouse2", "mouse3"],
                           UNIQUE, single=single)
    expected_cols = dlc_stitched_columns("DLC_scorer", ["mouse1", "mouse2", "mouse3"],
                                         BODYPARTS, UNIQUE)
    assert frame.columns.equals(expected_cols)
    assert list(frame.columns.names) == list(expected_cols.names)
    assert [list(lv) for lv in frame.columns.levels] == [list(lv) for lv in expected_cols.levels]
    np.testing.assert_array_equal(frame.index, np.arange(88))  # up to the last tracked frame
    np.testing.assert_allclose(frame.loc[30, ("DLC_scorer", "mouse1", "snout", "x")],
                               a[30, 0] + OFFSETS[0, 0])
    assert frame.xs("mouse3", axis=1, level="individuals").isna().all().all()

    h5 = stitched_h5_path(tmp_path / "videoDLC_scorer.h5")
    assert h5.name == "videoDLC_scorer_el.h5"
    write_stitched_h5(h5, frame)
    assert not list(tmp_path.glob("*.part"))
    back = read_stitched_h5(h5)
    pd.testing.assert_frame_equal(back, frame, check_index_type=False)
    assert back.columns.equals(expected_cols)
    pd.testing.assert_frame_equal(pd.read_hdf(h5, "tracks"), back)  # DeepLabCut's key


def test_stitched_frame_defaults_and_errors():
    pieces, _, _ = two_animals_in_pieces()
    result = stitch_tracklets(pieces, n_tracks=2, min_length=10)
    frame = stitched_frame(result, "s", BODYPARTS, n_frames=100)
    assert list(frame.columns.get_level_values("individuals").unique()) == ["ind1", "ind2"]
    assert len(frame) == 100 and frame.iloc[80:].isna().all().all()
    with pytest.raises(ValueError, match="individual names"):
        stitched_frame(result, "s", BODYPARTS, ["only_one"])
    with pytest.raises(ValueError, match="n_frames"):
        stitched_frame(result, "s", BODYPARTS, n_frames=50)


def test_stitched_table_written_in_blocks_equals_the_whole(tmp_path):
    pieces, _, _ = two_animals_in_pieces()
    result = stitch_tracklets(pieces, n_tracks=2, min_length=10)
    whole = stitched_frame(result, "s", BODYPARTS, n_frames=100)
    blocks = [whole.iloc[i:i + 33] for i in range(0, 100, 33)]
    h5 = write_stitched_chunks(tmp_path / "v_el.h5", blocks, tmp_path / "v_el.csv")
    pd.testing.assert_frame_equal(read_stitched_h5(h5), whole, check_index_type=False)
    csv = pd.read_csv(tmp_path / "v_el.csv", header=[0, 1, 2, 3], index_col=0)
    np.testing.assert_allclose(csv.to_numpy(), whole.to_numpy())
    assert not list(tmp_path.glob("*.part"))
