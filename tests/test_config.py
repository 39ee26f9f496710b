"""make_pytorch_pose_config against configs DeepLabCut 3.0.1 wrote, and YAML I/O errors."""
from __future__ import annotations

import pytest

from conftest import DLC3, require
from dlc_train.config import (ConfigError, make_pytorch_pose_config, read_config_as_dict,
                              update_config, write_config)
from dlc_train.config.make_pose_config import _resnet_model

PROJECT = {"Task": "demo", "date": "Jan1", "project_path": "PROJECT_PATH",
           "bodyparts": ["a", "b", "c", "d"], "multianimalproject": False,
           "default_net_type": "resnet_50"}


@pytest.mark.parametrize("net_type", ["resnet_50", "resnet_101"])
def test_matches_deeplabcut_bottom_up_single_animal(net_type):
    name = f"{net_type}_BU_sa"
    expected = read_config_as_dict(require(DLC3 / "pytorch_configs" / f"{name}.yaml"))
    pose_path = f"dlc-models-pytorch/iteration-0/demoJan1-trainset95shuffle1/train/{name}.yaml"
    ours = make_pytorch_pose_config(PROJECT, pose_path, net_type=net_type)
    assert ours == expected
    assert list(ours) == list(expected)  # same key order as DeepLabCut writes


def test_top_down_model_section_matches_deeplabcut():
    expected = read_config_as_dict(require(DLC3 / "pytorch_configs" / "resnet_50_TD_ma.yaml"))
    assert _resnet_model("resnet_50", 4, top_down=True) == expected["model"]


def test_unknown_net_type_and_missing_bodyparts():
    with pytest.raises(ValueError, match="unknown net_type 'resnet_7'"):
        make_pytorch_pose_config(PROJECT, "x.yaml", net_type="resnet_7")
    with pytest.raises(ValueError, match="no bodyparts"):
        make_pytorch_pose_config({**PROJECT, "bodyparts": []}, "x.yaml")


def test_write_read_roundtrip_and_malformed(tmp_path):
    cfg = make_pytorch_pose_config(PROJECT, "x.yaml", net_type="resnet_18")
    path = write_config(tmp_path / "pytorch_config.yaml", cfg)
    assert read_config_as_dict(path) == cfg
    assert update_config(cfg, {"train_settings.epochs": 3})["train_settings"]["epochs"] == 3
    assert cfg["train_settings"]["epochs"] == 200  # the original is untouched

    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match=r"malformed YAML in .*bad.yaml \(line"):
        read_config_as_dict(bad)
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="does not hold a YAML mapping"):
        read_config_as_dict(tmp_path / "list.yaml")
    with pytest.raises(ConfigError, match="not found"):
        read_config_as_dict(tmp_path / "missing.yaml")
