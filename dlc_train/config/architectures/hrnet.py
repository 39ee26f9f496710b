"""HRNet backbones (DeepLabCut's ``config/backbones/hrnet_w*.yaml``).

The pose head reads the highest-resolution branch only (``interpolate_branches: false``), so the
backbone outputs ``width`` channels at stride 4. HRNet needs inputs padded to a multiple of 32.
"""
from __future__ import annotations

import copy

from dlc_train.config.architectures.heads import register_backbone

WIDTHS = {"hrnet_w18": 18, "hrnet_w32": 32, "hrnet_w48": 48}

AUTO_PADDING = {"pad_width_divisor": 32, "pad_height_divisor": 32}

# HRNet trains with a lower learning rate than DeepLabCut's base config.
HRNET_RUNNER = {
    "optimizer": {"type": "AdamW", "params": {"lr": 0.0001}},
    "scheduler": {"type": "LRListScheduler",
                  "params": {"lr_list": [[1e-05], [1e-06]], "milestones": [160, 190]}},
}


def hrnet_backbone(model_name: str, interpolate_branches: bool = False,
                   freeze_bn_stats: bool = True) -> dict:
    return {"type": "HRNet", "model_name": model_name, "freeze_bn_stats": freeze_bn_stats,
            "freeze_bn_weights": False, "interpolate_branches": interpolate_branches,
            "increased_channel_count": False}


def _template(name: str, width: int):
    def template() -> dict:
        return {"data": {"inference": {"auto_padding": dict(AUTO_PADDING)},
                         "train": {"auto_padding": dict(AUTO_PADDING)}},
                "model": {"backbone": hrnet_backbone(name), "backbone_output_channels": width},
                "runner": copy.deepcopy(HRNET_RUNNER)}
    return template


for _name, _width in WIDTHS.items():
    register_backbone(_name, "hrnet", _template(_name, _width))
