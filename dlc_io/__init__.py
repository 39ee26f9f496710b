"""dlc_io: writing files and folders so that a user's data is never lost or half-written.

Standard library only, so every package of the distribution (the lean runtime included) can use
it: it is the one place that knows how to replace a file or a folder safely.

- :mod:`dlc_io.atomic`: files that appear under their final name complete or not at all, with
  the permissions the user's umask gives any new file.
- :mod:`dlc_io.folders`: folders replaced only when this tool wrote them and the caller allows it.
"""
from dlc_io.atomic import (CommitOnSuccess, atomic_path, atomic_write_bytes, atomic_write_text,
                           fsync_file, part_path)
from dlc_io.folders import OutputExistsError, check_replaceable, make_folder, staged_folder

__all__ = ["CommitOnSuccess", "atomic_path", "atomic_write_bytes", "atomic_write_text", "fsync_file", "part_path",
           "OutputExistsError", "check_replaceable", "make_folder", "staged_folder"]
