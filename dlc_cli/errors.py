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


#: Exit code of a run stopped by Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED_EXIT_CODE = 130

# Errors that mean "the user stopped it" rather than "something is wrong": exit 130 with their
# message. (module, class) pairs as in _USER_ERRORS; KeyboardInterrupt and its subclasses are
# always included.
_INTERRUPTS: list[tuple[str, str]] = [
    ("dlc_runtime.errors", "AnalysisInterrupted"),  # Ctrl-C after a checkpoint was saved
]


def interrupt_types() -> tuple[type, ...]:
    """The exception types that end a command with 'Interrupted: ...' and exit code 130."""
    found = [getattr(sys.modules.get(module), name, None) for module, name in _INTERRUPTS]
    return tuple(cls for cls in found if isinstance(cls, type)) + (KeyboardInterrupt,)


def one_line_errors(command):
    """Decorator: known errors -> 'Error: <message>' on stderr and exit code 1; Ctrl-C ->
    'Interrupted: <message>' and exit code 130, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except click.exceptions.ClickException:
            raise
        except BaseException as err:  # the types are known only once the command ran
            if isinstance(err, interrupt_types()):
                message = error_line(err) if str(err) else "stopped by Ctrl-C"
                click.echo(f"Interrupted: {message}", err=True)
                sys.exit(INTERRUPTED_EXIT_CODE)
            if isinstance(err, _user_error_types()):
                click.echo(f"Error: {error_line(err)}", err=True)
                sys.exit(1)
            raise

    return wrapper


# click >= 8.2 raises this for a group called without a command (older ones print the help).
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


class OneLineGroup(click.Group):
    """The ``dlc`` command group: a usage error (a bad option value, an unknown option, a
    missing argument) ends, like every other bad input, with one ``Error: ...`` line and exit
    code 1, instead of click's usage block and exit code 2. ``-h`` still shows the usage."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):  # type: ignore[override]
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            super().main(*args, standalone_mode=False, **kwargs)
        except _NO_ARGS_IS_HELP as err:  # `dlc` alone: the help, as usual
            click.echo(err.ctx.get_help() if err.ctx else str(err))
            sys.exit(0)
        except click.ClickException as err:
            command = err.ctx.command_path if getattr(err, "ctx", None) else "dlc"
            message = " ".join(err.format_message().split())
            click.echo(f"Error: {message} ('{command} -h' lists the options)", err=True)
            sys.exit(1)
        except click.Abort:
            click.echo("Error: aborted", err=True)
            sys.exit(1)
        sys.exit(0)
