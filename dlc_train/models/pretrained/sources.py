"""Which published file holds the pretrained weights of each backbone and detector.

- ResNet and HRNet backbones: timm's ImageNet checkpoints on the Hugging Face Hub
  (``timm/<name>.<tag>``). Without a tag, timm's default tag for the architecture is used, which
  is what DeepLabCut gets from ``timm.create_model(name, pretrained=True)``; a tag in the
  config's ``model_name`` (``resnet50.tv_in1k``) picks another checkpoint.
- CSPNeXt backbones: DeepLabCut's own ImageNet checkpoints (``DeepLabCut/DeepLabCut-Backbones``,
  ``<model_name>.pt``).
- Detectors: torchvision's COCO checkpoints (``download.pytorch.org/models``), as DeepLabCut's
  ``weights="COCO_V1"``.
"""
from __future__ import annotations

from dlc_train.models.pretrained.hub import (HF_FILENAMES_TIMM, HubFile,
                                             PretrainedWeightsError, UrlFile)

# timm's default pretrained tag per architecture (the first tag in timm's default_cfgs).
TIMM_DEFAULT_TAGS: dict[str, str] = {
    "resnet18": "a1_in1k",
    "resnet34": "a1_in1k",
    "resnet50": "a1_in1k",
    "resnet101": "a1h_in1k",
    "resnet152": "a1h_in1k",
    "resnet50_gn": "a1h_in1k",
    "hrnet_w18_small": "ms_in1k",
    "hrnet_w18_small_v2": "ms_in1k",
    "hrnet_w18": "ms_aug_in1k",
    "hrnet_w30": "ms_in1k",
    "hrnet_w32": "ms_in1k",
    "hrnet_w40": "ms_in1k",
    "hrnet_w44": "ms_in1k",
    "hrnet_w48": "ms_in1k",
    "hrnet_w64": "ms_in1k",
}

DLC_BACKBONES_REPO = "DeepLabCut/DeepLabCut-Backbones"
CSPNEXT_NAMES = ("cspnext_s", "cspnext_m", "cspnext_x")

TORCHVISION = "https://download.pytorch.org/models/"
DETECTOR_COCO: dict[str, str] = {
    "fasterrcnn_resnet50_fpn_v2": TORCHVISION + "fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth",
    "fasterrcnn_mobilenet_v3_large_fpn":
        TORCHVISION + "fasterrcnn_mobilenet_v3_large_fpn-fb6a3cc7.pth",
    "ssdlite320_mobilenet_v3_large":
        TORCHVISION + "ssdlite320_mobilenet_v3_large_coco-a79551df.pth",
}


def timm_source(model_name: str) -> HubFile:
    """The timm checkpoint of a ResNet / HRNet ``model_name`` (``arch`` or ``arch.tag``)."""
    arch, _, tag = model_name.partition(".")
    if not tag:
        if arch not in TIMM_DEFAULT_TAGS:
            raise PretrainedWeightsError(
                f"no published ImageNet weights for {model_name!r} (known: "
                f"{', '.join(sorted(TIMM_DEFAULT_TAGS))}; or give a timm tag, e.g. "
                f"resnet50.a1_in1k); set pretrained: false to start from random weights")
        tag = TIMM_DEFAULT_TAGS[arch]
    return HubFile(f"timm/{arch}.{tag}", HF_FILENAMES_TIMM)


def cspnext_source(model_name: str) -> HubFile:
    """DeepLabCut's ImageNet checkpoint of a CSPNeXt (``{"state_dict": ...}`` in ``NAME.pt``)."""
    if model_name not in CSPNEXT_NAMES:
        raise PretrainedWeightsError(
            f"no published ImageNet weights for CSPNeXt {model_name!r} (DeepLabCut publishes "
            f"{', '.join(CSPNEXT_NAMES)}); set pretrained: false to start from random weights")
    return HubFile(DLC_BACKBONES_REPO, (f"{model_name}.pt",))


def detector_source(variant: str) -> UrlFile:
    """torchvision's COCO checkpoint of a detector variant."""
    if variant not in DETECTOR_COCO:
        raise PretrainedWeightsError(
            f"no published COCO weights for detector {variant!r} (known: "
            f"{', '.join(DETECTOR_COCO)}); set pretrained: false")
    return UrlFile(DETECTOR_COCO[variant])


def published_weights() -> dict[str, str]:
    """{name: where its file is published} for every backbone and detector, for docs and CLIs."""
    table = {f"{arch}.{tag}": timm_source(arch).describe()
             for arch, tag in TIMM_DEFAULT_TAGS.items()}
    table.update({name: cspnext_source(name).describe() for name in CSPNEXT_NAMES})
    table.update(DETECTOR_COCO)
    return table
