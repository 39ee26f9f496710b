"""dlc_io: atomic files with the umask's permissions, folders replaced only when ours."""
from __future__ import annotations

import ast
import errno
import os
import stat
import sys
from pathlib import Path

import pytest

from dlc_io import OutputExistsError, atomic_path, atomic_write_text, check_replaceable, \
    staged_folder

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_atomic_files_follow_the_umask(tmp_path, umask_027):
    path = atomic_write_text(tmp_path / "sub" / "a.yaml", "x: 1\n")
    assert path.read_text() == "x: 1\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o750


def test_a_failed_write_keeps_the_old_file_and_leaves_no_part(tmp_path):
    target = tmp_path / "result.csv"
    target.write_text("old")
    with pytest.raises(OSError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.csv"]


def _ours(folder: Path) -> bool:
    return (folder / "MARK").is_file()


def test_staged_folder_swaps_in_and_keeps_the_old_one_on_failure(tmp_path):
    target = tmp_path / "out"
    with staged_folder(target, what="thing", is_ours=_ours, overwrite=False) as stage:
        (stage / "MARK").write_text("1")
    assert (target / "MARK").read_text() == "1"
    with pytest.raises(RuntimeError), staged_folder(target, what="thing", is_ours=_ours,
                                                   overwrite=True) as stage:
        (stage / "MARK").write_text("2")
        raise RuntimeError("export failed")
    assert (target / "MARK").read_text() == "1"
    with staged_folder(target, what="thing", is_ours=_ours, overwrite=True) as stage:
        (stage / "MARK").write_text("2")
    assert (target / "MARK").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_folder_changed_during_the_work_is_not_replaced(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(OutputExistsError, match="not written as a thing"):
        with staged_folder(target, what="thing", is_ours=_ours, overwrite=True) as stage:
            (stage / "MARK").write_text("new")
            target.mkdir()
            (target / "notes.txt").write_text("a user's")  # appeared while we worked
    assert (target / "notes.txt").read_text() == "a user's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_links_are_refused(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "MARK").write_text("1")
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(OutputExistsError, match="is a link"):
        check_replaceable(link, what="thing", is_ours=_ours, overwrite=True)


def test_dlc_io_imports_only_the_standard_library():
    stdlib = set(sys.stdlib_module_names) | {"dlc_io", "__future__"}
    for path in (REPO / "dlc_io").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                assert name.split(".")[0] in stdlib, f"{path.name} imports {name}"
