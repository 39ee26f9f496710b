"""Atomic file replacement: write a temporary sibling, then ``os.replace`` it onto the target.

``os.replace`` is atomic on POSIX and Windows when source and target are on the same file system,
which is why the temporary file lives in the target's folder. Readers therefore see either the old
complete file or the new complete file, never a half-written one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


def part_path(final: Path) -> Path:
    """The temporary name used while ``final`` is being written (``<final>.part``)."""
    return final.with_name(final.name + ".part")


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``final``, on error it is removed.

    Args:
        final: the file that should appear only once it is complete.
    """
    final = Path(final)
    tmp = part_path(final)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, final)
    except BaseException:
        # BaseException too: a KeyboardInterrupt must not leave a stray .part behind either.
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(final: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``final`` atomically."""
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)


def _fsync(path: Path) -> None:
    # Flush the data before the rename so that a power cut cannot leave a complete-looking name
    # pointing at empty blocks. Best effort: some file systems refuse fsync on read-only handles.
    with contextlib.suppress(OSError), open(path, "rb") as fh:
        os.fsync(fh.fileno())
