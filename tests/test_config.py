"""make_pytorch_pose_config against configs DeepLabCut 3.0.1 wrote, and YAML I/O errors."""
from __future__ import annotations

import pytest

from conftest import DLC3, require
from dlc_train.config import (ConfigError, available_net_types, make_pytorch_pose_config,
                              read_config_as_dict, update_config, write_config)
from dlc_train.config.make_pose_config import full_paf_graph

PROJECT = {"Task": "demo", "date": "Jan1", "project_path": "PROJECT_PATH", "iteration": 0,
           "TrainingFraction": [0.95], "bodyparts": ["a", "b", "c", "d"],
           "multianimalproject": False, "default_net_type": "resnet_50"}
# A multi-animal project as DeepLabCut writes its config.yaml.
MA_PROJECT = {**PROJECT, "bodyparts": "MULTI!", "multianimalproject": True,
              "multianimalbodyparts": ["a", "b", "c", "d"], "uniquebodyparts": [],
              "individuals": ["i1", "i2"], "identity": False}

SAMPLES = ["cspnext_s_BU_sa", "dekr_w18_BU_ma", "dlcrnet_stride16_ms5_BU_ma", "hrnet_w32_BU_sa",
           "hrnet_w32_TD_ma", "resnet_101_BU_sa", "resnet_50_BU_ma", "resnet_50_BU_sa",
           "resnet_50_TD_ma", "rtmpose_m_TD_ma", "rtmpose_s_TD_ma"]


def pose_config_path(project: dict, name: str, shuffle: int = 1) -> str:
    """Where DeepLabCut puts a shuffle's config (the samples' file name replaces
    pytorch_config.yaml)."""
    fraction = int(100 * project["TrainingFraction"][0])
    return (f"dlc-models-pytorch/iteration-{project['iteration']}/{project['Task']}"
            f"{project['date']}-trainset{fraction}shuffle{shuffle}/train/{name}.yaml")


def key_paths(node, prefix: str = "") -> list[str]:
    """Every key path, in order: equal lists mean the same nested key order."""
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in [f"{prefix}.{k}", *key_paths(v, f"{prefix}.{k}")]]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in key_paths(v, f"{prefix}[{i}]")]
    return []


def test_every_sample_is_checked():
    found = sorted(p.stem for p in require(DLC3 / "pytorch_configs").glob("*.yaml"))
    assert found == sorted(SAMPLES)


@pytest.mark.parametrize("name", SAMPLES)
def test_matches_deeplabcut(name):
    expected = read_config_as_dict(require(DLC3 / "pytorch_configs" / f"{name}.yaml"))
    net_type, task, animals = name.rsplit("_", 2)
    project = MA_PROJECT if animals == "ma" else PROJECT
    path = pose_config_path(project, name)
    assert path == expected["metadata"]["pose_config_path"]
    ours = make_pytorch_pose_config(project, path, net_type=net_type, top_down=task == "TD")
    assert ours == expected
    assert key_paths(ours) == key_paths(expected)  # same key order, at every depth
    # Types too: 1e-05 must be a float, 1 an int (DeepLabCut's YAML has both).
    assert repr(ours) == repr(expected)


def test_top_down_prefix_is_the_top_down_flag():
    a = make_pytorch_pose_config(MA_PROJECT, "x.yaml", net_type="top_down_hrnet_w32")
    b = make_pytorch_pose_config(MA_PROJECT, "x.yaml", net_type="hrnet_w32", top_down=True)
    assert a == b and a["net_type"] == "hrnet_w32" and a["method"] == "td"
    assert a["detector"]["model"]["type"] == "SSDLite"
    single = make_pytorch_pose_config(PROJECT, "x.yaml", net_type="top_down_resnet_50")
    assert single["metadata"]["individuals"] == ["individual_1"] and single["detector"]


def test_every_net_type_builds_a_config():
    assert {"resnet_50", "resnet_101", "hrnet_w18", "hrnet_w48", "cspnext_x", "dekr_w48",
            "dlcrnet_stride32_ms5", "rtmpose_x", "top_down_resnet_50", "ctd_coam_w32",
            "ctd_prenet_hrnet_w32", "ctd_prenet_rtmpose_s", "resnet_tiny"} <= set(
        available_net_types())
    for net_type in available_net_types():
        cfg = make_pytorch_pose_config(MA_PROJECT, "x.yaml", net_type=net_type)
        assert cfg["model"]["heads"]["bodypart"]["type"]
        assert cfg["method"] in ("bu", "td", "ctd")
        assert (cfg["detector"] is not None) == (cfg["method"] == "td")


def test_architecture_specifics():
    dekr = make_pytorch_pose_config(MA_PROJECT, "x.yaml", net_type="dekr_w32")
    head = dekr["model"]["heads"]["bodypart"]
    assert head["heatmap_config"]["channels"] == [480, 32, 5]  # 4 bodyparts + centre
    assert head["offset_config"]["channels"] == [480, 60, 4]
    assert dekr["with_center_keypoints"] is True

    dlcr32 = make_pytorch_pose_config(MA_PROJECT, "x.yaml", net_type="dlcrnet_stride32_ms5")
    assert dlcr32["model"]["backbone"]["output_stride"] == 32
    assert dlcr32["model"]["heads"]["bodypart"]["paf_config"]["channels"] == [2304, 1152, 12]

    ctd = make_pytorch_pose_config(MA_PROJECT, "x.yaml", net_type="ctd_prenet_rtmpose_s",
                                   ctd_conditions=(1, "snapshot-best-200.pt"))
    assert ctd["method"] == "ctd" and ctd["detector"] is None
    assert ctd["model"]["backbone"]["type"] == "CondPreNet"
    assert ctd["model"]["backbone"]["backbone"]["model_name"] == "cspnext_s"
    assert ctd["inference"]["conditions"] == {"shuffle": 1, "snapshot": "snapshot-best-200.pt"}
    assert ctd["data"]["train"]["top_down_crop"]["crop_with_context"] is False
    coam = make_pytorch_pose_config(MA_PROJECT, "x.yaml", net_type="ctd_coam_w32",
                                    ctd_conditions=2)
    assert coam["model"]["backbone"]["type"] == "HRNetCoAM"
    assert coam["model"]["heads"]["bodypart"]["locref_config"]["final_conv"]["out_channels"] == 8
    assert coam["inference"]["conditions"] == {"shuffle": 2}


def test_paf_graph_and_paf_best():
    cfg = make_pytorch_pose_config(MA_PROJECT, "x.yaml", net_type="resnet_50")
    predictor = cfg["model"]["heads"]["bodypart"]["predictor"]
    assert predictor["graph"] == [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]]
    assert predictor["edges_to_keep"] == [0, 1, 2, 3, 4, 5]

    ring = [[0, 1], [1, 2], [2, 3], [0, 3]]
    cfg = make_pytorch_pose_config({**MA_PROJECT, "paf_best": [0, 2]}, "x.yaml",
                                   net_type="dlcrnet_stride16_ms5", paf_graph=ring)
    head = cfg["model"]["heads"]["bodypart"]
    assert head["predictor"]["graph"] == ring and head["predictor"]["edges_to_keep"] == [0, 2]
    assert head["target_generator"]["generators"][1]["graph"] == ring
    assert head["paf_config"]["channels"] == [2304, 8]
    with pytest.raises(ValueError, match="paf_best"):
        make_pytorch_pose_config({**MA_PROJECT, "paf_best": [7]}, "x.yaml", net_type="resnet_50")

    # 15+ bodyparts: the full graph is pruned to an average degree of 6, still connected.
    graph = full_paf_graph(20)
    assert len(graph) == 60 and graph == full_paf_graph(20)
    assert {i for edge in graph for i in edge} == set(range(20))


def test_unique_bodyparts_and_identity_heads():
    project = {**MA_PROJECT, "uniquebodyparts": ["u1", "u2"], "identity": True}
    cfg = make_pytorch_pose_config(project, "x.yaml", net_type="dlcrnet_stride16_ms5")
    heads = cfg["model"]["heads"]
    assert list(heads) == ["bodypart", "unique_bodypart", "identity"]
    assert heads["unique_bodypart"]["heatmap_config"]["channels"] == [2304, 2]
    assert heads["unique_bodypart"]["locref_config"]["channels"] == [2304, 4]
    assert heads["unique_bodypart"]["target_generator"]["label_keypoint_key"] == \
        "keypoints_unique"
    assert heads["identity"]["heatmap_config"]["channels"] == [2304, 2]
    assert cfg["metadata"]["unique_bodyparts"] == ["u1", "u2"]
    assert cfg["metadata"]["with_identity"] is True
    with pytest.raises(ValueError, match="unique bodyparts"):
        make_pytorch_pose_config(project, "x.yaml", net_type="rtmpose_s")
    with pytest.raises(ValueError, match="identity"):
        make_pytorch_pose_config({**MA_PROJECT, "identity": True}, "x.yaml",
                                 net_type="top_down_resnet_50")


def test_unknown_net_type_and_missing_bodyparts():
    with pytest.raises(ValueError, match="unknown net_type 'resnet_7'"):
        make_pytorch_pose_config(PROJECT, "x.yaml", net_type="resnet_7")
    with pytest.raises(ValueError, match="unknown net_type 'top_down_dekr_w32'"):
        make_pytorch_pose_config(PROJECT, "x.yaml", net_type="top_down_dekr_w32")
    with pytest.raises(ValueError, match="no bodyparts"):
        make_pytorch_pose_config({**PROJECT, "bodyparts": []}, "x.yaml")
    with pytest.raises(ValueError, match="unknown detector_type"):
        make_pytorch_pose_config(MA_PROJECT, "x.yaml", "top_down_resnet_50", detector_type="yolo")


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


@pytest.mark.parametrize("name", SAMPLES)
def test_written_configs_read_back_equal(tmp_path, name):
    """Our YAML writer round-trips every layout (1e-05 floats, nulls, nested lists)."""
    net_type, task, animals = name.rsplit("_", 2)
    project = MA_PROJECT if animals == "ma" else PROJECT
    cfg = make_pytorch_pose_config(project, "x.yaml", net_type=net_type, top_down=task == "TD")
    assert read_config_as_dict(write_config(tmp_path / "c.yaml", cfg)) == cfg
