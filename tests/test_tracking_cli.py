"""`dlc analyze --track` and `dlc track` as a user runs them: the files they write, tracking
again from each kind of result (the analysis .h5, _full.pickle, _el.pickle), and one `Error:`
line for what cannot work."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dlc_runtime.testing import make_test_video, make_toy_bundle, make_toy_multi_animal_bundle
from dlc_runtime.tracking.track_results import load_results_pickle
from helpers.cli import invoke, one_error_line
from helpers.coded_animals import N, followed, shuffled_video, truth_poses


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    """`dlc analyze --track ellipse` on the three coded animals: (folder, truth, result stem)."""
    folder = tmp_path_factory.mktemp("cli")
    truth = truth_poses()
    bundle = make_toy_multi_animal_bundle(folder / "toy.bundle", N)
    video = shuffled_video(folder / "m3v1.avi", truth)
    result = invoke(["analyze", bundle, video, "--dest", folder / "out", "--track", "ellipse",
                     "--track-option", "max_age=50", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "stitched into 3 animals" in result.output
    stem = next((folder / "out").glob("*_el.h5")).name[:-len("_el.h5")]
    return folder / "out", truth, stem


def _tracks(path: Path) -> np.ndarray:
    return pd.read_hdf(path, "tracks").to_numpy().reshape(len(pd.read_hdf(path, "tracks")),
                                                          -1, 4, 3)


def test_analyze_track_writes_deeplabcuts_tracking_files(analysed):
    out, truth, stem = analysed
    for suffix in ("_el.pickle", "_el.h5", "_full.pickle", ".h5"):
        assert (out / (stem + suffix)).is_file(), suffix
    assert sorted(followed(_tracks(out / f"{stem}_el.h5"), truth)) == [0, 1, 2]
    header = load_results_pickle(out / f"{stem}_el.pickle")["header"]
    assert list(header.names) == ["scorer", "bodyparts", "coords"]


@pytest.mark.parametrize("source", [".h5", "_full.pickle"])
def test_dlc_track_on_a_finished_result_gives_the_analysis_tracks(analysed, tmp_path, source):
    out, truth, stem = analysed
    for suffix in (".h5", "_full.pickle"):
        (tmp_path / (stem + suffix)).write_bytes((out / (stem + suffix)).read_bytes())
    result = invoke(["track", tmp_path / (stem + source), "--track-option", "max_age=50",
                     "--save-as-csv"])
    assert result.exit_code == 0, result.output
    pd.testing.assert_frame_equal(pd.read_hdf(tmp_path / f"{stem}_el.h5", "tracks"),
                                  pd.read_hdf(out / f"{stem}_el.h5", "tracks"), check_exact=True)
    assert (tmp_path / f"{stem}_el.csv").is_file()


def test_dlc_track_stitches_a_tracklets_file_again(analysed, tmp_path):
    out, truth, stem = analysed
    for suffix in (".h5", "_el.pickle"):
        (tmp_path / (stem + suffix)).write_bytes((out / (stem + suffix)).read_bytes())
    before = (tmp_path / f"{stem}_el.pickle").read_bytes()
    result = invoke(["track", tmp_path / f"{stem}_el.pickle", "--n-animals", "4",
                     "--track-option", "animal_names=a,b"])
    assert result.exit_code == 0, result.output
    table = pd.read_hdf(tmp_path / f"{stem}_el.h5", "tracks")
    assert list(dict.fromkeys(table.columns.get_level_values("individuals"))) == \
        ["a", "b", "ind1", "ind2"]
    assert table.xs("ind2", axis=1, level="individuals").isna().all().all()  # only 3 animals
    assert (tmp_path / f"{stem}_el.pickle").read_bytes() == before  # the source is kept as is


def test_track_errors_are_one_line(analysed, tmp_path):
    out, _, stem = analysed
    one_error_line(invoke(["track", tmp_path / "nothing.h5"]), "no file")
    one_error_line(invoke(["track", out / f"{stem}.h5", "--track-option", "sd_of=2"]),
                   "--track-option", "no parameter sd_of")
    one_error_line(invoke(["track", out / f"{stem}_el.pickle", "--track-method", "box"]),
                   "ellipse tracklets")
    short = tmp_path / f"{stem}_el.pickle"
    short.write_bytes((out / f"{stem}_el.pickle").read_bytes())
    one_error_line(invoke(["track", short, "--n-animals", "3", "--track-option",
                           "min_length=1000"]),
                   "not stitched", "1000 frames")
    assert not (tmp_path / f"{stem}_el.h5").exists()
    evil = tmp_path / f"{stem}_full.pickle"
    evil.write_bytes(pickle.dumps({"frame0": print}))
    one_error_line(invoke(["track", evil]), "builtins.print")
    single = make_toy_bundle(tmp_path / "single.bundle")
    one_error_line(invoke(["analyze", single, make_test_video(tmp_path / "v.mp4"), "--track",
                           "ellipse", "--no-progress"]), "single-animal")
    one_error_line(invoke(["analyze", single, tmp_path / "v.mp4", "--n-animals", "2"]),
                   "--track")
