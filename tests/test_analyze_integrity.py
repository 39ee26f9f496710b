"""`dlc analyze` never leaves a corrupt or half-finished result that looks valid.

Write failures (a real small file system where the test can mount one, and writers made to fail
part-way or to lose data silently, as PyTables did on a full disk) end with one line, exit 1 and
no file under a final name; "already analyzed" means a completion record that matches the
files; a rerun completes what a finished result lacks without analyzing again.
"""
from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import stat
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from dlc_runtime.bundle import sha256_file
from helpers.cli import invoke, one_error_line
from dlc_runtime.testing import TOY_SCORER, make_test_video, make_toy_bundle

N = 40  # frames; batches of 8 -> 5 appends


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_toy_bundle(tmp_path_factory.mktemp("b") / "toy.bundle")


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return make_test_video(tmp_path_factory.mktemp("v") / "m3v1.mp4", n_frames=N)


def _analyze(bundle: Path, video: Path, dest: Path, *extra):
    return invoke(["analyze", bundle, video, "--dest", dest, "--batch-size", 8,
                    "--no-progress", *extra])


def _names(video: Path, dest: Path) -> dict[str, Path]:
    prefix = video.stem + TOY_SCORER
    return {"h5": dest / f"{prefix}.h5", "csv": dest / f"{prefix}.csv",
            "meta": dest / f"{prefix}_meta.pickle", "record": dest / f"{prefix}_complete.json"}


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()} if folder.exists() else {}


def test_finished_run_writes_a_matching_record_last(bundle, video, tmp_path):
    res = _analyze(bundle, video, tmp_path, "--save-as-csv")
    assert res.exit_code == 0, res.output
    files = _names(video, tmp_path)
    record = json.loads(files["record"].read_text())
    assert record["n_frames"] == N and set(record["files"]) == {"h5", "meta", "csv"}
    for kind in ("h5", "meta", "csv"):
        entry = record["files"][kind]
        assert entry["name"] == files[kind].name
        assert entry["sha256"] == sha256_file(files[kind])
        assert entry["size"] == files[kind].stat().st_size
        assert files["record"].stat().st_mtime_ns >= files[kind].stat().st_mtime_ns
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in files.values())
    # One result line, printed once.
    lines = [line for line in res.stdout.splitlines() if "frames/s" in line]
    assert len(lines) == 1 and lines[0].startswith(f"{video}: {N} frames at ")
    assert res.stdout.count(str(files["h5"])) == 1


def test_result_line_is_printed_once_with_progress(bundle, video, tmp_path):
    res = invoke(["analyze", bundle, video, "--dest", tmp_path])
    assert res.exit_code == 0, res.output
    assert res.stdout.count(str(_names(video, tmp_path)["h5"])) == 1


def _fail_third_append(monkeypatch, how: str) -> None:
    """The HDF5 writer fails on its third batch: raising ENOSPC, or (as PyTables did on a full
    disk) silently storing zeros instead of the values."""
    # The .h5 is written from the checkpoint's rows in chunks of READ_ROWS: 8 makes 5 appends.
    monkeypatch.setattr("dlc_runtime.checkpoint.READ_ROWS", 8)
    original = pd.HDFStore.append
    calls = {"n": 0}

    def append(self, key, value, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= 3:
            if how == "raises":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            value = value * 0.0
        return original(self, key, value, *args, **kwargs)

    monkeypatch.setattr(pd.HDFStore, "append", append)


def _fail_partway(monkeypatch, name: str) -> None:
    """``dlc_runtime.analyze.<name>`` writes a few bytes of its file, then hits a full disk."""
    def writer(*args, **kwargs):
        path = Path(args[-1] if name == "write_csv_from_h5" else args[0])
        path.write_bytes(b"scorer,")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(f"dlc_runtime.analyze.{name}", writer)


FAULTS = {
    "h5 write raises": (lambda mp: _fail_third_append(mp, "raises"), "No space left on device"),
    "h5 write lost silently": (lambda mp: _fail_third_append(mp, "zeros"),
                               "does not read back as written"),
    "csv write fails": (lambda mp: _fail_partway(mp, "write_csv_from_h5"),
                        "No space left on device"),
    "meta write fails": (lambda mp: _fail_partway(mp, "write_meta_pickle"),
                         "No space left on device"),
}


def _no_decoding(*args, **kwargs):
    raise AssertionError("the video was decoded again")


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("earlier", [False, True], ids=["fresh", "over-earlier-result"])
def test_a_failed_write_leaves_nothing_under_final_names(bundle, video, tmp_path, monkeypatch,
                                                         fault, earlier):
    if earlier:
        assert _analyze(bundle, video, tmp_path, "--save-as-csv").exit_code == 0
    before = _snapshot(tmp_path)
    inject, fragment = FAULTS[fault]
    with monkeypatch.context() as mp:
        inject(mp)
        args = ["--save-as-csv"] + (["--overwrite"] if earlier else [])
        line = one_error_line(_analyze(bundle, video, tmp_path, *args), fragment)
    assert "nothing was written under" in line
    # Fresh: no result file at all (no .part either); over an earlier result: it is
    # byte-identical. The finished analysis stays in its checkpoint.
    after = _snapshot(tmp_path)
    kept = {name for name in after if "_checkpoint." in name}
    assert kept == {f"{video.stem}{TOY_SCORER}_checkpoint.{ext}" for ext in ("json", "rows")}
    assert {name: data for name, data in after.items() if name not in kept} == before
    # A rerun is never "already analyzed" after a failed run: it writes the results from the
    # checkpoint, without decoding the video again.
    with monkeypatch.context() as mp:
        mp.setattr("dlc_runtime.analysis_run.open_video", _no_decoding)
        again = _analyze(bundle, video, tmp_path, "--save-as-csv")
    assert again.exit_code == 0, again.output
    assert ("skipped" in again.stdout) == earlier
    df = pd.read_hdf(_names(video, tmp_path)["h5"], "df_with_missing")
    assert len(df) == N and np.all(df.xs("likelihood", level="coords", axis=1).to_numpy() > 0)


def _mount_small_fs(folder: Path, size: str) -> None:
    folder.mkdir()
    try:
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                               str(folder)], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as err:
        pytest.skip(f"cannot mount a small file system here: {err}")
    if proc.returncode != 0:
        pytest.skip("cannot mount a small file system here (needs root and mount rights): "
                    f"{proc.stderr.strip()}")


def test_full_disk_on_a_real_small_file_system(bundle, tmp_path):
    # 3,000 frames of results (about 170 KB of values) on a 64 KiB file system.
    video = make_test_video(tmp_path / "long.mp4", n_frames=3000, width=32, height=32)
    small = tmp_path / f"small-{uuid.uuid4().hex[:6]}"
    _mount_small_fs(small, "64k")
    try:
        res = invoke(["analyze", bundle, video, "--dest", small, "--batch-size", 64,
                       "--no-progress", "--save-as-csv"])
        one_error_line(res, "nothing was written under")
        assert list(small.iterdir()) == []
        # Space freed (a bigger disk): the rerun analyzes, it does not say "already analyzed".
        res = invoke(["analyze", bundle, video, "--dest", tmp_path / "big", "--batch-size", 64,
                       "--no-progress"])
        assert res.exit_code == 0 and "skipped" not in res.stdout, res.output
    finally:
        subprocess.run(["umount", str(small)], capture_output=True, timeout=30)


def test_rerun_writes_the_missing_csv_without_analyzing(bundle, video, tmp_path, monkeypatch):
    assert _analyze(bundle, video, tmp_path).exit_code == 0
    files = _names(video, tmp_path)
    h5_bytes = files["h5"].read_bytes()
    assert not files["csv"].exists()

    def no_decoding(*args, **kwargs):
        raise AssertionError("the video was decoded again")

    monkeypatch.setattr("dlc_runtime.analyze.VideoIterator", no_decoding)
    res = _analyze(bundle, video, tmp_path, "--save-as-csv")
    assert res.exit_code == 0, res.output
    assert "already analyzed" in res.stdout and "wrote the missing .csv" in res.stdout
    assert files["h5"].read_bytes() == h5_bytes
    expected = tmp_path / "expected.csv"
    pd.read_hdf(files["h5"], "df_with_missing").to_csv(expected)
    assert files["csv"].read_bytes() == expected.read_bytes()
    record = json.loads(files["record"].read_text())
    assert record["files"]["csv"]["sha256"] == sha256_file(files["csv"])


def test_rerun_rewrites_a_deleted_meta_identically(bundle, video, tmp_path):
    assert _analyze(bundle, video, tmp_path).exit_code == 0
    files = _names(video, tmp_path)
    meta = pickle.loads(files["meta"].read_bytes())
    files["meta"].unlink()
    res = _analyze(bundle, video, tmp_path)
    assert res.exit_code == 0 and "wrote the missing _meta.pickle" in res.stdout, res.output
    assert pickle.loads(files["meta"].read_bytes()) == meta


def test_skip_is_reported_even_without_progress(bundle, video, tmp_path):
    assert _analyze(bundle, video, tmp_path).exit_code == 0
    res = _analyze(bundle, video, tmp_path)
    assert res.exit_code == 0
    assert f"{video}: skipped, already analyzed ({N} frames)" in res.stdout
    assert "--overwrite" in res.stdout and "overwrite=True" not in res.stdout
    assert "frames/s" not in res.stdout


def test_an_h5_without_a_record_is_analyzed_again(bundle, video, tmp_path):
    """The corrupt .h5 of a crashed or older run (zeros in its last frames, no record) is not
    "already analyzed": the video is analyzed again and the file replaced."""
    assert _analyze(bundle, video, tmp_path).exit_code == 0
    files = _names(video, tmp_path)
    good = pd.read_hdf(files["h5"], "df_with_missing")
    bad = good.copy()
    bad.iloc[-10:] = 0.0
    files["h5"].unlink()
    bad.to_hdf(files["h5"], key="df_with_missing", format="table")
    files["record"].unlink()
    res = _analyze(bundle, video, tmp_path)
    assert res.exit_code == 0 and "skipped" not in res.stdout, res.output
    assert "had no completion record" in res.stdout
    pd.testing.assert_frame_equal(pd.read_hdf(files["h5"], "df_with_missing"), good)

    # A record that no longer matches the .h5 (edited or replaced afterwards) counts the same.
    bad.to_hdf(files["h5"], key="df_with_missing", format="table")
    res = _analyze(bundle, video, tmp_path)
    assert res.exit_code == 0 and "skipped" not in res.stdout, res.output


def test_result_files_get_the_umask_permissions(bundle, video, tmp_path):
    old = os.umask(0o022)
    try:
        assert _analyze(bundle, video, tmp_path, "--save-as-csv").exit_code == 0
    finally:
        os.umask(old)
    for path in _names(video, tmp_path).values():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path.name


def test_cli_words_folder_and_truncated_video(bundle, video, tmp_path):
    one_error_line(_analyze(bundle, tmp_path, tmp_path), str(tmp_path),
                    "is a folder, not a video")
    full = make_test_video(tmp_path / "full.avi", n_frames=30, fourcc="MJPG")
    cut = tmp_path / "cut.avi"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size * 6 // 10])
    res = _analyze(bundle, cut, tmp_path / "out", "--strict")
    if res.exit_code == 0:
        pytest.skip("this OpenCV build does not report the header frame count of a cut avi")
    line = one_error_line(res, "truncated", "--allow-truncated")
    assert "allow_truncated=True" not in line
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_graph_sha256_is_required_and_checked(bundle, video, tmp_path):
    copy = tmp_path / "copy.bundle"
    shutil.copytree(bundle, copy)
    manifest = yaml.safe_load((copy / "manifest.yaml").read_text())
    digest = manifest["graphs"]["pose"].pop("sha256")
    (copy / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    out = tmp_path / "out"
    one_error_line(_analyze(copy, video, out), "graphs.pose.sha256", "re-export")

    manifest["graphs"]["pose"]["sha256"] = digest
    (copy / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    data = bytearray((copy / "pose.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: would run, with wrong keypoints
    (copy / "pose.onnx").write_bytes(bytes(data))
    one_error_line(_analyze(copy, video, out), "pose.onnx", "sha256 ", "does not match")
    assert not out.exists() or list(out.iterdir()) == []
