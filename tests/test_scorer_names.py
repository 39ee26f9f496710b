"""Scorer names as DeepLabCut 3 writes them (``DLCLoader.scorer`` / ``get_scorer_name``), for
exports by project and by path, on DeepLabCut's own configs (../shared) and generated ones; and
bundles named before keep working (their manifest stores the scorer)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import DLC3, OPENFIELD, require
from dlc_export.config_view import read_pose_config
from dlc_export.options import ExportOptions
from dlc_export.source import project_config, resolve_source, scorer_name
from dlc_runtime.project_bundle import expected_scorer, find_project_bundle, \
    read_project_config
from dlc_runtime.scorer import dlc3_scorer, find_shuffle_folder, list_snapshots, net_name, \
    snapshot_uid
from dlc_runtime.testing import make_test_video, make_toy_bundle

SHUFFLE4 = "dlc-models-pytorch/iteration-0/openfieldOct30-trainset95shuffle4/train"
ISSUE_SCORER = "DLC_CspnextS_openfieldOct30shuffle4_snapshot_best-50"


def test_names_follow_deeplabcut():
    assert net_name("cspnext_s") == "CspnextS"
    assert net_name("top_down_hrnet_w32") == "TopDownHrnetW32"
    assert net_name("dlcrnet_stride16_ms5") == "DlcrnetStride16Ms5"
    # Snapshot.uid: the epoch without padding, "best-" for a best snapshot.
    assert snapshot_uid("snapshot-best-050.pt") == "best-50"
    assert snapshot_uid("train/snapshot-200.pt") == "200"
    assert snapshot_uid("snapshot-detector-best-1000.pt") == "best-1000"
    assert dlc3_scorer("resnet_50", "openfieldOct30", 1, "snapshot-best-200.pt",
                       "snapshot-detector-030.pt") \
        == "DLC_Resnet50_openfieldOct30shuffle1_detector_30_snapshot_best-200"
    folder = find_shuffle_folder("/elsewhere/pytorch_config.yaml",
                                 f"/home/u/openfield-Pranav-2018-10-30/{SHUFFLE4}/x.yaml")
    assert (folder.task_date, folder.percent, folder.shuffle) == ("openfieldOct30", 95, 4)
    assert find_shuffle_folder("/a/b/pytorch_config.yaml", None) is None


def test_snapshot_order_is_deeplabcuts(tmp_path):
    for name in ("snapshot-200.pt", "snapshot-1000.pt", "snapshot-best-050.pt",
                 "snapshot-best-900.pt", "snapshot-detector-010.pt", "notes.pt"):
        (tmp_path / name).write_bytes(b"")
    names = [p.name for p in list_snapshots(tmp_path)]
    assert names == ["snapshot-200.pt", "snapshot-1000.pt", "snapshot-best-900.pt"]
    assert [p.name for p in list_snapshots(tmp_path, "snapshot-detector")] \
        == ["snapshot-detector-010.pt"]


def _dlc_config(name: str, pose_config_path: str) -> dict:
    cfg = yaml.safe_load(require(DLC3 / "pytorch_configs" / name).read_text())
    cfg["metadata"]["pose_config_path"] = pose_config_path
    cfg["metadata"]["project_path"] = "/home/pranav/openfield-Pranav-2018-10-30"  # not here
    return cfg


def _write_shuffle(folder: Path, cfg: dict, *snapshots: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pytorch_config.yaml").write_text(yaml.safe_dump(cfg))
    for name in snapshots:
        (folder / name).write_bytes(b"")  # the scorer reads names only
    return folder / "pytorch_config.yaml"


def test_snapshot_exported_by_path_gets_deeplabcuts_scorer(tmp_path):
    """The issue's case: a DeepLabCut snapshot copied out of its project, its
    pytorch_config.yaml beside it naming the project, date and shuffle."""
    cfg = _dlc_config("cspnext_s_BU_sa.yaml",
                      f"/home/pranav/openfield-Pranav-2018-10-30/{SHUFFLE4}/pytorch_config.yaml")
    config = _write_shuffle(tmp_path / "copied", cfg, "snapshot-best-050.pt")
    view = read_pose_config(config)
    assert project_config(view) is None
    assert scorer_name(view, tmp_path / "copied/snapshot-best-050.pt", None) == ISSUE_SCORER


def test_snapshot_in_the_real_openfield_project_gets_the_same_scorer(tmp_path):
    project = tmp_path / "openfield-Pranav-2018-10-30"
    project.mkdir()
    shutil.copy(require(OPENFIELD / "config.yaml"), project / "config.yaml")
    cfg = _dlc_config("cspnext_s_BU_sa.yaml", f"{SHUFFLE4}/pytorch_config.yaml")
    config = _write_shuffle(project / SHUFFLE4, cfg, "snapshot-040.pt", "snapshot-best-050.pt")
    view = read_pose_config(config)
    found = project_config(view)
    assert found is not None and found["Task"] == "openfield" and found["date"] == "Oct30"
    assert scorer_name(view, config.parent / "snapshot-best-050.pt", found) == ISSUE_SCORER
    # The runtime's lookup names the same snapshot (snapshotindex -1: the best one).
    assert expected_scorer(read_project_config(project / "config.yaml"), 4) == ISSUE_SCORER
    assert expected_scorer(read_project_config(project / "config.yaml"), 4,
                           snapshot_index=0) == "DLC_CspnextS_openfieldOct30shuffle4_snapshot_40"
    assert expected_scorer(read_project_config(project / "config.yaml"), 3) is None


def test_top_down_scorer_names_the_detector(tmp_path):
    cfg = _dlc_config("resnet_50_TD_ma.yaml", f"/x/{SHUFFLE4}/pytorch_config.yaml")
    config = _write_shuffle(tmp_path / "td", cfg, "snapshot-best-050.pt",
                            "snapshot-detector-010.pt", "snapshot-detector-best-030.pt")
    source = resolve_source(config, config.parent / "snapshot-best-050.pt", tmp_path / "out",
                            ExportOptions())
    net = net_name(cfg["net_type"])
    assert source.scorer == f"DLC_{net}_openfieldOct30shuffle4_detector_best-30_snapshot_best-50"
    chosen = ExportOptions(detector_snapshot=config.parent / "snapshot-detector-010.pt")
    assert resolve_source(config, config.parent / "snapshot-best-050.pt", tmp_path / "out",
                          chosen).scorer.endswith("_detector_10_snapshot_best-50")


def test_a_snapshot_without_any_shuffle_folder_gets_no_invented_shuffle(tmp_path):
    cfg = _dlc_config("cspnext_s_BU_sa.yaml", "pytorch_config.yaml")
    config = _write_shuffle(tmp_path / "loose", cfg, "snapshot-007.pt")
    assert scorer_name(read_pose_config(config), config.parent / "snapshot-007.pt", None) \
        == "DLC_CspnextS_model_snapshot_7"


def test_export_by_project_and_by_path_give_deeplabcuts_scorer(quick_demo, tmp_path):
    from dlc_export import export_bundle, export_from_project

    output, result = quick_demo
    config = next((output / "project").glob("*/config.yaml"))
    train = next(config.parent.glob("dlc-models-pytorch/*/*/train"))
    expected = "DLC_ResnetTiny_syntheticJan1shuffle1_snapshot_best-4"
    # The demo exported to the default place: <project>/exported-models-pytorch/<scorer>.bundle
    assert Path(result.bundle_dir).name == f"{expected}.bundle"
    by_project = export_from_project(config, output=tmp_path / "p.bundle")
    copied = tmp_path / "elsewhere"
    copied.mkdir()
    for name in ("pytorch_config.yaml", "snapshot-best-004.pt"):
        shutil.copy(train / name, copied / name)
    by_path = export_bundle(copied / "pytorch_config.yaml", copied / "snapshot-best-004.pt",
                            tmp_path / "c.bundle")
    assert by_project.manifest.scorer == by_path.manifest.scorer == expected
    assert find_project_bundle(config) == Path(result.bundle_dir)


def test_bundles_named_before_keep_their_scorer(tmp_path):
    old = "DLC_CspnextS_modelshuffle1_snapshot_best_050"
    bundle = make_toy_bundle(tmp_path / "old.bundle", scorer=old)
    video = make_test_video(tmp_path / "v.mp4", n_frames=4)
    from dlc_runtime import analyze_video

    result = analyze_video(bundle, video, tmp_path / "out", progress=False)
    assert result.h5_path.name == f"v{old}.h5"
    assert pd.read_hdf(result.h5_path).columns.get_level_values("scorer")[0] == old

    # A project whose only bundle for the shuffle has an old-style name is still found.
    project = tmp_path / "proj"
    project.mkdir()
    (project / "config.yaml").write_text(yaml.safe_dump(
        {"Task": "test", "date": "Oct30", "bodyparts": ["snout", "tailbase"],
         "TrainingFraction": [0.95], "iteration": 0, "snapshotindex": -1}))
    named = "DLC_Toy_testOct30shuffle1_snapshot_001.bundle"
    shutil.copytree(make_toy_bundle(tmp_path / "t.bundle"),
                    project / "exported-models-pytorch" / named)
    assert find_project_bundle(project / "config.yaml").name == named
