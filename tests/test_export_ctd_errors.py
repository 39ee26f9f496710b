"""Conditional top-down (CTD) export errors: a missing, mismatched or explicitly given
conditions model ends with one clear line and writes nothing; the one DeepLabCut's config names
is found.

The CTD project and its shuffles come from ``test_export_ctd`` (its module fixture, rebuilt here).
"""
from __future__ import annotations

import copy
import itertools
import shutil

import pytest

from dlc_export import export_bundle
from dlc_export.config_view import view_config
from dlc_export.errors import ExportError
from dlc_train.config import read_config_as_dict, write_config
from helpers.frames import textured_frames
from test_export_ctd import ctd_project  # noqa: F401  (the module fixture these tests use)

pytestmark = pytest.mark.usefixtures("one_thread")


# -- clear errors ----------------------------------------------------------------------------

_SPARE_SHUFFLES = itertools.count(90)


def _copy_ctd(trains, tmp_path, conditions) -> tuple:
    """The CTD shuffle copied beside the real ones with another inference.conditions."""
    name = trains[2].parent.name.replace("shuffle2", f"shuffle{next(_SPARE_SHUFFLES)}")
    folder = trains[2].parent.parent / name
    train = folder / "train"
    train.mkdir(parents=True, exist_ok=True)
    cfg = read_config_as_dict(trains[2] / "pytorch_config.yaml")
    cfg["inference"]["conditions"] = conditions
    write_config(train / "pytorch_config.yaml", cfg)
    shutil.copy(trains[2] / "snapshot-005.pt", train / "snapshot-005.pt")
    return train / "pytorch_config.yaml", train / "snapshot-005.pt"


@pytest.mark.parametrize("conditions, match", [
    (None, "inference.conditions is not set"),
    ("/data/bu_predictions.h5", "predictions file"),
    ({"shuffle": 7}, "conditions shuffle 7 was not found"),
    ({"shuffle": 1, "snapshot_index": 3}, "snapshot index 3 is out of range"),
    ({"shuffle": 2}, "must come from a bottom-up model"),
    ({"shuffle": 1, "modelprefix": "other"}, "modelprefix"),
    ({"shuffle": 1, "trainset_index": 4}, "trainset_index 4"),
])
def test_conditions_model_errors(ctd_project, tmp_path, conditions, match):
    _, trains = ctd_project
    config, snapshot = _copy_ctd(trains, tmp_path, conditions)
    with pytest.raises(ExportError, match=match):
        export_bundle(config, snapshot, tmp_path / "x.bundle", frames=textured_frames())
    assert not (tmp_path / "x.bundle").exists()
    assert not list(tmp_path.glob(".x.bundle.partial-*"))


@pytest.mark.parametrize("conditions", [
    {"shuffle": 1}, {"shuffle": 1, "snapshot_index": -1}, {"shuffle": 1, "trainset_index": 0},
    {"shuffle": 1, "snapshot": "snapshot-005.pt"}])
def test_conditions_model_is_found(ctd_project, conditions):
    from dlc_export.tasks.ctd_conditions import find_conditions_model

    _, trains = ctd_project
    cfg = read_config_as_dict(trains[2] / "pytorch_config.yaml")
    cfg["inference"]["conditions"] = conditions
    found = find_conditions_model(view_config(cfg, trains[2] / "pytorch_config.yaml"))
    assert found == (trains[1] / "pytorch_config.yaml", trains[1] / "snapshot-005.pt")


def test_explicit_conditions_model_errors(ctd_project, tmp_path):
    _, trains = ctd_project
    config, snapshot = _copy_ctd(trains, tmp_path, "/data/bu_predictions.h5")
    with pytest.raises(ExportError, match="together"):
        export_bundle(config, snapshot, tmp_path / "x.bundle",
                          conditions_config=trains[1] / "pytorch_config.yaml")
    other = copy.deepcopy(read_config_as_dict(trains[1] / "pytorch_config.yaml"))
    other["metadata"]["bodyparts"] = ["x", "y", "z", "w"]
    write_config(tmp_path / "bu.yaml", other)
    with pytest.raises(ExportError, match="bodyparts"):
        export_bundle(config, snapshot, tmp_path / "x.bundle",
                          conditions_config=tmp_path / "bu.yaml",
                          conditions_snapshot=trains[1] / "snapshot-005.pt")
    assert not (tmp_path / "x.bundle").exists()


def test_cli_export_with_explicit_conditions_model(ctd_project, tmp_path):
    """`dlc export SNAPSHOT --conditions-config --conditions-snapshot`: a CTD shuffle whose
    inference.conditions is a predictions file exports with the model given explicitly."""
    from click.testing import CliRunner

    from dlc_cli.main import cli
    from dlc_runtime.bundle import Bundle

    proj, trains = ctd_project
    _, snapshot = _copy_ctd(trains, tmp_path, "/data/bu_predictions.h5")
    runner = CliRunner()
    refused = runner.invoke(cli, ["export", str(snapshot), "-o", str(tmp_path / "x.bundle"),
                                  "--frames", str(proj.video_path)])
    assert refused.exit_code == 1 and "predictions file" in refused.output
    out = tmp_path / "cli.bundle"
    res = runner.invoke(cli, ["export", str(snapshot), "-o", str(out), "--frames",
                              str(proj.video_path), "--batch", "4",
                              "--conditions-config", str(trains[1] / "pytorch_config.yaml"),
                              "--conditions-snapshot", str(trains[1] / "snapshot-005.pt")],
                        catch_exceptions=False)
    assert res.exit_code == 0, res.output
    bundle = Bundle.load(out)
    assert bundle.task == "cond_top_down" and bundle.input.batch.max == 4
    assert Bundle.load(out / "conditions").input.batch.max == 4
