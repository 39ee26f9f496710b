"""CSPNeXt backbones (DeepLabCut's ``config/backbones/cspnext_*.yaml``), RTMPose's backbone."""
from __future__ import annotations

from dlc_train.config.architectures.heads import register_backbone

# net_type -> (deepen_factor, widen_factor, output channels = 1024 * widen_factor)
CSPNEXTS = {
    "cspnext_s": (0.33, 0.5, 512),
    "cspnext_m": (0.67, 0.75, 768),
    "cspnext_x": (1.33, 1.25, 1280),
}


def cspnext_backbone(name: str) -> dict:
    deepen, widen, _ = CSPNEXTS[name]
    return {"type": "CSPNeXt", "model_name": name, "freeze_bn_stats": False,
            "freeze_bn_weights": False, "deepen_factor": deepen, "widen_factor": widen}


def _template(name: str):
    def template() -> dict:
        return {"model": {"backbone": cspnext_backbone(name),
                          "backbone_output_channels": CSPNEXTS[name][2]}}
    return template


for _name in CSPNEXTS:
    register_backbone(_name, "cspnext", _template(_name))
