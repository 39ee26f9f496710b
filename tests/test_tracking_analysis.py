"""Tracking inside the analysis: ``analyze_video(track=...)`` on a video whose frames carry
chosen detections (``dlc_runtime.testing``'s coded video and toy multi-animal bundle), so the
real decode -> backend -> checkpoint -> tracker -> stitch -> files path runs on detections
whose identities are known: three animals, two crossing, listed in a random order each frame,
one missed for a few frames."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dlc_runtime import analyze_video
from dlc_runtime.checkpoint import CRASH_ENV
from dlc_runtime.errors import BundleError, TrackingError
from dlc_runtime.testing import make_test_video, make_toy_bundle, make_toy_multi_animal_bundle
from dlc_runtime.tracking import read_tracklets_pickle
from helpers.coded_animals import F, K, N, followed, shuffled_video, truth_poses

RUN = dict(batch_size=8, progress=False, checkpoint_every=16, checkpoint_seconds=None)


@pytest.fixture(scope="module")
def truth() -> np.ndarray:
    return truth_poses()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_toy_multi_animal_bundle(tmp_path_factory.mktemp("b") / "toy.bundle", N)


@pytest.fixture(scope="module")
def video(tmp_path_factory, truth) -> Path:
    return shuffled_video(tmp_path_factory.mktemp("v") / "m3v1.avi", truth)


@pytest.fixture(scope="module")
def reference(bundle, video, tmp_path_factory):
    """The uninterrupted run with ellipse tracking."""
    return analyze_video(bundle, video, tmp_path_factory.mktemp("ref"), track="ellipse", **RUN)


def _tracks(path: Path) -> np.ndarray:
    return pd.read_hdf(path, "tracks").to_numpy().reshape(-1, N, K, 3)


@pytest.mark.parametrize("method", ["ellipse", "box", "skeleton"])
def test_each_track_follows_one_animal_through_the_crossing(bundle, video, truth, tmp_path,
                                                           method):
    res = analyze_video(bundle, video, tmp_path, track=method, save_as_csv=True, **RUN)
    suffix = {"ellipse": "_el", "box": "_bx", "skeleton": "_sk"}[method]
    assert res.tracks_h5 == res.h5_path.with_name(res.h5_path.stem + suffix + ".h5")
    assert res.tracking.tracklets_pickle.is_file() and res.tracking.tracks_csv.is_file()
    table = pd.read_hdf(res.tracks_h5, "tracks")
    analysis = pd.read_hdf(res.h5_path, "df_with_missing")
    assert table.index.equals(analysis.index) and table.columns.equals(analysis.columns)
    tracks = _tracks(res.tracks_h5)
    assert sorted(followed(tracks, truth)) == [0, 1, 2]
    # everything but the three lost frames (and the tracker's first min_hits frames of a
    # track broken by the loss) is tracked
    assert np.isfinite(tracks[..., 0, 0]).sum() >= N * F - 3 - 2
    assert "stitched into 3 animals" in res.summary()


def test_a_resumed_analysis_tracks_exactly_as_an_uninterrupted_one(bundle, video, reference,
                                                                   tmp_path):
    code = ("import sys; from dlc_runtime import analyze_video; "
            "analyze_video(sys.argv[1], sys.argv[2], sys.argv[3], track='ellipse', "
            "batch_size=8, checkpoint_every=16, checkpoint_seconds=None, progress=False)")
    for point in ("batch:9", "published"):  # mid-run; after publishing, before the tracks
        dest = tmp_path / point.replace(":", "_")
        proc = subprocess.run([sys.executable, "-c", code, str(bundle), str(video), str(dest)],
                              env=dict(os.environ, **{CRASH_ENV: point}), capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        res = analyze_video(bundle, video, dest, track="ellipse", **RUN)
        assert res.resumed_from == 64 if point == "batch:9" else res.skipped
        pd.testing.assert_frame_equal(pd.read_hdf(res.tracks_h5, "tracks"),
                                      pd.read_hdf(reference.tracks_h5, "tracks"),
                                      check_exact=True)


def test_tracking_a_finished_result_needs_no_network_and_matches(bundle, video, reference,
                                                                 tmp_path):
    first = analyze_video(bundle, video, tmp_path, **RUN)
    assert first.tracking is None and not list(tmp_path.glob("*_el.*"))
    again = analyze_video(bundle, video, tmp_path, track="ellipse", backend="no-such-backend",
                          **RUN)  # skipped: the backend is never made
    assert again.skipped and again.tracks_h5 is not None
    pd.testing.assert_frame_equal(pd.read_hdf(again.tracks_h5, "tracks"),
                                  pd.read_hdf(reference.tracks_h5, "tracks"), check_exact=True)
    assert analyze_video(bundle, video, tmp_path, track="ellipse", **RUN).tracking is None


def test_a_strided_analysis_is_tracked_in_analysed_rows(bundle, video, truth, tmp_path):
    res = analyze_video(bundle, video, tmp_path, track="ellipse", stride=2, **RUN)
    table = pd.read_hdf(res.tracks_h5, "tracks")
    assert list(table.index) == list(range(0, F, 2))
    # rows two frames apart are consecutive for the tracker: no track breaks at every row
    assert res.tracking.n_tracklets <= 2 * N
    tracks = table.to_numpy().reshape(-1, N, K, 3)
    assert sorted(followed(tracks, truth[::2])) == [0, 1, 2]


def test_tracklets_file_holds_the_tracker_output_in_video_frames(reference):
    found = read_tracklets_pickle(reference.tracking.tracklets_pickle)
    assert len(found.tracklets) == reference.tracking.n_tracklets
    assert all(0 <= t.start and t.end < F for t in found.tracklets)
    assert sum(len(t) for t in found.tracklets) >= N * F - 3 - 2


def test_too_short_to_stitch_keeps_the_analysis_and_says_why(bundle, video, tmp_path):
    res = analyze_video(bundle, video, tmp_path, track="ellipse", stop=8,
                        track_options={"min_length": 10}, **RUN)
    assert res.h5_path.is_file() and res.tracking.tracklets_pickle.is_file()
    assert res.tracks_h5 is None and "not stitched" in res.summary()
    assert "10 frames long" in res.tracking.error


def test_options_that_cannot_work_are_one_line(bundle, video, tmp_path):
    single = make_toy_bundle(tmp_path / "single.bundle")
    with pytest.raises(BundleError, match="single-animal bundle"):
        analyze_video(single, make_test_video(tmp_path / "v.mp4"), tmp_path, track="ellipse")
    for kwargs, message in [
        (dict(track="kalman"), "unknown track method"),
        (dict(track="ellipse", track_options={"oks_threshold": 0.5}), "has no parameter"),
        (dict(track="box", n_animals=0), "n_animals"),
        (dict(n_animals=2), "need track="),
        (dict(track="ellipse", track_options={"identity_only": True}), "identity head"),
    ]:
        with pytest.raises(TrackingError, match=message):
            analyze_video(bundle, video, tmp_path / "bad", progress=False, **kwargs)
    assert not (tmp_path / "bad").exists()  # refused before anything was written


def test_tracking_runs_while_the_next_batch_computes(bundle, video, reference, tmp_path,
                                                     monkeypatch):
    """On an asynchronous backend the tracker takes batch i while batch i+1 is in flight."""
    from dlc_runtime import Bundle, make_backend
    from dlc_runtime.tracking.video_tracker import VideoTracker
    from helpers.deferred import DeferredBackend

    backend = DeferredBackend(make_backend(Bundle.load(bundle)))
    in_flight = []
    add = VideoTracker.add

    def watched(self, *args, **kwargs):
        in_flight.append(backend.in_flight)
        return add(self, *args, **kwargs)

    monkeypatch.setattr(VideoTracker, "add", watched)
    res = analyze_video(bundle, video, tmp_path, track="ellipse", backend=backend, **RUN)
    assert len(in_flight) == F // 8 and in_flight[:-1] == [1] * (F // 8 - 1)
    assert in_flight[-1] == 0  # the last batch has no successor
    pd.testing.assert_frame_equal(pd.read_hdf(res.tracks_h5, "tracks"),
                                  pd.read_hdf(reference.tracks_h5, "tracks"), check_exact=True)


def test_unique_bodyparts_are_carried_into_the_tracks(truth, tmp_path):
    from dlc_runtime.tracking.options import TrackingOptions
    from dlc_runtime.tracking.video_tracker import VideoTracker, write_tracking

    unique = np.stack([np.full(F, 5.0), np.arange(F, dtype=float), np.full(F, 0.7)], -1)
    tracker = VideoTracker(TrackingOptions("box", tracker={"min_hits": 1}))
    frames = np.arange(1000, 1000 + F)  # the video's frame numbers, not rows
    for start in range(0, F, 16):
        tracker.add(frames[start:start + 16], truth[start:start + 16],
                    unique[start:start + 16, None])
    out = write_tracking(tracker.finish(), tmp_path / "vDLC_s.h5", "DLC_s",
                         ["a", "b", "c", "d"], ["arena"], ["m1", "m2", "m3"],
                         TrackingOptions("box"))
    table = pd.read_hdf(out.tracks_h5, "tracks")
    assert list(table.index) == list(frames)
    np.testing.assert_array_equal(table.xs("single", axis=1, level="individuals").to_numpy(),
                                  unique)
    found = read_tracklets_pickle(out.tracklets_pickle)
    np.testing.assert_array_equal(found.single.frames, frames)
    assert sorted(followed(table.drop(columns="single", level="individuals").to_numpy()
                           .reshape(F, N, K, 3), truth)) == [0, 1, 2]


def test_identity_only_takes_each_slot_as_one_animal(truth, tmp_path):
    from dlc_runtime.tracking.options import TrackingOptions
    from dlc_runtime.tracking.video_tracker import VideoTracker, write_tracking

    options = TrackingOptions(identity_only=True, n_animals=4)
    with pytest.raises(TrackingError, match="identity head"):
        VideoTracker(options)
    tracker = VideoTracker(options, identity_slots=True)  # slots already ordered by identity
    shown = truth.copy()
    shown[40:45, 1] = np.nan  # individual 2 unseen for 5 frames: its slot stays empty there
    for start in range(0, F, 32):
        tracker.add(np.arange(start, min(start + 32, F)), shown[start:start + 32])
    out = write_tracking(tracker.finish(), tmp_path / "vDLC_s.h5", "DLC_s",
                         ["a", "b", "c", "d"], [], ["m1", "m2", "m3"], options)
    tracks = pd.read_hdf(out.tracks_h5, "tracks").to_numpy().reshape(F, 4, K, 3)
    np.testing.assert_allclose(tracks[:, :N], shown.astype(np.float32))
    assert np.isnan(tracks[:, 3]).all() and out.n_tracks == N
