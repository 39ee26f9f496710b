"""Configs the exporter cannot turn into a bundle fail in one clear line and write nothing.

A bundle names its keypoints from the config's ``metadata.bodyparts``: without them there is no
bundle to write. Checked for bottom-up configs (single- and multi-animal) through
``export_bundle`` and the ``dlc export`` command, and for a top-down config (``method: td``,
exported by ``dlc_export.tasks.top_down``) through ``export_bundle``.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from dlc_cli.main import cli
from dlc_export import export_bundle
from dlc_export.errors import ExportError
from helpers.shuffles import write_shuffle

BODYPARTS = ["snout", "leftear", "rightear", "tail"]
PROJECTS = {
    "sa": {"bodyparts": BODYPARTS, "multianimalproject": False},
    "ma": {"multianimalproject": True, "multianimalbodyparts": BODYPARTS,
           "individuals": ["mouse1", "mouse2"], "uniquebodyparts": [], "identity": False},
}
# How a config can lack bodyparts: the key missing, an empty list, or no value at all.
NO_BODYPARTS = {"missing": lambda metadata: metadata.pop("bodyparts"),
                "empty": lambda metadata: metadata.update(bodyparts=[]),
                "null": lambda metadata: metadata.update(bodyparts=None)}


pytestmark = pytest.mark.usefixtures("one_thread")


def _shuffle_without_bodyparts(folder: Path, net_type: str, project: dict,
                               how: str) -> tuple[Path, Path]:
    """A real shuffle (config + random-weight snapshot of the same model) whose config then
    loses its bodyparts, so nothing else stands in the way of the export."""
    made = write_shuffle(folder / "train", project, net_type,
                         edit_config=lambda cfg: NO_BODYPARTS[how](cfg["metadata"]))
    return made.config_path, made.snapshot


def _files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")}


def _assert_one_line(message: str, *fragments: str) -> None:
    assert "\n" not in message.strip(), message
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.parametrize("kind,net_type", [("sa", "resnet_tiny"), ("ma", "resnet_tiny"),
                                           ("ma", "dekr_w18")])
@pytest.mark.parametrize("how", sorted(NO_BODYPARTS))
def test_bottom_up_export_without_bodyparts_fails_clearly(tmp_path, kind, net_type, how):
    config_path, snapshot = _shuffle_without_bodyparts(tmp_path / "shuffle", net_type,
                                                       PROJECTS[kind], how)
    before = _files_under(tmp_path)
    out = tmp_path / "exports" / "m.bundle"
    with pytest.raises(ExportError) as err:
        export_bundle(config_path, snapshot, out, simplify=False)
    _assert_one_line(str(err.value), str(config_path), "metadata.bodyparts",
                     "missing or empty")
    assert not out.exists()
    assert _files_under(tmp_path) == before, "the failed export left files behind"


def test_cli_export_without_bodyparts_is_one_line(tmp_path):
    _, snapshot = _shuffle_without_bodyparts(tmp_path / "shuffle", "resnet_tiny",
                                             PROJECTS["ma"], "missing")
    before = _files_under(tmp_path)
    out = tmp_path / "exports" / "m.bundle"
    result = CliRunner().invoke(cli, ["export", str(snapshot), "-o", str(out)],
                                catch_exceptions=False)
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    _assert_one_line(lines[0], "metadata.bodyparts", "missing or empty")
    assert "Traceback" not in result.output
    assert not out.exists() and _files_under(tmp_path) == before


@pytest.mark.parametrize("how", ["missing", "empty"])
def test_top_down_export_without_bodyparts_fails_clearly(tmp_path, how):
    config_path, snapshot = _shuffle_without_bodyparts(tmp_path / "shuffle",
                                                       "top_down_resnet_tiny", PROJECTS["ma"],
                                                       how)
    before = _files_under(tmp_path)
    out = tmp_path / "exports" / "td.bundle"
    with pytest.raises(ExportError) as err:
        export_bundle(config_path, snapshot, out, simplify=False)
    _assert_one_line(str(err.value), str(config_path), "metadata.bodyparts")
    assert not out.exists()
    assert _files_under(tmp_path) == before, "the failed export left files behind"
