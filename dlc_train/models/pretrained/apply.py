"""Loading published ImageNet / COCO weights into our backbones and detectors.

``pretrained: true`` in a backbone or detector config asks for the published weights when the
model is built **for training**: inside ``with pretrained_weights():`` (which the training
builders in ``pretrained.training`` enter). Built anywhere else (inference, export, snapshot
loading, tests) the flag fetches nothing: the snapshot's weights replace the initial ones
anyway. DeepLabCut makes the same split (its ``PoseModel.build`` overrides the config's
``pretrained`` with the trainer's ``pretrained_backbone``).

Keys are checked strictly: after dropping the classifier parts our feature extractors do not
have (timm's ``fc`` / ``classifier`` / ``final_layer`` ..., torchvision's 91-class box
predictor), every remaining key must match the module's, with the same shape, or one line
names what differs. Only ``num_batches_tracked`` counters may be absent on either side.
"""
from __future__ import annotations

import contextlib
import logging
import re
from contextvars import ContextVar
from typing import Iterator

import torch
from torch import nn

from dlc_train.models.pretrained.hub import PretrainedWeightsError, fetch, read_state_dict
from dlc_train.models.pretrained.sources import cspnext_source, detector_source, timm_source

logger = logging.getLogger(__name__)

_ENABLED: ContextVar[bool] = ContextVar("dlc_train_pretrained_weights", default=False)

# timm classifier parts (ResNet: fc; HRNet: incre/downsamp/final_layer + classifier).
_CLASSIFIER_PREFIXES = ("fc.", "classifier.", "final_layer.", "downsamp_modules.",
                        "incre_modules.", "head.")
_SSD_CLASS_CONV = re.compile(r"head\.classification_head\.module_list\.\d+\.1\.(weight|bias)$")
COCO_CLASSES = 91  # torchvision's COCO label space, background included


@contextlib.contextmanager
def pretrained_weights(enabled: bool = True) -> Iterator[None]:
    """Within the block, ``pretrained: true`` components load their published weights."""
    token = _ENABLED.set(enabled)
    try:
        yield
    finally:
        _ENABLED.reset(token)


def pretrained_weights_enabled() -> bool:
    """Whether models built now load published weights for ``pretrained: true``."""
    return _ENABLED.get()


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], what: str,
                target: str) -> None:
    """Loads ``state`` into ``module`` when every key and shape matches; else one-line error.

    Args:
        what: the weights' origin, named in the error (file, repository).
        target: what they were meant for, named in the error (e.g. "ResNet resnet18").
    """
    expected = module.state_dict()
    optional = lambda key: key.endswith("num_batches_tracked")  # noqa: E731
    missing = [k for k in expected if k not in state and not optional(k)]
    unexpected = [k for k in state if k not in expected and not optional(k)]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
             if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or wrong:
        parts = [f"{what} does not fit {target}"]
        if missing:
            parts.append(f"{len(missing)} missing keys, e.g. {missing[:3]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys, e.g. {unexpected[:3]}")
        if wrong:
            parts.append(f"{len(wrong)} keys of another shape, e.g. {wrong[:2]}")
        raise PretrainedWeightsError("; ".join(parts))
    module.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)


def _drop_classifier(state: dict[str, torch.Tensor], module: nn.Module) -> dict:
    ours = {k.split(".", 1)[0] + "." for k in module.state_dict()}
    return {k: v for k, v in state.items()
            if not (k.startswith(_CLASSIFIER_PREFIXES) and k.split(".", 1)[0] + "." not in ours)}


def load_pretrained_backbone(target: nn.Module, model_name: str, family: str) -> bool:
    """Loads the published ImageNet weights of ``model_name`` into ``target`` (for training).

    Args:
        target: the module with the publisher's key layout (a ResNet's or HRNet's ``model``,
            the CSPNeXt itself).
        model_name: the config's ``model_name`` (``resnet50``, ``hrnet_w32.ms_in1k``,
            ``cspnext_s``).
        family: "timm" (ResNet, HRNet) or "cspnext" (DeepLabCut's backbone checkpoints).

    Returns:
        True when weights were loaded; False outside ``pretrained_weights()``.

    Raises:
        PretrainedWeightsError: no published weights for the name, the file is missing
            (``MissingWeightsError``) or unreadable, or its keys do not fit.
    """
    if not pretrained_weights_enabled():
        logger.debug("%s: pretrained weights are loaded when training starts", model_name)
        return False
    if family == "timm":
        source = timm_source(model_name)
    elif family == "cspnext":
        source = cspnext_source(model_name)
    else:
        raise ValueError(f"unknown pretrained family {family!r}")
    path = fetch(source)
    state = read_state_dict(path, f"ImageNet weights of {model_name}")
    if family == "cspnext" and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # DeepLabCut saves {"state_dict": ...}
    load_strict(target, _drop_classifier(state, target), f"{path.name} from {source.repo_id}",
                model_name)
    logger.info("loaded ImageNet weights for %s from %s", model_name, path)
    return True


def load_pretrained_detector(model: nn.Module, variant: str, imagenet_backbone: bool = False
                             ) -> bool:
    """Loads torchvision's COCO weights into a detector's torchvision-layout ``model``.

    As DeepLabCut: Faster R-CNN keeps its new 2-class box predictor (COCO's 91-class one is
    dropped) and, for ``fasterrcnn_resnet50_fpn_v2``, freezes the stem and ``layer1`` (what
    torchvision's ``trainable_backbone_layers=3`` does for pretrained models); SSDLite keeps the
    COCO classification rows of the background and the first class.

    Args:
        model: the detector's ``model`` (torchvision's module tree).
        variant: "fasterrcnn_resnet50_fpn_v2", "fasterrcnn_mobilenet_v3_large_fpn" or
            "ssdlite320_mobilenet_v3_large".
        imagenet_backbone: SSDLite's ``pretrained_from_imagenet`` (not available here).

    Returns:
        True when weights were loaded; False outside ``pretrained_weights()``.
    """
    if not pretrained_weights_enabled():
        logger.debug("%s: COCO weights are loaded when training starts", variant)
        return False
    if imagenet_backbone:
        raise PretrainedWeightsError(
            "SSDLite pretrained_from_imagenet (an ImageNet MobileNetV3 backbone) is not "
            "supported here; set pretrained_from_imagenet: false to start from COCO weights")
    source = detector_source(variant)
    path = fetch(source)
    state = dict(read_state_dict(path, f"COCO weights of {variant}"))
    if variant.startswith("fasterrcnn"):
        state = {k: v for k, v in state.items() if not k.startswith("roi_heads.box_predictor.")}
        ours = model.state_dict()
        state.update({k: v for k, v in ours.items() if k.startswith("roi_heads.box_predictor.")})
    else:
        for key in [k for k in state if _SSD_CLASS_CONV.search(k)]:
            rows = state[key].shape[0]
            state[key] = state[key][:2 * (rows // COCO_CLASSES)]
    load_strict(model, state, f"{path.name} ({source.url})", variant)
    if variant == "fasterrcnn_resnet50_fpn_v2":
        for name, param in model.backbone.body.named_parameters():
            if not name.startswith(("layer2.", "layer3.", "layer4.")):
                param.requires_grad_(False)
    logger.info("loaded COCO weights for %s from %s", variant, path)
    return True
