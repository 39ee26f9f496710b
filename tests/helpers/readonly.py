"""A folder that really refuses writes, for the "not writable" error tests.

A normal user gets ``chmod 555``. Root ignores permissions, so as root the folder is bind-mounted
read-only onto itself (the kernel then refuses every write, root's too); where that is not
permitted either the test is skipped, saying so. Either way the folder is probed: a test never
runs on a folder that still takes writes.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def _writable(folder: Path) -> bool:
    probe = folder / ".probe"
    try:
        probe.write_bytes(b"x")
    except OSError:
        return False
    probe.unlink()
    return True


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=30)


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """``folder`` (existing) made read-only for the block, restored after it."""
    folder = Path(folder)
    if os.geteuid() != 0:
        mode = folder.stat().st_mode
        folder.chmod(0o555)
        try:
            if _writable(folder):
                pytest.skip(f"chmod 555 does not stop writes in {folder} on this file system")
            yield folder
        finally:
            folder.chmod(mode)
        return
    try:
        bound = _run("mount", "--bind", str(folder), str(folder))
    except (OSError, subprocess.SubprocessError) as err:
        pytest.skip(f"running as root (permissions do not stop root) and mount is not usable "
                    f"here for a read-only bind mount: {err}")
    if bound.returncode != 0:
        pytest.skip("running as root (permissions do not stop root) and a read-only bind "
                    f"mount is not permitted here: {bound.stderr.strip()}")
    try:
        ro = _run("mount", "-o", "remount,bind,ro", str(folder))
        if ro.returncode != 0 or _writable(folder):
            pytest.skip("running as root (permissions do not stop root) and the bind mount "
                        f"could not be made read-only: {ro.stderr.strip()}")
        yield folder
    finally:
        _run("umount", str(folder))
