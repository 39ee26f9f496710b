"""What an analysis reads and where it may write: videos and images named by files, folders and
globs, and output folders checked before any work.

Videos follow DeepLabCut 3's ``collect_video_paths``: a folder contributes its files (one level
deep) with a video extension (``SUPPORTED_VIDEOS``, or the ones asked for), minus DeepLabCut's own
outputs (``*_labeled.*``, ``*_full.*``); a file is taken as it is unless extensions are asked
for. Beyond DeepLabCut: a glob (``"videos/*.mp4"``, quoted so the shell leaves it) is expanded
here, and a name that does not exist or matches nothing is reported as a problem beside the
videos found instead of stopping the whole run.
"""
from __future__ import annotations

import glob
import os
import random
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from dlc_runtime.errors import OutputError

#: DeepLabCut 3's ``auxfun_videos.SUPPORTED_VIDEOS``.
SUPPORTED_VIDEOS = ("avi", "mp4", "mov", "mpeg", "mpg", "mpv", "mkv", "flv", "qt", "yuv")
#: DeepLabCut's ``DEFAULT_EXCLUDE_PATTERNS``: its labeled videos and full pickles.
EXCLUDE_PATTERNS = ("*_labeled.*", "*_full.*")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class InputProblem:
    """A name given that yields no file to analyze, and why (one line)."""

    name: str
    reason: str
    #: the name does not exist (else: it exists but holds or matches no file of the kind).
    missing: bool = False


def suffixes(extensions: str | Sequence[str] | None) -> set[str] | None:
    """``"mp4"`` / ``[".mp4", "AVI"]`` -> ``{".mp4", ".avi"}``; None or ``""``: no filter."""
    if extensions is None or extensions in ("", ("",), [""]):
        return None
    if isinstance(extensions, str):
        extensions = [extensions]
    found = {f".{e.strip().lstrip('.').lower()}" for e in extensions if e.strip()}
    return found or None


def _excluded(path: Path) -> bool:
    return any(path.match(pattern) for pattern in EXCLUDE_PATTERNS)


def collect_files(names: Iterable[str | os.PathLike[str]], wanted: set[str] | None,
                  default: set[str], kind: str = "video", shuffle: bool = False
                  ) -> tuple[list[Path], list[InputProblem]]:
    """Files to analyze from ``names`` (files, folders, globs) and the names yielding none.

    Args:
        names: what the user gave, in order.
        wanted: suffixes asked for (filters files, folders and globs); None: files as given,
            folders and globs by ``default``.
        default: the suffixes a folder or glob contributes without ``wanted``.
        kind: "video" or "image", for messages.
        shuffle: random order (DeepLabCut's ``in_random_order``); else each folder and glob
            sorted, in the order given. A file named twice is analyzed once.
    """
    allowed = wanted or default
    shown = ", ".join(sorted(f"*{s}" for s in allowed))
    found: list[Path] = []
    problems: list[InputProblem] = []
    for name in names:
        path = Path(name)
        if path.is_dir():
            files = sorted(p for p in path.iterdir()
                           if p.is_file() and p.suffix.lower() in allowed and not _excluded(p))
            if not files:
                article = "an" if kind[0] in "aeiou" else "a"
                problems.append(InputProblem(str(name), f"{path} is a folder, not {article} "
                                                        f"{kind}, and holds no {kind}s ({shown})"))
        elif path.is_file():
            files = [path] if (wanted is None or path.suffix.lower() in wanted) \
                and not _excluded(path) else []
        elif _GLOB_CHARS & set(str(name)):
            files = sorted(Path(p) for p in glob.glob(str(name))
                           if Path(p).is_file() and Path(p).suffix.lower() in allowed
                           and not _excluded(Path(p)))
            if not files:
                problems.append(InputProblem(str(name), f"no {kind} file matches {name}"))
        else:
            problems.append(InputProblem(str(name), f"{name}: no such file or folder",
                                         missing=True))
            files = []
        found.extend(files)
    seen: set[Path] = set()
    unique = []
    for path in found:
        if path.resolve() not in seen:
            seen.add(path.resolve())
            unique.append(path)
    if shuffle:
        random.shuffle(unique)
    return unique, problems


def collect_videos(names: Iterable[str | os.PathLike[str]],
                   extensions: str | Sequence[str] | None = None, shuffle: bool = False
                   ) -> tuple[list[Path], list[InputProblem]]:
    """Videos from files, folders and globs (see :func:`collect_files`)."""
    return collect_files(names, suffixes(extensions), {f".{e}" for e in SUPPORTED_VIDEOS},
                         "video", shuffle)


def collect_images(names: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
                   frame_type: str | None = None) -> tuple[list[Path], list[InputProblem]]:
    """Images (``.png``, ``.jpg``, ``.jpeg``, or ``frame_type``) from files, folders, globs."""
    if isinstance(names, (str, os.PathLike)):
        names = [names]
    return collect_files(names, suffixes(frame_type), set(IMAGE_SUFFIXES), "image")


def check_output_folder(folder: str | os.PathLike[str], what: str = "output folder") -> Path:
    """Prove that results can be written in ``folder`` before any work, creating nothing: a
    read-only folder, a path under ``/proc`` or ``/sys``, or a file where a folder should be is
    one :class:`OutputError` line, not a failure after an hour of analysis.

    A folder that does not exist yet is judged by the nearest one above it that does (the
    writers create the rest).

    Args:
        folder: the folder results go to.
        what: how the message names it ("--dest", "the video's folder").
    """
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "" if existing == folder else f" ({existing} is a file)"
        raise OutputError(f"{what} {folder} is not a folder{where}: pass a folder, it is "
                          "created when missing")
    probe = existing / f".dlc-write-test-{secrets.token_hex(4)}"
    try:
        with open(probe, "wb") as fh:
            fh.write(b"\0")
    except OSError as err:
        reason = err.strerror or str(err)
        doing = f"write in {what} {folder}" if existing == folder else \
            f"create {what} {folder}: {existing} is not writable"
        raise OutputError(f"cannot {doing} ({reason}); pass a folder you can write to") \
            from None
    finally:
        try:
            probe.unlink()
        except OSError:
            pass
    return folder


__all__ = ["SUPPORTED_VIDEOS", "EXCLUDE_PATTERNS", "IMAGE_SUFFIXES", "InputProblem",
           "suffixes", "collect_files", "collect_videos", "collect_images",
           "check_output_folder"]
