"""Turn the packages' user-facing errors into one-line messages and a non-zero exit."""
from __future__ import annotations

import functools
import sys

import click

# (module, class) pairs: looked up only in modules already imported, so `dlc analyze` never
# imports torch just to know what to catch.
_USER_ERRORS = [
    ("dlc_train.config.io", "ConfigError"),
    ("dlc_train.data.project", "ProjectError"),
    ("dlc_train.models.loading", "SnapshotError"),
    ("dlc_train.runners.snapshots", "SnapshotError"),
    ("dlc_export.onnx_export", "ExportError"),
    ("dlc_export.parity", "ParityError"),
    ("dlc_runtime.errors", "DLCRuntimeError"),
]


def _user_error_types() -> tuple[type, ...]:
    found = []
    for module_name, class_name in _USER_ERRORS:
        module = sys.modules.get(module_name)
        cls = getattr(module, class_name, None) if module else None
        if isinstance(cls, type):
            found.append(cls)
    return tuple(found) + (FileNotFoundError, FileExistsError)


def one_line_errors(command):
    """Decorator: known errors -> 'Error: <message>' on stderr and exit code 1."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except click.exceptions.ClickException:
            raise
        except _user_error_types() as err:  # evaluated after the command imported its modules
            message = " ".join(str(err).split()) or type(err).__name__
            click.echo(f"Error: {message}", err=True)
            sys.exit(1)

    return wrapper
