"""Bad input to `dlc analyze`, `dlc export` and `dlc train`, tried as a new user would: each ends
with one `Error:` line and exit code 1 (click's own range errors: exit code 2, the project's
convention for every numeric option), and an earlier result is left as it was."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import pandas as pd
import pytest

from dlc_runtime.testing import TOY_SCORER, make_test_video, make_toy_bundle
from helpers.cli import invoke, one_error_line
from helpers.readonly import read_only


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_toy_bundle(tmp_path_factory.mktemp("b") / "toy.bundle")


@pytest.fixture
def video(tmp_path) -> Path:
    folder = tmp_path / "videos"
    folder.mkdir()
    return make_test_video(folder / "m3v1.mp4", n_frames=12)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def _analyze(bundle, *args):
    return invoke(["analyze", bundle, *args, "--no-progress"])


# -- --dest that cannot be written ------------------------------------------------------------

def test_dest_in_a_read_only_folder_keeps_the_earlier_result(bundle, video, tmp_path):
    dest = tmp_path / "results"
    assert _analyze(bundle, video, "--dest", dest).exit_code == 0
    before = _files(dest)
    with read_only(dest):
        line = one_error_line(_analyze(bundle, video, "--dest", dest, "--overwrite"),
                              "cannot write in --dest", str(dest), "pass a folder")
        assert "Traceback" not in line
        # A new folder below it cannot be created either.
        one_error_line(_analyze(bundle, video, "--dest", dest / "sub"),
                       "cannot create --dest", str(dest / "sub"))
    assert _files(dest) == before


@pytest.mark.parametrize("where", ["/proc/dlc-results", "/sys/dlc-results",
                                   "/proc/self/dlc/results"])
def test_dest_under_proc_or_sys(bundle, video, where):
    root = Path("/", Path(where).parts[1])
    if not root.is_dir():
        pytest.skip(f"no {root} file system here")
    one_error_line(_analyze(bundle, video, "--dest", where), "--dest", where,
                   "pass a folder you can write to")
    assert not Path(where).exists()


def test_dest_that_is_a_file(bundle, video, tmp_path):
    thesis = tmp_path / "thesis.txt"
    thesis.write_text("chapter 1")
    one_error_line(_analyze(bundle, video, "--dest", thesis), str(thesis), "is not a folder")
    one_error_line(_analyze(bundle, video, "--dest", thesis / "results"),
                   f"({thesis} is a file)")
    assert thesis.read_text() == "chapter 1"


def test_default_destination_beside_videos_in_a_read_only_folder(bundle, video, tmp_path):
    assert _analyze(bundle, video, "--save-as-csv").exit_code == 0  # an earlier result
    before = _files(video.parent)
    with read_only(video.parent):
        one_error_line(_analyze(bundle, video, "--overwrite"), "cannot write in the video's "
                       "folder", str(video.parent))
        # Among other videos: reported, the others analyzed, exit code 1 with the summary.
        other = make_test_video(tmp_path / "other.mp4", n_frames=6)
        res = _analyze(bundle, video, other, "--overwrite")
        line = one_error_line(res, "2 videos: 1 analyzed", "1 failed", "m3v1.mp4",
                              "cannot write in the video's folder")
        assert f"{other}: 6 frames" in res.stdout
        assert f"failed: {video}: cannot write" in res.stdout
    assert _files(video.parent) == before


def test_full_disk_among_several_videos_is_one_line_and_the_others_are_analyzed(
        bundle, tmp_path, monkeypatch):
    first = make_test_video(tmp_path / "a.mp4", n_frames=6)
    second = make_test_video(tmp_path / "b.mp4", n_frames=6)
    original = pd.HDFStore.append

    def append(self, key, value, *args, **kwargs):
        if "a" + TOY_SCORER in str(self._path):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return original(self, key, value, *args, **kwargs)

    monkeypatch.setattr(pd.HDFStore, "append", append)
    out = tmp_path / "out"
    res = _analyze(bundle, first, second, "--dest", out, "--save-as-csv")
    one_error_line(res, "1 analyzed", "1 failed", "No space left on device",
                   "nothing was written under")
    for name in (".h5", ".csv", "_meta.pickle"):  # nothing under a final name for a.mp4
        assert not (out / f"a{TOY_SCORER}{name}").exists()
    assert (out / f"b{TOY_SCORER}.csv").is_file()
    # Alone, the same failure is the video's own one line.
    one_error_line(_analyze(bundle, first, "--dest", out), "No space left on device")


# -- numbers and names ---------------------------------------------------------------------

@pytest.mark.parametrize("value", ["0", "-3"])
def test_batch_size_zero_or_negative_is_one_line(bundle, video, value):
    # dlc_cli/errors.py OneLineGroup: click's own errors (ranges, choices, missing arguments)
    # are one `Error:` line with exit code 1 on every command, like every other bad input.
    res = _analyze(bundle, video, "--batch-size", value)
    one_error_line(res, f"Invalid value for '--batch-size': {value} is not in the range x>=1",
                   "dlc analyze -h")
    assert sorted(p.name for p in video.parent.iterdir()) == [video.name]


@pytest.mark.parametrize("typo, closest", [("resnet50", "resnet_50"),
                                           ("top_down_hrnetw32", "top_down_hrnet_w32"),
                                           ("cspnext-s", "cspnext_s")])
def test_train_net_type_typo_suggests_the_closest(tmp_path, typo, closest):
    from dlc_train.synthetic import SyntheticSpec, generate_project

    project = generate_project(tmp_path, SyntheticSpec(seed=0, width=64, height=48,
                                                       num_labeled_frames=2,
                                                       num_video_frames=1)).config_path
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    one_error_line(invoke(["train", project, "--net-type", typo]),
                   f"unknown net type '{typo}'; did you mean {closest}?")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


# -- dlc export -o ----------------------------------------------------------------------------

@pytest.fixture
def project_config(quick_demo) -> Path:
    output, _ = quick_demo
    return next((output / "project").glob("*/config.yaml"))


def test_export_into_a_read_only_folder(project_config, tmp_path):
    folder = tmp_path / "bundles"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep")
    with read_only(folder):
        one_error_line(invoke(["export", project_config, "-o", folder / "my.bundle"]),
                       "cannot write in the folder of -o", str(folder))
    assert _files(folder) == {"notes.txt": b"keep"}
    one_error_line(invoke(["export", project_config, "-o", "/proc/my.bundle"]),
                   "the folder of -o", "/proc")
