"""`dlc analyze` over many videos: files, folders and globs with --video-type, the bundle loaded
once and one backend for all, a bad video reported while the others are analyzed (exit code 1
after a summary), Ctrl-C as one line with exit code 130, and a project's config.yaml as BUNDLE."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from dlc_runtime.errors import AnalysisInterrupted
from dlc_runtime.testing import TOY_SCORER, make_test_video, make_toy_bundle
from helpers.cli import invoke, one_error_line


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_toy_bundle(tmp_path_factory.mktemp("b") / "toy.bundle")


def _h5s(folder: Path) -> list[str]:
    return sorted(p.name[: -len(TOY_SCORER) - 3] for p in folder.glob(f"*{TOY_SCORER}.h5"))


def _analyze(bundle, *args):
    return invoke(["analyze", bundle, *args, "--no-progress"])


@pytest.fixture
def folder(tmp_path) -> Path:
    videos = tmp_path / "videos"
    videos.mkdir()
    make_test_video(videos / "a.mp4", n_frames=5)
    make_test_video(videos / "b.avi", n_frames=5, fourcc="MJPG")
    make_test_video(videos / "a_labeled.mp4", n_frames=5)  # DeepLabCut's output: never input
    (videos / "notes.txt").write_text("not a video")
    return videos


def test_folders_globs_and_video_type(bundle, folder, tmp_path):
    res = _analyze(bundle, folder, "--dest", tmp_path / "all")
    assert res.exit_code == 0, res.output
    assert _h5s(tmp_path / "all") == ["a", "b"]
    assert "2 videos: 2 analyzed, 0 skipped (already analyzed), 0 failed" in res.stdout

    res = _analyze(bundle, folder, "--video-type", "mp4", "--dest", tmp_path / "mp4")
    assert res.exit_code == 0, res.output
    assert _h5s(tmp_path / "mp4") == ["a"]

    # A quoted glob (the shell did not expand it), and a file named twice is analyzed once.
    res = _analyze(bundle, str(folder / "*.avi"), folder / "b.avi", "--dest", tmp_path / "glob")
    assert res.exit_code == 0, res.output
    assert _h5s(tmp_path / "glob") == ["b"]
    assert res.stdout.count("frames/s") == 1


def test_bad_videos_among_many_are_reported_and_the_others_analyzed(bundle, tmp_path):
    good = [make_test_video(tmp_path / f"g{i}.mp4", n_frames=6) for i in range(2)]
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(bytes(range(256)) * 50)
    out = tmp_path / "out"
    res = _analyze(bundle, good[0], corrupt, tmp_path / "missing.mp4",
                   str(tmp_path / "*.mkv"), good[1], "--dest", out)
    line = one_error_line(res, "5 videos: 2 analyzed, 0 skipped (already analyzed), 3 failed",
                          "corrupt.mp4", "missing.mp4: no such file or folder",
                          "no video file matches")
    assert line.startswith("Error: 5 videos")
    # One line per video on stdout, in order, the analyzed ones included.
    lines = res.stdout.splitlines()
    assert [li.split(":")[0] for li in lines] == ["failed", "failed", str(good[0]), "failed",
                                                   str(good[1])]
    for video in good:
        assert len(pd.read_hdf(out / f"{video.stem}{TOY_SCORER}.h5")) == 6
    # The rerun skips what is done, and still fails on the corrupt video.
    res = _analyze(bundle, good[0], corrupt, good[1], "--dest", out)
    one_error_line(res, "3 videos: 0 analyzed, 2 skipped (already analyzed), 1 failed")


def test_bundle_loaded_once_and_one_backend_for_every_video(bundle, tmp_path, monkeypatch):
    import functools

    from dlc_runtime.backends.base import BACKENDS
    from dlc_runtime.bundle import Bundle

    videos = [make_test_video(tmp_path / f"v{i}.mp4", n_frames=4) for i in range(3)]
    calls = {"load": 0, "backend": 0, "closed": 0}
    load, factory = Bundle.load.__func__, BACKENDS["onnxruntime"]

    def counting_load(cls, *args, **kwargs):
        calls["load"] += 1
        return load(cls, *args, **kwargs)

    @functools.wraps(factory)  # make_backend reads the factory's options from its signature
    def counting_factory(*args, **kwargs):
        calls["backend"] += 1
        backend = factory(*args, **kwargs)
        close = backend.close
        backend.close = lambda: (calls.__setitem__("closed", calls["closed"] + 1), close())
        return backend

    monkeypatch.setattr(Bundle, "load", classmethod(counting_load))
    monkeypatch.setitem(BACKENDS, "onnxruntime", counting_factory)
    res = _analyze(bundle, *videos, "--dest", tmp_path / "out")
    assert res.exit_code == 0, res.output
    assert calls == {"load": 1, "backend": 1, "closed": 1}
    assert _h5s(tmp_path / "out") == ["v0", "v1", "v2"]
    # Everything already analyzed: no backend is created at all.
    res = _analyze(bundle, *videos, "--dest", tmp_path / "out")
    assert res.exit_code == 0 and res.stdout.count("skipped, already analyzed") == 3
    assert calls["backend"] == 1


@pytest.mark.parametrize("error", ["ctrl-c", "analysis-interrupted"])
def test_ctrl_c_is_one_line_and_exit_code_130(bundle, tmp_path, monkeypatch, error):
    import dlc_runtime.batch

    videos = [make_test_video(tmp_path / f"v{i}.mp4", n_frames=4) for i in range(3)]
    real = dlc_runtime.batch.analyze_video

    def stopped_at_the_second(bundle, video, *args, **kwargs):
        if Path(video).name == "v1.mp4":
            if error == "ctrl-c":
                raise KeyboardInterrupt
            raise AnalysisInterrupted("stopped at frame 2 of v1.mp4; the same command resumes "
                                      "it", video=video, frame=2)
        return real(bundle, video, *args, **kwargs)

    monkeypatch.setattr(dlc_runtime.batch, "analyze_video", stopped_at_the_second)
    res = _analyze(bundle, *videos, "--dest", tmp_path / "out")
    assert res.exit_code == 130, res.output
    lines = [li for li in res.stderr.splitlines() if li.strip()]
    assert len(lines) == 1 and lines[0].startswith("Interrupted: "), res.stderr
    assert "[1 analyzed, 0 skipped, 0 failed before it, of 3]" in lines[0]
    if error == "ctrl-c":
        assert f"stopped by Ctrl-C during {videos[1]}; rerun the same command" in lines[0]
    else:
        assert "stopped at frame 2 of v1.mp4; the same command resumes it" in lines[0]
    assert "Traceback" not in res.output
    assert _h5s(tmp_path / "out") == ["v0"]
    # One video: the same, without the counts.
    res = _analyze(bundle, videos[1], "--dest", tmp_path / "out")
    assert res.exit_code == 130 and res.stderr.startswith("Interrupted: ")
    assert "before it" not in res.stderr


def test_a_projects_config_yaml_names_its_bundle(quick_demo, tmp_path):
    output, result = quick_demo
    config = next((output / "project").glob("*/config.yaml"))
    video = next(config.parent.glob("videos/*.mp4"))
    res = _analyze(config, config.parent / "videos", "--dest", tmp_path)
    assert res.exit_code == 0, res.output
    scorer = "DLC_ResnetTiny_syntheticJan1shuffle1_snapshot_best-4"
    assert len(pd.read_hdf(tmp_path / f"{video.stem}{scorer}.h5")) == result.frames
    one_error_line(_analyze(config, video, "--shuffle", "2"),
                   "no exported bundle for shuffle 2", f"dlc export {config} --shuffle 2")
