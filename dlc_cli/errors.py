"""Turn the packages' user-facing errors into one-line messages and a non-zero exit."""
from __future__ import annotations

import functools
import re
import sys

import click

# (module, class) pairs: looked up only in modules already imported, so `dlc analyze` never
# imports torch just to know what to catch.
_USER_ERRORS = [
    ("dlc_train.config.io", "ConfigError"),
    ("dlc_train.data.project", "ProjectError"),
    ("dlc_train.models.loading", "SnapshotError"),
    ("dlc_train.runners.snapshots", "SnapshotError"),
    ("dlc_export.errors", "ExportError"),
    ("dlc_export.errors", "ParityError"),
    ("dlc_runtime.errors", "DLCRuntimeError"),
]

# The packages' messages name Python arguments ("pass overwrite=True"); the CLI user typed flags.
_PYTHON_FLAG = re.compile(r"\b([a-z][a-z0-9_]*)=True\b")


def _user_error_types() -> tuple[type, ...]:
    found = []
    for module_name, class_name in _USER_ERRORS:
        module = sys.modules.get(module_name)
        cls = getattr(module, class_name, None) if module else None
        if isinstance(cls, type):
            found.append(cls)
    # OSError covers a full disk, a missing or unreadable file, a refused output folder.
    return tuple(found) + (OSError,)


def in_cli_words(message: str) -> str:
    """``pass allow_truncated=True`` -> ``pass --allow-truncated`` for the running command's
    flags; other text is left as it is."""
    ctx = click.get_current_context(silent=True)
    flags = {p.name: p.opts[0] for p in (ctx.command.params if ctx else [])
             if isinstance(p, click.Option) and p.is_flag}
    return _PYTHON_FLAG.sub(lambda m: flags.get(m.group(1), m.group(0)), message)


def error_line(err: BaseException) -> str:
    """One line for ``err``: OSErrors as ``<reason>: <file>``, whitespace folded."""
    if isinstance(err, OSError) and err.strerror and type(err).__str__ is OSError.__str__:
        message = f"{err.strerror}: {err.filename}" if err.filename else err.strerror
    else:
        message = str(err)
    return in_cli_words(" ".join(message.split()) or type(err).__name__)


def one_line_errors(command):
    """Decorator: known errors -> 'Error: <message>' on stderr and exit code 1."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except click.exceptions.ClickException:
            raise
        except _user_error_types() as err:  # evaluated after the command imported its modules
            click.echo(f"Error: {error_line(err)}", err=True)
            sys.exit(1)

    return wrapper
