"""Resuming an analysis: a real SIGKILL of a subprocess at precise points, Ctrl-C, and the
checkpoints that must not be resumed (changed bundle, video, selection; damaged rows).

The child kills itself with SIGKILL where ``DLC_RUNTIME_CRASH_AT`` says (``dlc_runtime.checkpoint.
crash_point``), so the point is exact; the parent then reruns the same call in-process and
compares the ``.h5`` with an uninterrupted run's, value for value.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from dlc_runtime import Bundle, analyze_video
from dlc_runtime.backends import make_backend
from dlc_runtime.checkpoint import CRASH_ENV
from dlc_runtime.errors import AnalysisInterrupted
from dlc_runtime.outputs import ResultPaths
from dlc_runtime.testing import TOY_SCORER, make_test_video, make_toy_bundle
from dlc_runtime.video import VideoIterator
from helpers.interrupt import CtrlCBackend

N = 100
BATCH = 8
EVERY = 16  # rows between checkpoints: one every two batches
RUN = dict(batch_size=BATCH, checkpoint_every=EVERY, checkpoint_seconds=None, progress=False)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_toy_bundle(tmp_path_factory.mktemp("b") / "toy.bundle")


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return make_test_video(tmp_path_factory.mktemp("v") / "m3v1.mp4", n_frames=N)


@pytest.fixture(scope="module")
def reference(bundle, video, tmp_path_factory) -> pd.DataFrame:
    """The uninterrupted run's results."""
    res = analyze_video(bundle, video, tmp_path_factory.mktemp("ref"), batch_size=BATCH,
                        progress=False)
    return pd.read_hdf(res.h5_path, "df_with_missing")


def _paths(video: Path, dest: Path) -> ResultPaths:
    return ResultPaths.for_video(video, TOY_SCORER, dest)


def _killed_run(bundle: Path, video: Path, dest: Path, point: str) -> None:
    """`analyze_video` in a child process that SIGKILLs itself at ``point``."""
    code = ("import sys; from dlc_runtime import analyze_video; "
            "analyze_video(sys.argv[1], sys.argv[2], sys.argv[3], batch_size=%d, "
            "checkpoint_every=%d, checkpoint_seconds=None, progress=False)" % (BATCH, EVERY))
    env = dict(os.environ, **{CRASH_ENV: point})
    proc = subprocess.run([sys.executable, "-c", code, str(bundle), str(video), str(dest)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr


def _state(paths: ResultPaths) -> dict:
    return json.loads(paths.checkpoint.read_text())


# point -> (what the child leaves, frame the rerun resumes at: None = from the start)
KILLS = {
    # batch 1 of 8 rows: the first checkpoint (16 rows) never came.
    "before the first checkpoint": ("batch:1", None),
    # batch 9 (72 rows) after the checkpoint at 64: the rows file is cut back to 64.
    "in the middle": ("batch:9", 64),
    # right after a state file was written (the 2nd, at 32 rows).
    "just after a checkpoint": ("checkpoint:2", 32),
    # the .h5 renamed onto its final name, the meta not yet, no completion record.
    "during the final rename": ("publish:h5", N),
}


@pytest.mark.parametrize("kill", list(KILLS))
def test_resume_after_sigkill_gives_the_uninterrupted_values(bundle, video, reference, tmp_path,
                                                            kill):
    point, resumed = KILLS[kill]
    paths = _paths(video, tmp_path)
    _killed_run(bundle, video, tmp_path, point)
    assert not paths.record.exists()
    if resumed is None:
        assert not paths.checkpoint.exists() and paths.checkpoint_rows.exists()
    else:
        state = _state(paths)
        assert state["rows"] == resumed and state["done"] == (resumed == N)
        if kill == "in the middle":  # rows written after the checkpoint, to be cut off
            assert paths.checkpoint_rows.stat().st_size > resumed * state["row_bytes"]
    if kill == "during the final rename":
        assert paths.h5.exists() and not paths.meta.exists()

    res = analyze_video(bundle, video, tmp_path, **RUN)
    assert res.resumed_from == resumed and res.n_frames == N
    pd.testing.assert_frame_equal(pd.read_hdf(res.h5_path, "df_with_missing"), reference,
                                  check_exact=True)
    assert json.loads(paths.record.read_text())["n_frames"] == N
    assert not paths.checkpoint.exists() and not paths.checkpoint_rows.exists()
    assert not list(tmp_path.glob("*.part"))


def test_killed_after_publishing_leaves_a_complete_result(bundle, video, reference, tmp_path):
    paths = _paths(video, tmp_path)
    _killed_run(bundle, video, tmp_path, "published")  # record written, checkpoint not removed
    assert paths.record.exists() and paths.checkpoint.exists()
    res = analyze_video(bundle, video, tmp_path, **RUN)
    assert res.skipped and not paths.checkpoint.exists() and not paths.checkpoint_rows.exists()
    pd.testing.assert_frame_equal(pd.read_hdf(paths.h5, "df_with_missing"), reference)


def _interrupt(bundle: Path, video: Path, dest: Path, at: int = 6, **kwargs) -> AnalysisInterrupted:
    backend = CtrlCBackend(make_backend(Bundle.load(bundle)), at)
    with pytest.raises(AnalysisInterrupted) as caught:
        analyze_video(bundle, video, dest, backend=backend, **{**RUN, **kwargs})
    return caught.value


def test_ctrl_c_keeps_a_checkpoint_and_says_how_to_resume(bundle, video, reference, tmp_path):
    err = _interrupt(bundle, video, tmp_path, checkpoint_every=None)  # no checkpoint before
    line = str(err)
    assert "\n" not in line and "run the same command again to resume" in line
    assert err.frame == 5 * BATCH and f"interrupted at frame {5 * BATCH}" in line
    paths = _paths(video, tmp_path)
    assert err.checkpoint == paths.checkpoint and _state(paths)["rows"] == 5 * BATCH
    assert not paths.h5.exists() and not list(tmp_path.glob("*.part"))

    res = analyze_video(bundle, video, tmp_path, **RUN)
    assert res.resumed_from == 5 * BATCH
    pd.testing.assert_frame_equal(pd.read_hdf(res.h5_path, "df_with_missing"), reference,
                                  check_exact=True)


def test_an_interrupted_selection_resumes_on_its_frames(bundle, video, reference, tmp_path):
    frames = list(range(5, 80, 3))
    _interrupt(bundle, video, tmp_path, at=4, batch_size=4, start=5, stop=80, stride=3)
    res = analyze_video(bundle, video, tmp_path, **{**RUN, "batch_size": 4}, start=5, stop=80,
                        stride=3)
    assert res.resumed_from == frames[12]  # 3 batches of 4 rows were done
    pd.testing.assert_frame_equal(pd.read_hdf(res.h5_path, "df_with_missing"),
                                  reference.loc[frames], check_exact=True)


def _copy_bundle(bundle: Path, dest: Path, **source) -> Path:
    copy = make_toy_bundle(dest)
    manifest = yaml.safe_load((copy / "manifest.yaml").read_text())
    manifest["source"].update(source)
    (copy / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    return copy


@pytest.mark.parametrize("change", ["bundle", "video", "selection", "backend options",
                                    "damaged rows", "resume=False"])
def test_a_checkpoint_that_does_not_match_is_not_resumed(bundle, reference, tmp_path, capsys,
                                                         change):
    video = make_test_video(tmp_path / "m3v1.mp4", n_frames=N)
    same_bundle = make_toy_bundle(tmp_path / "toy.bundle")
    _interrupt(same_bundle, video, tmp_path / "out")
    paths = _paths(video, tmp_path / "out")
    capsys.readouterr()
    kwargs: dict = {}
    if change == "bundle":  # same scorer and layout, another export
        same_bundle = _copy_bundle(same_bundle, tmp_path / "other.bundle", iteration=7)
    elif change == "video":
        os.utime(video, ns=(video.stat().st_atime_ns, video.stat().st_mtime_ns + 10**9))
    elif change == "selection":
        kwargs["stop"] = 90
    elif change == "backend options":
        kwargs["backend_options"] = {"intra_op_threads": 1}
    elif change == "damaged rows":
        data = bytearray(paths.checkpoint_rows.read_bytes())
        data[100] ^= 0xFF
        paths.checkpoint_rows.write_bytes(bytes(data))
    else:
        kwargs["resume"] = False
    res = analyze_video(same_bundle, video, tmp_path / "out", **{**RUN, **kwargs, "progress": True})
    out = capsys.readouterr().out
    assert res.resumed_from is None
    if change != "resume=False":
        why = {"bundle": "the bundle changed since it was made (manifest_sha256 ",
               "video": "the video changed since it was made (mtime_ns ",
               "selection": "the frame selection changed since it was made (stop null -> 90)",
               "backend options": "the backend, device or decoding changed",
               "damaged rows": "does not read back as checkpointed"}[change]
        lines = [line for line in out.splitlines() if "not resuming the checkpoint" in line]
        assert len(lines) == 1 and why in lines[0] and lines[0].endswith("from the start")
    df = pd.read_hdf(res.h5_path, "df_with_missing")
    expected = reference.iloc[:90] if change == "selection" else reference
    pd.testing.assert_frame_equal(df, expected, check_exact=True)


def test_resume_checks_that_seeking_lands_on_the_recorded_frame(bundle, video, reference,
                                                                tmp_path, monkeypatch, capsys):
    _interrupt(bundle, video, tmp_path)
    paths = _paths(video, tmp_path)
    state = _state(paths)
    assert state["last_decoded"] == state["rows"] - 1 and state["last_decoded_sha256"]

    # A container whose seek lands one frame late: the resumed run notices and reads the video
    # from its first frame instead.
    real_seek = VideoIterator._seek

    def late(cap, index):
        return real_seek(cap, index + 1) and True

    monkeypatch.setattr(VideoIterator, "_seek", staticmethod(late))
    res = analyze_video(bundle, video, tmp_path, **{**RUN, "progress": True})
    assert "does not land on the frame the checkpoint recorded" in capsys.readouterr().out
    assert res.resumed_from == state["next_frame"]
    pd.testing.assert_frame_equal(pd.read_hdf(res.h5_path, "df_with_missing"), reference,
                                  check_exact=True)
