"""Damaged videos: what decodes is analyzed, the frames that cannot be read are NaN rows listed
in ``_meta.pickle`` (unless ``strict``), and an earlier good result is never replaced by one
with more unreadable frames."""
from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dlc_runtime import Bundle, analyze_video
from dlc_runtime.backends import make_backend
from dlc_runtime.errors import AnalysisInterrupted, VideoError
from dlc_runtime.outputs import ResultPaths
from dlc_runtime.testing import TOY_SCORER, make_test_video, make_toy_bundle
from dlc_runtime.video import VideoIterator
from helpers.interrupt import CtrlCBackend

N = 300


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_toy_bundle(tmp_path_factory.mktemp("b") / "toy.bundle")


def _decodable(video: Path) -> int:
    """Frames OpenCV reads from the start before it fails."""
    with VideoIterator(video, batch_size=64, allow_truncated=True) as it:
        return sum(len(i) for i, _ in it)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    """A good mp4 and MJPG avi, a copy of the mp4 with 400 bytes overwritten in its middle, and
    the avi cut at 60 % of its bytes (its header still announces every frame)."""
    folder = tmp_path_factory.mktemp("v")
    good = make_test_video(folder / "good.mp4", n_frames=N)
    data = bytearray(good.read_bytes())
    data[len(data) // 2:len(data) // 2 + 400] = b"\xff" * 400
    (folder / "overwritten.mp4").write_bytes(bytes(data))
    avi = make_test_video(folder / "good.avi", n_frames=N, fourcc="MJPG")
    (folder / "cut.avi").write_bytes(avi.read_bytes()[: avi.stat().st_size * 6 // 10])
    found = {"good.mp4": good, "good.avi": avi, "overwritten.mp4": folder / "overwritten.mp4",
             "cut.avi": folder / "cut.avi"}
    for name in ("overwritten.mp4", "cut.avi"):
        if _decodable(found[name]) >= N - 2:
            pytest.skip(f"this OpenCV build decodes the damaged {name} to its end")
    return found


def _h5(result) -> pd.DataFrame:
    return pd.read_hdf(result.h5_path, "df_with_missing")


def _meta(result) -> dict:
    return pickle.loads(result.meta_path.read_bytes())["data"]


@pytest.fixture(scope="module")
def good_rows(bundle, videos, tmp_path_factory) -> dict[str, pd.DataFrame]:
    # One folder each: both videos are "good", so their results have the same names.
    return {name: _h5(analyze_video(bundle, videos[name], tmp_path_factory.mktemp("good"),
                                    progress=False))
            for name in ("good.mp4", "good.avi")}


def _nan_rows(df: pd.DataFrame) -> np.ndarray:
    values = df.to_numpy()
    assert np.isnan(values).all(axis=1).sum() == np.isnan(values).any(axis=1).sum()
    return df.index.to_numpy()[np.isnan(values).all(axis=1)]


def test_a_cut_video_gives_nan_rows_for_its_missing_frames(bundle, videos, good_rows, tmp_path):
    read = _decodable(videos["cut.avi"])
    res = analyze_video(bundle, videos["cut.avi"], tmp_path, progress=False)
    df = _h5(res)
    np.testing.assert_array_equal(df.index.to_numpy(), np.arange(N))
    np.testing.assert_array_equal(_nan_rows(df), np.arange(read, N))
    # The frames before the cut are the good video's; the last one may be cut through.
    pd.testing.assert_frame_equal(df.iloc[:read - 1], good_rows["good.avi"].iloc[:read - 1],
                                  check_exact=True)
    assert res.unreadable == N - read and f"{N - read} frames could not be read" in res.summary()
    data = _meta(res)
    assert data["unreadable_frames"] == [(read, N)] and data["nframes"] == N


def test_a_damaged_stretch_is_skipped_and_decoding_goes_on(bundle, videos, good_rows, tmp_path):
    stops_at = _decodable(videos["overwritten.mp4"])
    res = analyze_video(bundle, videos["overwritten.mp4"], tmp_path, progress=False)
    df, good = _h5(res), good_rows["good.mp4"]
    assert len(df) == N
    missing = _nan_rows(df)
    assert missing[0] == stops_at and missing[-1] < N - 1  # frames after the damage were read
    np.testing.assert_array_equal(missing, np.arange(stops_at, missing[-1] + 1))
    after = missing[-1] + 1
    pd.testing.assert_frame_equal(df.loc[after:], good.loc[after:], check_exact=True)
    # Before the damage: the good video's rows, but for the last frames the decoder concealed
    # (garbage pixels, no error: nothing can tell them from good ones).
    before = stops_at - 3
    pd.testing.assert_frame_equal(df.loc[:before], good.loc[:before], check_exact=True)
    assert _meta(res)["unreadable_frames"] == [(stops_at, after)]


def test_with_a_stride_only_selected_frames_are_rows(bundle, videos, tmp_path):
    read = _decodable(videos["cut.avi"])
    res = analyze_video(bundle, videos["cut.avi"], tmp_path, stride=7, progress=False)
    df = _h5(res)
    np.testing.assert_array_equal(df.index.to_numpy(), np.arange(0, N, 7))
    first_missing = -(-read // 7) * 7
    np.testing.assert_array_equal(_nan_rows(df), np.arange(first_missing, N, 7))
    assert _meta(res)["unreadable_frames"] == [(first_missing, range(0, N, 7)[-1] + 1)]


@pytest.mark.parametrize("name", ["cut.avi", "overwritten.mp4"])
def test_strict_stops_with_one_line_and_writes_nothing(bundle, videos, tmp_path, name):
    with pytest.raises(VideoError) as caught:
        analyze_video(bundle, videos[name], tmp_path, progress=False, strict=True)
    line = str(caught.value)
    assert "is truncated: decoded" in line and "\n" not in line
    assert not tmp_path.exists() or list(tmp_path.iterdir()) == []


def test_an_interrupted_damaged_video_resumes_to_the_same_rows(bundle, videos, tmp_path):
    reference = _h5(analyze_video(bundle, videos["overwritten.mp4"], tmp_path / "ref",
                                  progress=False))
    # Ctrl-C at the 25th batch of 8 frames: past the damaged stretch.
    backend = CtrlCBackend(make_backend(Bundle.load(bundle)), at=25)
    with pytest.raises(AnalysisInterrupted):
        analyze_video(bundle, videos["overwritten.mp4"], tmp_path, backend=backend,
                      progress=False)
    res = analyze_video(bundle, videos["overwritten.mp4"], tmp_path, progress=False)
    assert res.resumed_from is not None and res.resumed_from > _decodable(
        videos["overwritten.mp4"])
    pd.testing.assert_frame_equal(_h5(res), reference, check_exact=True)
    assert _meta(res)["unreadable_frames"] == pickle.loads(
        ResultPaths.for_video(videos["overwritten.mp4"], TOY_SCORER, tmp_path / "ref")
        .meta.read_bytes())["data"]["unreadable_frames"]


def test_a_good_result_is_not_replaced_by_a_damaged_one(bundle, videos, tmp_path, monkeypatch):
    video = tmp_path / "m3v1.mp4"
    shutil.copyfile(videos["good.mp4"], video)
    out = tmp_path / "out"
    good = analyze_video(bundle, video, out, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    shutil.copyfile(videos["overwritten.mp4"], video)  # a bad copy over the same name
    assert analyze_video(bundle, video, out, progress=False).skipped
    with pytest.raises(VideoError) as caught:
        analyze_video(bundle, video, out, progress=False, overwrite=True)
    line = str(caught.value)
    assert "could not be read, so the earlier complete result" in line and "\n" not in line
    paths = ResultPaths.for_video(video, TOY_SCORER, out)
    assert {p.name: p.read_bytes() for p in out.iterdir() if "_checkpoint." not in p.name} \
        == before
    assert paths.checkpoint.exists()
    # A plain rerun keeps the complete result, and the checkpoint (not the one it came from).
    assert analyze_video(bundle, video, out, progress=False).skipped
    assert paths.checkpoint.exists() and paths.checkpoint_rows.exists()

    # Deleting the good result (the user's choice) publishes the kept analysis, not decoded again.
    for path in (paths.h5, paths.meta, paths.record):
        path.unlink()

    def no_decoding(*args, **kwargs):
        raise AssertionError("the video was decoded again")

    monkeypatch.setattr("dlc_runtime.analysis_run.open_video", no_decoding)
    res = analyze_video(bundle, video, out, progress=False)
    assert res.unreadable > 0 and len(_nan_rows(_h5(res))) == res.unreadable
    assert good.n_frames == res.n_frames == N
