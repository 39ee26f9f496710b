"""Running the `dlc` command in-process, and the one-line error contract every command keeps."""
from __future__ import annotations

from click.testing import CliRunner, Result

from dlc_cli.main import cli


def invoke(args) -> Result:
    """``dlc ARGS`` in this process (arguments may be paths or numbers); exceptions propagate."""
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def one_error_line(result: Result, *fragments: str) -> str:
    """Asserts exit code 1, exactly one stderr line ``Error: ...`` holding each fragment, and no
    traceback; returns that line."""
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output
    return lines[0]
