"""ResNet backbones (DeepLabCut's ``config/backbones/resnet_*.yaml``).

DeepLabCut's resnet_50 is timm's resnet50_gn (GroupNorm); resnet_101 uses BatchNorm. resnet_18,
resnet_34, resnet_152 and resnet_tiny are ours: small backbones for CPU training (same heads and
layout), not DeepLabCut net_types.
"""
from __future__ import annotations

from dlc_train.config.architectures.heads import register_backbone

# net_type -> (timm model name, output channels)
RESNETS = {
    "resnet_18": ("resnet18", 512),
    "resnet_34": ("resnet34", 512),
    "resnet_50": ("resnet50_gn", 2048),
    "resnet_101": ("resnet101", 2048),
    "resnet_152": ("resnet152", 2048),
    "resnet_tiny": ("resnet_tiny", 128),
}


def _template(model_name: str, channels: int):
    def template() -> dict:
        return {"model": {"backbone": {"type": "ResNet", "model_name": model_name,
                                       "output_stride": 16, "freeze_bn_stats": False,
                                       "freeze_bn_weights": False},
                          "backbone_output_channels": channels}}
    return template


for _name, (_model_name, _channels) in RESNETS.items():
    register_backbone(_name, "resnet", _template(_model_name, _channels))
