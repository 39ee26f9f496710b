"""Atomic file replacement: write ``<final>.part`` beside the target, then ``os.replace`` it.

``os.replace`` is atomic on POSIX and Windows when source and target are on the same file system,
which is why the temporary file lives in the target's folder: readers see either the old complete
file or the new complete file, never a half-written one.

The temporary file is created by the writer with a plain ``open`` (mode 0666 less the umask), not
with ``tempfile.mkstemp`` (always 0600): the renamed file must be readable by the rest of a lab
exactly like any other file the user creates.
"""
from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

# fsync errors that only mean "this file system does not sync this kind of handle".
_FSYNC_UNSUPPORTED = {errno.EINVAL, errno.ENOTSUP, errno.EBADF, errno.EROFS}


def part_path(final: str | os.PathLike[str], keep_suffix: bool = False) -> Path:
    """The temporary name used while ``final`` is being written: ``<final>.part``, or
    ``<stem>.part<suffix>`` with ``keep_suffix`` (for writers that choose a format by suffix)."""
    final = Path(final)
    if keep_suffix:
        return final.with_name(f"{final.stem}.part{final.suffix}")
    return final.with_name(final.name + ".part")


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Flush ``path`` to the disk; a write error the kernel held back (ENOSPC, EIO) raises here.

    Without it a power cut after the rename could leave a complete-looking name pointing at empty
    blocks, and on network file systems a full disk is often reported only now.
    """
    with open(path, "rb") as fh:
        try:
            os.fsync(fh.fileno())
        except OSError as err:
            if err.errno not in _FSYNC_UNSUPPORTED:
                raise


def _fsync_folder(folder: Path) -> None:
    # Makes the rename itself durable. Best effort: not every platform can open a folder.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str], keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``final``, on error it is removed.

    Args:
        final: the file that should appear only once it is complete. Its folder must exist.
        keep_suffix: give the temporary file ``final``'s suffix (see :func:`part_path`).

    The caller creates the temporary file (``open(tmp, "w")``, ``torch.save(obj, tmp)``, ...).
    Any exception in the block, or a failed flush to disk, leaves ``final`` as it was.
    """
    final = Path(final)
    tmp = part_path(final, keep_suffix)
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, final)
    except BaseException:
        # BaseException too: a KeyboardInterrupt must not leave a stray .part behind either.
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_folder(final.parent)


def atomic_write_bytes(final: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``final`` atomically (its folder is created when missing)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(final) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
    return final


def atomic_write_text(final: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8, newlines as given) to ``final`` atomically."""
    return atomic_write_bytes(final, text.encode("utf-8"))


class CommitOnSuccess:
    """A writer used as a context manager: :meth:`commit` (publish under the final name) when
    the block succeeds, :meth:`abort` (remove what was written) when it fails or the commit
    does. Subclasses implement both."""

    def commit(self) -> Path:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
            return
        try:
            self.commit()
        except BaseException:
            self.abort()
            raise
