"""SuperAnimal models from a local Hugging Face cache (offline): written as a model folder that
builds and loads like any snapshot, and used as ``train_settings.weight_init`` (transfer
learning: the backbone; fine-tuning: the heads mapped by ``conversion_array``; the detector).

The cached snapshots are made here from our own randomly initialised models with the keys and
layout DeepLabCut's SuperAnimal snapshots have (``{"model": state_dict}``).
"""
from __future__ import annotations

import pytest
import torch

import dlc_train.models  # noqa: F401  (registers every component)
from dlc_train.config import make_pytorch_pose_config, read_config_as_dict
from dlc_train.models import PoseModel
from dlc_train.models.detectors import DETECTORS
from dlc_train.models.loading import build_model_from_snapshot, read_snapshot
from dlc_train.models.pretrained import (MissingWeightsError, PretrainedWeightsError,
                                         WeightInit, build_detector_for_training,
                                         build_pose_model_for_training, superanimal_names,
                                         superanimal_pytorch_config, superanimal_weight_init,
                                         write_superanimal_model)
from dlc_train.models.pretrained.superanimal import SUPERANIMAL_BODYPARTS
from helpers.weights_cache import randomized, weights_cache  # noqa: F401  (fixture)

DATASET = "superanimal_topviewmouse"
POSE = f"{DATASET}_hrnet_w32"
DETECTOR = "fasterrcnn_mobilenet_v3_large_fpn"
REPO = "mwmathis/DeepLabCutModelZoo-SuperAnimal-TopViewMouse"


@pytest.fixture
def superanimal(weights_cache):
    """Caches a SuperAnimal TopViewMouse hrnet_w32 + Faster R-CNN pair; returns their states."""
    cfg = superanimal_pytorch_config(DATASET, "hrnet_w32", DETECTOR)
    pose = randomized(PoseModel.build(cfg["model"]).state_dict(), seed=11)
    detector = randomized(DETECTORS.build(dict(cfg["detector"]["model"])).state_dict(), seed=12)
    weights_cache.put_hub(REPO, f"{POSE}.pt", {"model": pose, "metadata": {"epoch": 200}})
    weights_cache.put_hub(REPO, f"{DATASET}_{DETECTOR}.pt", {"model": detector})
    return pose, detector


def project_model_cfg(bodyparts: list[str]) -> dict:
    project = {"bodyparts": bodyparts, "multianimalproject": False}
    return make_pytorch_pose_config(project, "pytorch_config.yaml", "hrnet_w32", top_down=True,
                                    detector_type=DETECTOR)


def same(a: dict, b: dict, keys) -> bool:
    return all(torch.equal(a[k], b[k]) for k in keys)


def test_names_are_dlclibrarys():
    names = superanimal_names()
    assert {POSE, f"{DATASET}_resnet_50", f"{DATASET}_fasterrcnn_resnet50_fpn_v2",
            "superanimal_quadruped_hrnet_w32", "superanimal_quadruped_ssdlite"} <= set(names)
    with pytest.raises(PretrainedWeightsError, match="has no model 'hrnet_w48'"):
        superanimal_weight_init(f"{DATASET}_hrnet_w48")


def test_superanimal_model_folder_loads_like_any_snapshot(superanimal, tmp_path):
    pose, detector = superanimal
    folder = write_superanimal_model(POSE, tmp_path / "sa", detector=DETECTOR)
    cfg = read_config_as_dict(folder / "pytorch_config.yaml")
    assert cfg["metadata"]["bodyparts"] == SUPERANIMAL_BODYPARTS[DATASET]
    model = build_model_from_snapshot(cfg, folder / "snapshot-000.pt")
    assert same(model.state_dict(), pose, pose)
    loaded = DETECTORS.build(dict(cfg["detector"]["model"]))
    loaded.load_state_dict(read_snapshot(folder / "snapshot-detector-000.pt")["model"])
    assert same(loaded.state_dict(), detector, detector)
    # an existing folder is replaced only when asked
    with pytest.raises(FileExistsError, match="overwrite"):
        write_superanimal_model(POSE, folder, detector=DETECTOR)


def test_weight_init_transfer_learning_loads_backbone_and_detector(superanimal):
    pose, detector = superanimal
    init = superanimal_weight_init(POSE, detector=DETECTOR)
    assert init["dataset"] == DATASET and init["snapshot_path"].endswith(f"{POSE}.pt")
    cfg = project_model_cfg(["nose", "tail_base"])
    model = build_pose_model_for_training(cfg["model"], weight_init=init)
    state = model.state_dict()
    backbone = [k for k in state if k.startswith("backbone.")]
    assert same(state, pose, backbone)
    # the project's heads start fresh (2 bodyparts; the SuperAnimal head has 27)
    assert state["heads.bodypart.heatmap_head.final_conv.weight"].shape[0] == 2
    det = build_detector_for_training(cfg["detector"]["model"], weight_init=init)
    assert same(det.state_dict(), detector, detector)


def test_weight_init_fine_tuning_maps_the_heads(superanimal):
    pose, _ = superanimal
    conversion = [13, 0]  # project: [tail_base, nose] <- SuperAnimal keypoints 13 and 0
    init = superanimal_weight_init(POSE, with_decoder=True, conversion_array=conversion,
                                   bodyparts=["tail_base", "nose"])
    cfg = superanimal_pytorch_config(DATASET, "hrnet_w32", None)
    cfg["model"]["heads"]["bodypart"]["heatmap_config"]["channels"][-1] = 2
    model = build_pose_model_for_training(cfg["model"], weight_init=init)
    state = model.state_dict()
    key = "heads.bodypart.heatmap_head.deconv_layers.0"
    assert torch.equal(state[f"{key}.weight"], pose[f"{key}.weight"][:, conversion])
    assert torch.equal(state[f"{key}.bias"], pose[f"{key}.bias"][conversion])


def test_weight_init_by_name_and_its_errors(superanimal, weights_cache):
    pose, _ = superanimal
    cfg = project_model_cfg(["a"])
    model = build_pose_model_for_training(cfg["model"], weight_init={"snapshot_path": POSE})
    assert same(model.state_dict(), pose, [k for k in pose if k.startswith("backbone.")])
    with pytest.raises(PretrainedWeightsError, match="unknown keys \\['snapshot'\\]"):
        WeightInit.from_dict({"snapshot": POSE})
    with pytest.raises(PretrainedWeightsError, match="needs a conversion_array"):
        WeightInit.from_dict({"snapshot_path": POSE, "with_decoder": True})
    with pytest.raises(PretrainedWeightsError, match="picks channel 40 of head 'bodypart'"):
        build_pose_model_for_training(cfg["model"], weight_init={
            "snapshot_path": POSE, "with_decoder": True, "conversion_array": [40]})
    # another architecture's snapshot: one line naming what differs
    other = make_pytorch_pose_config({"bodyparts": ["a"], "multianimalproject": False},
                                     "x.yaml", "resnet_50", top_down=True)
    with pytest.raises(PretrainedWeightsError) as err:
        build_pose_model_for_training(other["model"], weight_init={"snapshot_path": POSE})
    assert "\n" not in str(err.value) and "missing keys" in str(err.value)
    # not cached, offline: what to fetch and where
    with pytest.raises(MissingWeightsError) as err:
        superanimal_weight_init(f"{DATASET}_resnet_50")
    assert f"{DATASET}_resnet_50.pt" in str(err.value) and REPO in str(err.value)
    assert str(weights_cache.hub) in str(err.value)
