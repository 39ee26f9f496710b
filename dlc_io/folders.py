"""Folders that a command writes as a whole (a bundle, the demo's working folder).

The rule, for every command that replaces a folder: write into PATH only when it does not exist,
is an empty folder, or is a folder this tool wrote (the caller's ``is_ours`` says so, from the
marker or manifest it leaves); replace one of ours only when the caller allows it (the CLI's
``--overwrite``). Everything else is refused with one line that names what is there, before any
work is done and again just before the rename.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path


class OutputExistsError(FileExistsError):
    """The output path holds something that must not be replaced."""


def _describe(folder: Path, limit: int = 3) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    shown = ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit
                                        else "")
    return f"{len(names)} entr{'y' if len(names) == 1 else 'ies'}: {shown}"


def check_replaceable(target: str | os.PathLike[str], *, what: str,
                      is_ours: Callable[[Path], bool], overwrite: bool) -> Path:
    """Refuse, with one line, to write ``target`` over anything but an earlier result of ours.

    Args:
        target: the folder about to be written.
        what: what the folder is, for messages ("bundle", "demo folder").
        is_ours: True when an existing folder was written by this tool as a ``what``.
        overwrite: replace such a folder (otherwise it is refused too).

    Returns:
        ``target`` as an absolute path.

    Raises:
        OutputExistsError: the target is the current folder or holds it, is a file or a link,
            is a non-empty folder this tool did not write, or is ours and ``overwrite`` is off.
    """
    target = Path(target).absolute()
    resolved = target.resolve()
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        where = "is the current folder" if resolved == cwd else "holds the current folder"
        raise OutputExistsError(f"{target} {where}: a {what} needs a folder of its own, "
                                "nothing was written")
    if target.is_symlink():
        raise OutputExistsError(f"{target} is a link: give a new folder for the {what}, "
                                "nothing was written")
    if not target.exists():
        return target
    if not target.is_dir():
        raise OutputExistsError(f"{target} is a file, not a {what}: give a new folder, "
                                "nothing was written")
    if not any(target.iterdir()):
        return target
    if not is_ours(target):
        raise OutputExistsError(f"{target} is a folder that was not written as a {what} "
                                f"({_describe(target)}): give a new folder, nothing was written")
    if not overwrite:
        raise OutputExistsError(f"{target} holds an earlier {what}: pass overwrite=True to "
                                "replace it")
    return target


def make_folder(path: str | os.PathLike[str]) -> Path:
    """``mkdir -p``; new folders get the umask's permissions (unlike ``tempfile.mkdtemp``)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def staged_folder(target: str | os.PathLike[str], *, what: str,
                  is_ours: Callable[[Path], bool], overwrite: bool) -> Iterator[Path]:
    """Yield a hidden sibling folder to write ``target``'s content in.

    The target is checked with :func:`check_replaceable` on entry and again before the swap.
    When the block succeeds the staging folder is renamed onto ``target`` (an earlier folder of
    ours is moved aside first and removed only once the new one is in place); when it fails the
    staging folder is removed and ``target`` is left as it was.
    """
    target = check_replaceable(target, what=what, is_ours=is_ours, overwrite=overwrite)
    make_folder(target.parent)
    staging = target.with_name(f".{target.name}.partial-{secrets.token_hex(4)}")
    staging.mkdir()  # mode 0777 less the umask: the renamed folder is readable by the lab
    try:
        yield staging
        check_replaceable(target, what=what, is_ours=is_ours, overwrite=overwrite)
        _swap_in(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _swap_in(new: Path, target: Path) -> None:
    """Moves ``new`` onto ``target``; an existing target is removed only after the move."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{secrets.token_hex(4)}")
        target.rename(old)
    try:
        new.rename(target)
    except BaseException:
        if old is not None:
            old.rename(target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
