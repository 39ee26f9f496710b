"""CTD tracking through ``analyze_video(ctd_tracking=...)``: a real exported CTD bundle
(``test_export_ctd``'s fixtures, random weights) on a textured video; the tracks the pipeline
carries are saved with each checkpoint, so a run killed mid-video and resumed writes exactly
the uninterrupted run's ``.h5``."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import cv2
import numpy as np
import pandas as pd
import pytest

from dlc_runtime import analyze_video
from dlc_runtime.checkpoint import CRASH_ENV
from dlc_runtime.errors import BundleError, TrackingError
from dlc_runtime.testing import make_test_video, make_toy_bundle
from helpers.frames import textured_frames
from test_export_ctd import ctd_bundle, ctd_project  # noqa: F401  (module fixtures used here)

N_FRAMES = 24
RUN = dict(batch_size=4, checkpoint_every=8, checkpoint_seconds=None, progress=False)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("v") / "ctd.avi"
    frames = textured_frames(N_FRAMES, 120, 160, seed=4)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 30, (160, 120))
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[..., ::-1]))
    writer.release()
    return path


@pytest.fixture(scope="module")
def reference(ctd_bundle, video, tmp_path_factory):  # noqa: F811
    res = analyze_video(ctd_bundle.bundle_dir, video, tmp_path_factory.mktemp("ref"),
                        ctd_tracking={"bu_max_frequency": 5}, **RUN)
    return pd.read_hdf(res.h5_path, "df_with_missing")


def test_ctd_tracking_differs_from_plain_ctd_and_found_animals(ctd_bundle, video,  # noqa: F811
                                                               reference, tmp_path):
    plain = analyze_video(ctd_bundle.bundle_dir, video, tmp_path, **RUN)
    assert np.isfinite(reference.to_numpy()).any()
    # plain CTD takes every frame's conditions from bottom-up; tracking from the frame before
    assert not reference.equals(pd.read_hdf(plain.h5_path, "df_with_missing"))


def test_a_killed_ctd_tracking_run_resumes_its_tracks_exactly(ctd_bundle, video,  # noqa: F811
                                                              reference, tmp_path):
    code = ("import sys; from dlc_runtime import analyze_video; "
            "analyze_video(sys.argv[1], sys.argv[2], sys.argv[3], batch_size=4, "
            "checkpoint_every=8, checkpoint_seconds=None, progress=False, "
            "ctd_tracking={'bu_max_frequency': 5})")
    proc = subprocess.run([sys.executable, "-c", code, str(ctd_bundle.bundle_dir), str(video),
                           str(tmp_path)], env=dict(os.environ, **{CRASH_ENV: "batch:3"}),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    res = analyze_video(ctd_bundle.bundle_dir, video, tmp_path,
                        ctd_tracking={"bu_max_frequency": 5}, **RUN)
    assert res.resumed_from == 8
    pd.testing.assert_frame_equal(pd.read_hdf(res.h5_path, "df_with_missing"), reference,
                                  check_exact=True)


def test_ctd_tracking_needs_a_ctd_bundle_and_known_options(ctd_bundle, video,  # noqa: F811
                                                           tmp_path):
    single = make_toy_bundle(tmp_path / "toy.bundle")
    with pytest.raises(BundleError, match="conditional top-down"):
        analyze_video(single, make_test_video(tmp_path / "v.mp4"), tmp_path,
                      ctd_tracking=True, progress=False)
    with pytest.raises(TrackingError, match="no option bu_every"):
        analyze_video(ctd_bundle.bundle_dir, video, tmp_path, ctd_tracking={"bu_every": 3},
                      progress=False)


def test_dlc_analyze_ctd_tracking(ctd_bundle, video, reference, tmp_path):  # noqa: F811
    from helpers.cli import invoke, one_error_line

    result = invoke(["analyze", ctd_bundle.bundle_dir, video, "--dest", tmp_path,
                     "--ctd-tracking", "--ctd-option", "bu_max_frequency=5", "--batch-size",
                     4, "--no-progress"])
    assert result.exit_code == 0, result.output
    [h5] = [p for p in tmp_path.glob("*.h5")]
    pd.testing.assert_frame_equal(pd.read_hdf(h5, "df_with_missing"), reference)
    one_error_line(invoke(["analyze", ctd_bundle.bundle_dir, video, "--ctd-option",
                           "bu_max_frequency=5"]), "--ctd-tracking")
    one_error_line(invoke(["analyze", ctd_bundle.bundle_dir, video, "--ctd-tracking",
                           "--ctd-option", "threshold_ctd=7"]), "--ctd-option", "threshold_ctd")
