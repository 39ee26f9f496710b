"""Published ImageNet / COCO weights load into our backbones and detectors, from a local cache
laid out as ``hf_hub_download`` and ``torch.hub`` lay theirs, offline (``HF_HUB_OFFLINE=1``).

The cached files are written from our own randomly initialised modules with the publishers' key
layouts (timm checkpoints keep their classifier; torchvision's COCO detectors have 91 classes),
so a model built with ``pretrained: true`` for training must hold exactly those tensors.
"""
from __future__ import annotations

import copy
import re

import pytest
import torch

import dlc_train.models  # noqa: F401  (registers every component)
from dlc_train.config import make_pytorch_pose_config
from dlc_train.models import PoseModel
from dlc_train.models.backbones import CSPNeXt, HRNet, ResNet
from dlc_train.models.detectors import FasterRCNN, SSDLite
from dlc_train.models.pretrained import (MissingWeightsError, PretrainedWeightsError,
                                         build_detector_for_training,
                                         build_pose_model_for_training, detector_source,
                                         pretrained_weights, timm_source)
from helpers.weights_cache import randomized, weights_cache  # noqa: F401  (fixture)

SSD_URL = detector_source("ssdlite320_mobilenet_v3_large").url
FRCNN_URL = detector_source("fasterrcnn_mobilenet_v3_large_fpn").url


def assert_same(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    ours = module.state_dict()
    keys = [k for k in ours if not k.endswith("num_batches_tracked")]
    assert keys and all(k in state for k in keys)
    for key in keys:
        torch.testing.assert_close(ours[key], state[key].to(ours[key].dtype), rtol=0, atol=0,
                                   msg=key)


def test_timm_names_follow_timm_default_tags():
    assert timm_source("resnet50").repo_id == "timm/resnet50.a1_in1k"
    assert timm_source("resnet50_gn").repo_id == "timm/resnet50_gn.a1h_in1k"
    assert timm_source("hrnet_w18").repo_id == "timm/hrnet_w18.ms_aug_in1k"
    assert timm_source("hrnet_w32").repo_id == "timm/hrnet_w32.ms_in1k"
    assert timm_source("resnet50.tv_in1k").repo_id == "timm/resnet50.tv_in1k"
    with pytest.raises(PretrainedWeightsError, match="resnet_tiny"):
        timm_source("resnet_tiny")


def test_resnet_loads_timm_safetensors(weights_cache):
    state = randomized(ResNet("resnet18").model.state_dict(), seed=1)
    timm_file = {**state, "fc.weight": torch.randn(1000, 512), "fc.bias": torch.randn(1000)}
    weights_cache.put_hub("timm/resnet18.a1_in1k", "model.safetensors", timm_file)
    with pretrained_weights():
        backbone = ResNet("resnet18", pretrained=True)
    assert_same(backbone.model, state)
    # built for anything but training, pretrained: true fetches nothing
    assert not torch.equal(ResNet("resnet18", pretrained=True).model.conv1.weight,
                           state["conv1.weight"])


def test_hrnet_loads_timm_bin_and_drops_the_classifier(weights_cache):
    reference = HRNet("hrnet_w18_small", increased_channel_count=True)
    state = randomized(reference.model.state_dict(), seed=2)
    classifier = {"classifier.weight": torch.randn(1000, 2048), "final_layer.0.weight":
                  torch.randn(2048, 1024, 1, 1), "downsamp_modules.0.0.weight":
                  torch.randn(256, 128, 3, 3)}
    # only pytorch_model.bin in this repository: the second file name timm publishes
    weights_cache.put_hub("timm/hrnet_w18_small.ms_in1k", "pytorch_model.bin",
                          {**state, **classifier})
    with pretrained_weights():
        with_incre = HRNet("hrnet_w18_small", pretrained=True, increased_channel_count=True)
        plain = HRNet("hrnet_w18_small", pretrained=True)
    assert_same(with_incre.model, state)
    assert_same(plain.model, {k: v for k, v in state.items()
                              if not k.startswith("incre_modules.")})


def test_cspnext_loads_deeplabcut_backbone_checkpoint(weights_cache):
    kwargs = dict(deepen_factor=0.33, widen_factor=0.5)
    state = randomized(CSPNeXt("cspnext_s", **kwargs).state_dict(), seed=3)
    weights_cache.put_hub("DeepLabCut/DeepLabCut-Backbones", "cspnext_s.pt",
                          {"state_dict": state})
    with pretrained_weights():
        backbone = CSPNeXt("cspnext_s", pretrained=True, **kwargs)
    assert_same(backbone, state)


def test_ssdlite_loads_coco_keeping_two_classes(weights_cache):
    ours = SSDLite().model.state_dict()
    coco = randomized(ours, seed=4)
    for key, value in ours.items():  # COCO's head: 91 classes per anchor, not 2
        if re.fullmatch(r"head\.classification_head\.module_list\.\d+\.1\.(weight|bias)", key):
            anchors = value.shape[0] // 2
            coco[key] = torch.randn(anchors * 91, *value.shape[1:])
    weights_cache.put_url(SSD_URL, coco)
    with pretrained_weights():
        detector = SSDLite(pretrained=True)
    expected = {k: (v[:ours[k].shape[0]] if v.shape != ours[k].shape else v)
                for k, v in coco.items()}
    assert_same(detector.model, expected)


def test_fasterrcnn_keeps_its_new_box_predictor(weights_cache):
    torch.manual_seed(0)
    fresh = FasterRCNN().model.state_dict()
    coco = {k: v for k, v in randomized(fresh, seed=5).items()
            if not k.startswith("roi_heads.box_predictor.")}
    coco.update({"roi_heads.box_predictor.cls_score.weight": torch.randn(91, 1024),
                 "roi_heads.box_predictor.cls_score.bias": torch.randn(91),
                 "roi_heads.box_predictor.bbox_pred.weight": torch.randn(364, 1024),
                 "roi_heads.box_predictor.bbox_pred.bias": torch.randn(364)})
    weights_cache.put_url(FRCNN_URL, coco)
    detector = build_detector_for_training({"type": "FasterRCNN", "pretrained": True})
    state = detector.model.state_dict()
    assert_same(detector.model, {**coco, **{k: state[k] for k in state
                                            if k.startswith("roi_heads.box_predictor.")}})
    assert state["roi_heads.box_predictor.cls_score.weight"].shape == (2, 1024)


def test_missing_file_offline_is_one_line_naming_file_source_and_folder(weights_cache):
    with pretrained_weights(), pytest.raises(MissingWeightsError) as err:
        ResNet("resnet18", pretrained=True)
    message = str(err.value)
    assert "\n" not in message
    assert "timm/resnet18.a1_in1k" in message and "model.safetensors" in message
    assert str(weights_cache.hub / "models--timm--resnet18.a1_in1k") in message
    with pretrained_weights(), pytest.raises(MissingWeightsError) as err:
        SSDLite(pretrained=True)
    message = str(err.value)
    assert "\n" not in message and SSD_URL in message
    assert str(weights_cache.checkpoints / SSD_URL.rsplit("/", 1)[-1]) in message


def test_key_mismatch_is_one_line_naming_the_keys(weights_cache):
    state = randomized(ResNet("resnet18").model.state_dict(), seed=6)
    state.pop("layer4.1.bn2.weight")
    state["layer5.0.conv1.weight"] = torch.zeros(1)
    state["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    weights_cache.put_hub("timm/resnet18.a1_in1k", "model.safetensors", state)
    with pretrained_weights(), pytest.raises(PretrainedWeightsError) as err:
        ResNet("resnet18", pretrained=True)
    message = str(err.value)
    assert "\n" not in message and "does not fit resnet18" in message
    assert "1 missing keys" in message and "layer4.1.bn2.weight" in message
    assert "1 unexpected keys" in message and "layer5.0.conv1.weight" in message
    assert "conv1.weight (64, 3, 3, 3) vs (64, 3, 7, 7)" in message


def test_corrupt_cached_file_is_one_line(weights_cache):
    path = weights_cache.hub_path("timm/resnet18.a1_in1k", "pytorch_model.bin")
    path.write_bytes(b"not a checkpoint")
    with pretrained_weights(), pytest.raises(PretrainedWeightsError) as err:
        ResNet("resnet18", pretrained=True)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_pose_model_for_training_follows_the_config(weights_cache):
    project = {"bodyparts": ["a", "b", "c"], "multianimalproject": False}
    cfg = make_pytorch_pose_config(project, "pytorch_config.yaml", "cspnext_s")
    kwargs = {k: cfg["model"]["backbone"][k] for k in ("deepen_factor", "widen_factor")}
    state = randomized(CSPNeXt("cspnext_s", **kwargs).state_dict(), seed=7)
    weights_cache.put_hub("DeepLabCut/DeepLabCut-Backbones", "cspnext_s.pt",
                          {"state_dict": state})
    model_cfg = copy.deepcopy(cfg["model"])
    model_cfg["backbone"]["pretrained"] = True
    assert_same(build_pose_model_for_training(model_cfg).backbone, state)
    # the config is left as it was; a resumed run and a plain build fetch nothing
    assert model_cfg["backbone"]["pretrained"] is True
    for model in (build_pose_model_for_training(model_cfg, resume=True),
                  PoseModel.build(model_cfg)):
        assert not torch.equal(model.backbone.stem[0].conv.weight, state["stem.0.conv.weight"])
    # pretrained_default applies where the config has no key, never over an explicit false
    model_cfg["backbone"].pop("pretrained")
    assert_same(build_pose_model_for_training(model_cfg, pretrained_default=True).backbone,
                state)
    model_cfg["backbone"]["pretrained"] = False
    model = build_pose_model_for_training(model_cfg, pretrained_default=True)
    assert not torch.equal(model.backbone.stem[0].conv.weight, state["stem.0.conv.weight"])


def test_prefetch_command_prints_cached_paths_or_one_error_line(weights_cache, capsys):
    from dlc_train.models.pretrained.__main__ import main

    path = weights_cache.put_url(SSD_URL, {"w": torch.zeros(1)})
    assert main(["fetch", "ssdlite320_mobilenet_v3_large"]) == 0
    assert capsys.readouterr().out.strip() == f"ssdlite320_mobilenet_v3_large\t{path}"
    assert main(["fetch", "hrnet_w32"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("Error: ") and "\n" not in err and "timm/hrnet_w32.ms_in1k" in err


def test_frozen_batchnorm_statistics_from_random_weights_are_warned(caplog):
    """DeepLabCut's HRNet configs freeze BatchNorm statistics (right for ImageNet weights); from
    random weights the frozen statistics let activations explode: one warning says so."""
    import logging

    project = {"bodyparts": ["a", "b", "c"], "multianimalproject": False}
    cfg = make_pytorch_pose_config(project, "pytorch_config.yaml", "hrnet_w18")
    model_cfg = copy.deepcopy(cfg["model"])
    model_cfg["backbone"].update(pretrained=False, freeze_bn_stats=True)
    logger = "dlc_train.models.pretrained.training"
    with caplog.at_level(logging.WARNING, logger=logger):
        model = build_pose_model_for_training(model_cfg)
    said = [r.getMessage() for r in caplog.records if r.name == logger]
    assert len(said) == 1 and "model.backbone.freeze_bn_stats=false" in said[0]
    # What it warns about: the features of one image grow far beyond normalized values.
    with torch.no_grad():
        assert model.train().backbone(torch.rand(1, 3, 64, 64) * 255).abs().max() > 1e4
    caplog.clear()
    for change, resume in (({"freeze_bn_stats": False}, False), ({}, True)):
        with caplog.at_level(logging.WARNING, logger=logger):
            build_pose_model_for_training(
                dict(model_cfg, backbone=dict(model_cfg["backbone"], **change)), resume=resume)
        assert not [r for r in caplog.records if r.name == logger]
