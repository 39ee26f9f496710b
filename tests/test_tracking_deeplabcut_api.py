"""DeepLabCut 3's tracking API on bundles: ``analyze_videos`` tracks multi-animal videos by
default (``auto_track``), and ``convert_detections2tracklets`` / ``stitch_tracklets`` work on
finished results, with DeepLabCut's arguments."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import dlc_runtime.deeplabcut_api as pep
from dlc_runtime.errors import DLCRuntimeError, OutputError
from dlc_runtime.testing import TOY_SCORER, make_toy_multi_animal_bundle
from helpers.coded_animals import N, followed, shuffled_video, truth_poses


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("api")
    truth = truth_poses()
    return (make_toy_multi_animal_bundle(folder / "toy.bundle", N),
            shuffled_video(folder / "m3v1.avi", truth), truth)


def test_analyze_videos_tracks_multi_animal_videos_by_default(setup, tmp_path):
    bundle, video, truth = setup
    pep.analyze_videos(bundle, [video], destfolder=tmp_path / "on", progress=False,
                       n_tracks=3, animal_names=["a", "b", "c"],
                       inference_cfg={"max_age": 50, "pafthreshold": 0.1})
    tracks = pd.read_hdf(tmp_path / "on" / f"m3v1{TOY_SCORER}_el.h5", "tracks")
    assert list(dict.fromkeys(tracks.columns.get_level_values("individuals"))) == \
        ["a", "b", "c"]
    assert sorted(followed(tracks.to_numpy().reshape(len(tracks), N, -1, 3), truth)) == \
        [0, 1, 2]
    pep.analyze_videos(bundle, [video], destfolder=tmp_path / "off", progress=False,
                       auto_track=False)
    assert not list((tmp_path / "off").glob("*_el.*"))


def test_convert_then_stitch_on_finished_results(setup, tmp_path):
    bundle, video, truth = setup
    pep.analyze_videos(bundle, [video], destfolder=tmp_path, progress=False, auto_track=False)
    with pytest.raises(OutputError, match="tracklets pickle"):
        pep.stitch_tracklets(bundle, [video], destfolder=tmp_path, track_method="box")
    [tracklets] = pep.convert_detections2tracklets(bundle, [video], destfolder=tmp_path,
                                                   track_method="box")
    assert tracklets.name == f"m3v1{TOY_SCORER}_bx.pickle"
    assert not list(tmp_path.glob("*_bx.h5"))  # converting does not stitch
    [out] = pep.stitch_tracklets(bundle, [video], destfolder=tmp_path, track_method="box",
                                 n_tracks=2, min_length=5, save_as_csv=True)
    assert out.tracks_h5.name == f"m3v1{TOY_SCORER}_bx.h5" and out.tracks_csv.is_file()
    table = pd.read_hdf(out.tracks_h5, "tracks").to_numpy().reshape(-1, 2, 4, 3)
    assert len(set(followed(table, truth))) == 2 and np.isfinite(table).any()


def test_unsupported_tracking_arguments_are_refused(setup, tmp_path):
    bundle, video, _ = setup
    with pytest.raises(DLCRuntimeError, match="calibration"):
        pep.analyze_videos(bundle, [video], destfolder=tmp_path, calibrate=True)
    with pytest.raises(DLCRuntimeError, match="identity head"):
        pep.analyze_videos(bundle, [video], destfolder=tmp_path, identity_only=True)
