"""Building pose models and detectors to train, with the weights they start from.

What a run starts from, as DeepLabCut decides it:

- resuming a run: nothing (the snapshot replaces every weight);
- ``train_settings.weight_init``: the weight_init's snapshots (backbone, + heads with
  ``with_decoder``; the detector snapshot), no ImageNet / COCO weights;
- otherwise: ImageNet (backbones) / COCO (detectors) weights for components whose config says
  ``pretrained: true``. ``pretrained_default`` fills the key where a config has none:
  DeepLabCut's trainer behaves as True, our configs say it explicitly.
"""
from __future__ import annotations

import copy
import logging

from torch import nn

from dlc_train.models.pretrained.apply import pretrained_weights
from dlc_train.models.pretrained.weight_init import (WeightInit, apply_detector_weight_init,
                                                     apply_pose_weight_init)


logger = logging.getLogger(__name__)


def _weight_init(value: WeightInit | dict | None) -> WeightInit | None:
    if value is None or isinstance(value, WeightInit):
        return value
    return WeightInit.from_dict(value)


def build_pose_model_for_training(model_cfg: dict, weight_init: WeightInit | dict | None = None,
                                  resume: bool = False,
                                  pretrained_default: bool | None = None) -> nn.Module:
    """Builds the PoseModel of a config's ``model`` section and gives it its starting weights.

    Args:
        model_cfg: the pytorch_config's ``model`` section (not modified).
        weight_init: ``train_settings.weight_init`` (a mapping or WeightInit), or None.
        resume: the run continues from a snapshot: no pretrained weights are fetched.
        pretrained_default: ``backbone.pretrained`` where the config has no such key
            (None: the backbone class's own default).

    Raises:
        PretrainedWeightsError: weights missing (one line: what to fetch, where to put it),
            unreadable, or not fitting the model.
    """
    from dlc_train.models.model import PoseModel

    init = _weight_init(weight_init)
    cfg = copy.deepcopy(model_cfg)
    if pretrained_default is not None:
        cfg["backbone"].setdefault("pretrained", pretrained_default)
    with pretrained_weights(enabled=not resume and init is None):
        model = PoseModel.build(cfg)
    if init is not None and not resume:
        apply_pose_weight_init(model, init)
    if not resume and init is None:
        _warn_frozen_statistics_from_scratch(model.backbone, cfg["backbone"])
    return model


def _warn_frozen_statistics_from_scratch(backbone: nn.Module, backbone_cfg: dict) -> None:
    """One warning for BatchNorm statistics frozen at their initial values (mean 0, variance 1):
    DeepLabCut's configs freeze them for ImageNet-initialized backbones; from random weights
    the activations then grow through every layer (an HRNet's heatmap loss starts above 1e11)."""
    if not getattr(backbone, "freeze_bn_stats", False) or not any(
            isinstance(m, nn.modules.batchnorm._BatchNorm) for m in backbone.modules()):
        return
    # pretrained_default is applied already; every backbone class defaults to random weights.
    pretrained = bool(backbone_cfg.get("pretrained", False))
    if not pretrained:
        logger.warning("model.backbone.freeze_bn_stats is true but the backbone starts from "
                       "random weights: BatchNorm keeps its initial statistics and activations "
                       "grow without bound; train with --set model.backbone.freeze_bn_stats="
                       "false (or start from pretrained weights)")


def build_detector_for_training(detector_model_cfg: dict,
                                weight_init: WeightInit | dict | None = None,
                                resume: bool = False,
                                pretrained_default: bool | None = None) -> nn.Module:
    """Builds a detector from a config's ``detector.model`` section with its starting weights.

    Args: as ``build_pose_model_for_training`` (``pretrained`` of the detector section).
    """
    from dlc_train.models.detectors import DETECTORS

    init = _weight_init(weight_init)
    if init is not None and not init.detector_snapshot_path:
        init = None  # a pose-only weight_init: the detector starts as configured
    cfg = dict(copy.deepcopy(detector_model_cfg))
    if pretrained_default is not None:
        cfg.setdefault("pretrained", pretrained_default)
    with pretrained_weights(enabled=not resume and init is None):
        detector = DETECTORS.build(cfg)
    if init is not None and not resume:
        apply_detector_weight_init(detector, init)
    return detector
