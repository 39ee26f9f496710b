"""Frame selection: ``analyze_video(start=, stop=, stride=)`` gives exactly the matching rows of
a full run, keeps the video's frame indices and records the selection."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dlc_runtime import analyze_video
from dlc_runtime.errors import SelectionError
from dlc_runtime.outputs import ResultPaths
from dlc_runtime.selection import resolve_selection, to_frame
from dlc_runtime.testing import TOY_SCORER, make_test_video, make_toy_bundle

N = 90
FPS = 10.0


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_toy_bundle(tmp_path_factory.mktemp("b") / "toy.bundle")


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return make_test_video(tmp_path_factory.mktemp("v") / "m3v1.mp4", n_frames=N, fps=FPS)


@pytest.fixture(scope="module")
def full(bundle, video, tmp_path_factory) -> pd.DataFrame:
    res = analyze_video(bundle, video, tmp_path_factory.mktemp("full"), progress=False)
    return pd.read_hdf(res.h5_path, "df_with_missing")


SELECTIONS = {
    "frames": (dict(start=10, stop=50), range(10, 50)),
    "stride": (dict(stride=7), range(0, N, 7)),
    "all three": (dict(start=13, stop=77, stride=5), range(13, 77, 5)),
    "times": (dict(start="1s", stop="0:05", stride=3), range(10, 50, 3)),
    "float seconds": (dict(start=2.5, stride=4), range(25, N, 4)),
    "between frames": (dict(start="3.05s", stop="1:02:03"), range(31, N)),
    "digit strings": (dict(start="20", stop="30", stride="2"), range(20, 30, 2)),
    "stop past the end": (dict(start=80, stop=10_000), range(80, N)),
}


@pytest.mark.parametrize("name", list(SELECTIONS))
def test_selected_rows_equal_the_full_runs_rows(bundle, video, full, tmp_path, name):
    kwargs, frames = SELECTIONS[name]
    res = analyze_video(bundle, video, tmp_path, batch_size=4, progress=False, **kwargs)
    df = pd.read_hdf(res.h5_path, "df_with_missing")
    np.testing.assert_array_equal(df.index.to_numpy(), np.asarray(frames))
    pd.testing.assert_frame_equal(df, full.loc[list(frames)], check_exact=True)
    assert res.n_frames == len(frames)

    data = pickle.loads(res.meta_path.read_bytes())["data"]
    selection = data["frame_selection"]
    stop = kwargs.get("stop")
    assert (selection["start"], selection["stride"]) == (frames.start, frames.step)
    assert selection["stop"] == (None if stop is None else
                                 to_frame(stop, FPS, "stop", video))
    assert selection["start_asked"] == kwargs.get("start")
    assert data["nframes"] == len(frames) and data["unreadable_frames"] == []


def test_a_selection_is_a_result_of_its_own_kind(bundle, video, tmp_path):
    """The completion record keeps the selection; rewriting a deleted meta restores it."""
    res = analyze_video(bundle, video, tmp_path, start="2s", stride=2, progress=False)
    record = json.loads(ResultPaths.for_video(video, TOY_SCORER, tmp_path).record.read_text())
    assert record["run"]["selection"]["start"] == 20
    meta = pickle.loads(res.meta_path.read_bytes())
    res.meta_path.unlink()
    again = analyze_video(bundle, video, tmp_path, start="2s", stride=2, progress=False)
    assert again.skipped and pickle.loads(res.meta_path.read_bytes()) == meta


@pytest.mark.parametrize("kwargs,fragment", [
    (dict(start=50, stop=50), "stop=50 (frame 50) is not after start=50"),
    (dict(start="0:10", stop=20), "stop=20 (frame 20) is not after start='0:10' (frame 100)"),
    (dict(start=N), f"start={N} (frame {N}) is past the end of video"),
    (dict(start="1:30"), "start='1:30' (frame 900) is past the end"),
    (dict(start=-1), "start=-1: a frame index cannot be negative"),
    (dict(stop="ten"), "stop='ten' is not a frame index or a time"),
    (dict(start="1:75"), "minutes and seconds must be below 60"),
    (dict(stride=0), "stride=0: give a whole number of frames >= 1"),
    (dict(stride=1.5), "stride=1.5: give a whole number"),
    (dict(start=True), "start=True is not a frame index or a time"),
])
def test_a_bad_selection_is_one_line(bundle, video, tmp_path, kwargs, fragment):
    with pytest.raises(SelectionError) as caught:
        analyze_video(bundle, video, tmp_path, progress=False, **kwargs)
    assert fragment in str(caught.value) and "\n" not in str(caught.value)
    assert not tmp_path.exists() or list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value,frame", [
    (0, 0), (12, 12), ("12", 12), (1.2, 12), ("1.2s", 12), ("0:01.2", 12), ("00:00:01.2", 12),
    ("1.25s", 13), ("1:00", 600), ("1:00:00", 36_000), (1.0 / FPS * 3, 3), (None, None),
])
def test_positions(value, frame):
    assert to_frame(value, FPS, "start", "v.mp4") == frame


def test_a_time_needs_a_frame_rate():
    with pytest.raises(SelectionError, match="does not state its frame rate"):
        resolve_selection("1s", None, 1, fps=0.0, n_frames=0, video="v.mp4")
    assert resolve_selection(5, None, 2, fps=0.0, n_frames=0, video="v.mp4").start == 5
