"""`dlc export -o PATH` and `dlc demo -o PATH` never destroy what a user keeps at PATH, and what
they write is readable by the rest of a lab (the umask's permissions, not 0600/0700)."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from helpers.cli import invoke, one_error_line


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.fixture
def project_config(quick_demo) -> Path:
    output, _ = quick_demo
    return next((output / "project").glob("*/config.yaml"))


def _user_folder(root: Path) -> Path:
    folder = root / "results-2026"
    (folder / "sub").mkdir(parents=True)
    (folder / "thesis.txt").write_text("chapter 1")
    (folder / "sub" / "a.csv").write_text("1,2\n")
    return folder


def _assert_user_folder_intact(folder: Path) -> None:
    assert (folder / "thesis.txt").read_text() == "chapter 1"
    assert (folder / "sub" / "a.csv").read_text() == "1,2\n"
    assert sorted(p.name for p in folder.iterdir()) == ["sub", "thesis.txt"]


def _no_staging_left(folder: Path) -> None:
    assert not [p for p in folder.iterdir() if ".partial-" in p.name or ".old-" in p.name]


def test_export_refuses_a_users_file_and_folder(project_config, tmp_path):
    thesis = tmp_path / "thesis.txt"
    thesis.write_text("do not delete")
    line = one_error_line(invoke(["export", project_config, "-o", thesis]), str(thesis),
                           "is a file")
    assert "nothing was written" in line
    assert thesis.read_text() == "do not delete"

    folder = _user_folder(tmp_path)
    one_error_line(invoke(["export", project_config, "-o", folder]), str(folder),
                    "not written as a bundle", "thesis.txt")
    _assert_user_folder_intact(folder)
    # --overwrite replaces only a bundle of ours, never this.
    one_error_line(invoke(["export", project_config, "-o", folder, "--overwrite"]),
                    "not written as a bundle")
    _assert_user_folder_intact(folder)
    _no_staging_left(tmp_path)


@pytest.mark.parametrize("how", [".", "absolute", "parent"])
def test_export_refuses_the_current_folder(project_config, tmp_path, monkeypatch, how):
    work = _user_folder(tmp_path)
    monkeypatch.chdir(work)
    target = {".": ".", "absolute": str(work), "parent": str(tmp_path)}[how]
    one_error_line(invoke(["export", project_config, "-o", target, "--overwrite"]),
                    "current folder", "nothing was written")
    _assert_user_folder_intact(work)


def test_export_replaces_an_earlier_bundle_only_with_overwrite(project_config, tmp_path,
                                                               umask_022):
    bundle = tmp_path / "my.bundle"
    first = invoke(["export", project_config, "-o", bundle])
    assert first.exit_code == 0, first.output
    manifest_before = (bundle / "manifest.yaml").read_text()

    refused = invoke(["export", project_config, "-o", bundle])
    # The CLI's words: --overwrite, not the Python argument overwrite=True.
    line = one_error_line(refused, str(bundle), "earlier bundle", "--overwrite")
    assert "overwrite=True" not in line
    assert (bundle / "manifest.yaml").read_text() == manifest_before

    again = invoke(["export", project_config, "-o", bundle, "--overwrite"])
    assert again.exit_code == 0, again.output
    assert (bundle / "pose.onnx").is_file()
    _no_staging_left(tmp_path)

    # Readable by a lab: 0755 folder, 0644 files under umask 022.
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o755
    for file in bundle.iterdir():
        assert stat.S_IMODE(file.stat().st_mode) == 0o644, file.name


def test_export_into_an_empty_folder_is_allowed(project_config, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    res = invoke(["export", project_config, "-o", empty])
    assert res.exit_code == 0, res.output
    assert (empty / "manifest.yaml").is_file()


def test_demo_refuses_other_folders_and_needs_overwrite_for_its_own(tmp_path, monkeypatch):
    # Whatever the demo would do after the check is not reached: refused before any work.
    def never(*args, **kwargs):
        raise AssertionError("the demo started working in a refused folder")

    monkeypatch.setattr("dlc_train.synthetic.generate_project", never)
    folder = _user_folder(tmp_path)
    one_error_line(invoke(["demo", "-o", folder, "--overwrite"]), "not written as a dlc "
                    "demo folder")
    _assert_user_folder_intact(folder)

    earlier = tmp_path / "dlc-demo"
    earlier.mkdir()
    (earlier / ".dlc-demo").write_text("written by `dlc demo`; safe to delete\n")
    (earlier / "demo_summary.json").write_text("{}")
    one_error_line(invoke(["demo", "-o", earlier]), "earlier dlc demo folder", "--overwrite")
    assert (earlier / "demo_summary.json").read_text() == "{}"


def test_demo_outputs_are_readable_by_the_group(quick_demo):
    """The session's demo run (umask 022 in CI) wrote snapshots, configs, the bundle and the
    results with the umask's permissions, not tempfile's 0600/0700."""
    output, result = quick_demo
    umask = os.umask(0)
    os.umask(umask)
    files = [p for p in output.rglob("*") if p.is_file()
             and p.suffix in (".pt", ".yaml", ".csv", ".onnx", ".h5", ".pickle", ".json")]
    names = {p.name for p in files}
    assert any(n.startswith("snapshot-") for n in names) and "pose.onnx" in names
    assert "pytorch_config.yaml" in names and "learning_stats.csv" in names
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path
    for folder in [Path(result.bundle_dir), *(p for p in output.rglob("*") if p.is_dir())]:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~umask, folder
