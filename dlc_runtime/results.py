"""Publishing one video's result files together, and knowing when a video is really done.

A video's results are the ``.h5``, the ``_meta.pickle`` and (when asked for) the ``.csv``. They
are written as ``<name>.part`` files, checked, renamed onto their final names in that order, and
then the completion record ``<video><scorer>_complete.json`` is written, last. The record lists
each file's size and sha256, so "already analyzed" means: a record exists and the ``.h5`` on disk
is the one it describes. An ``.h5`` without a matching record (a run that died between two
renames, an older version's result) is analyzed again, and the new files replace it only once
they are complete.

``analyze_video`` removes a video's checkpoint (:mod:`dlc_runtime.checkpoint`) only after the
record is written: a run killed between two renames leaves an ``.h5`` without a record and the
finished checkpoint, from which the rerun writes and publishes the results again.

A rerun that finds a complete result writes what is missing from it (the ``.csv`` asked for
now, a deleted ``_meta.pickle``) from the finished ``.h5`` and the facts the record keeps,
without analyzing the video again.
"""
from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlc_io import atomic_write_text, fsync_file, part_path
from dlc_runtime.bundle import sha256_file
from dlc_runtime.checkpoint import crash_point
from dlc_runtime.outputs import ResultPaths, write_csv_from_h5

RECORD_VERSION = 1
KINDS = ("h5", "meta", "csv")  # the order files are renamed in; the record comes after them


def file_entry(path: Path) -> dict[str, Any]:
    """What the record keeps of one file: its name, size and sha256."""
    return {"name": path.name, "size": path.stat().st_size, "sha256": sha256_file(path)}


def _matches(path: Path, entry: dict[str, Any] | None) -> bool:
    if not isinstance(entry, dict) or not path.is_file():
        return False
    # Size first: a cheap refusal for the common case of a file that changed.
    return path.stat().st_size == entry.get("size") and sha256_file(path) == entry.get("sha256")


def read_record(paths: ResultPaths) -> dict[str, Any] | None:
    """The completion record, or None when it is missing or unreadable (then: not complete)."""
    try:
        record = json.loads(paths.record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("version") != RECORD_VERSION \
            or not isinstance(record.get("files"), dict):
        return None
    return record


@dataclass
class Completed:
    """A video found complete: its record, and the outputs this call had to add to it."""

    record: dict[str, Any]
    added: list[str] = field(default_factory=list)

    @property
    def n_frames(self) -> int:
        return int(self.record.get("n_frames", 0))


def find_complete(paths: ResultPaths) -> dict[str, Any] | None:
    """The record when the ``.h5`` on disk is exactly the one it describes, else None."""
    record = read_record(paths)
    if record is None or not _matches(paths.h5, record["files"].get("h5")):
        return None
    return record


class ResultStage:
    """Result files staged as ``.part`` files, published together with a new record.

    Args:
        paths: the video's result paths.

    Use :meth:`part` to get the path to write each file to, then :meth:`publish`; on any error
    :meth:`discard` removes the staged files (the context manager does both).
    """

    def __init__(self, paths: ResultPaths) -> None:
        self.paths = paths
        self.staged: dict[str, Path] = {}

    def final(self, kind: str) -> Path:
        return getattr(self.paths, kind)

    def part(self, kind: str) -> Path:
        """The ``.part`` path to write ``kind`` ("h5", "meta", "csv") to."""
        self.staged[kind] = part_path(self.final(kind))
        return self.staged[kind]

    def publish(self, record: dict[str, Any], kept: dict[str, dict[str, Any]] | None = None
                ) -> dict[str, Any]:
        """Rename the staged files onto their final names, then write the record.

        Args:
            record: the record's facts (``n_frames``, ``run``, ...); ``files`` is filled here.
            kept: entries of files already published and left as they are.

        Returns:
            The record written.
        """
        files = dict(kept or {})
        for kind in KINDS:
            if kind in self.staged:
                fsync_file(self.staged[kind])  # a write error held back by the kernel: now
                files[kind] = file_entry(self.staged[kind]) | {"name": self.final(kind).name}
        # The old record goes first: from here until the new one is written the result counts
        # as incomplete, which is true while the files are being swapped.
        with contextlib.suppress(FileNotFoundError):
            self.paths.record.unlink()
        for kind in KINDS:
            if kind in self.staged:
                os.replace(self.staged.pop(kind), self.final(kind))
                crash_point(f"publish:{kind}")
        record = {"version": RECORD_VERSION, **record, "files": files}
        atomic_write_text(self.paths.record, json.dumps(record, indent=1, default=str) + "\n")
        return record

    def discard(self) -> None:
        for part in self.staged.values():
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
        self.staged.clear()

    def __enter__(self) -> ResultStage:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.discard()  # after publish() nothing is left staged; after an error, all of it


def complete_missing(paths: ResultPaths, record: dict[str, Any], save_as_csv: bool,
                     write_meta: Callable[[Path, dict[str, Any]], None]) -> Completed:
    """Add the outputs a complete result lacks: the ``.csv`` (when asked for) and a deleted
    ``_meta.pickle``, from the finished ``.h5`` and the record's facts. Files present are kept
    as they are. ``write_meta(path, record)`` writes the ``_meta.pickle`` from the record."""
    wanted = {"meta": not paths.meta.is_file(), "csv": save_as_csv and not paths.csv.is_file()}
    missing = [kind for kind in ("meta", "csv") if wanted[kind]]
    if not missing:
        return Completed(record)
    with ResultStage(paths) as stage:
        if "meta" in missing:
            write_meta(stage.part("meta"), record)
        if "csv" in missing:
            write_csv_from_h5(paths.h5, stage.part("csv"))
        kept = {k: v for k, v in record["files"].items() if k not in missing}
        facts = {k: v for k, v in record.items() if k not in ("version", "files")}
        record = stage.publish(facts, kept)
    return Completed(record, [{"meta": "_meta.pickle", "csv": ".csv"}[k] for k in missing])


__all__ = ["RECORD_VERSION", "ResultStage", "Completed", "find_complete", "read_record",
           "complete_missing", "file_entry"]
