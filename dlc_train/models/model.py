"""PoseModel: backbone -> [neck] -> heads, with DeepLabCut 3's state_dict layout.

Keys are ``backbone.*``, ``neck.*`` and ``heads.<name>.*`` (``heads.bodypart``,
``heads.unique_bodypart``, ``heads.identity``), so a DeepLabCut snapshot loads with strict keys.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from dlc_train.models.backbones.base import BACKBONES, BaseBackbone
from dlc_train.models.heads.base import HEADS, BaseHead
from dlc_train.models.necks.base import NECKS, BaseNeck


class PoseModel(nn.Module):
    """Args:
        cfg: the ``model`` section of a pytorch_config.yaml.
        backbone, heads, neck: built components.
    """

    def __init__(self, cfg: dict, backbone: BaseBackbone, heads: dict[str, BaseHead],
                 neck: BaseNeck | None = None):
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        self.heads = nn.ModuleDict(heads)
        self.neck = neck

    def forward(self, x: torch.Tensor, cond_kpts: torch.Tensor | None = None
                ) -> dict[str, dict[str, torch.Tensor]]:
        """(B, 3, H, W) normalized images -> {head_name: {output_name: tensor}}.

        Args:
            x: normalized images.
            cond_kpts: conditional top-down models only (CondPreNet, HRNetCoAM backbones): the
                (B, K, 3) keypoints a bottom-up model found in each crop, in crop pixels.
        """
        if x.dim() == 3:
            x = x[None]
        # Only conditional backbones take conditions; the others keep their one-input forward.
        features = self.backbone(x) if cond_kpts is None else self.backbone(x, cond_kpts=cond_kpts)
        if self.neck is not None:
            features = self.neck(features)
        return {name: head(features) for name, head in self.heads.items()}

    def get_stride(self, head_name: str) -> float:
        """Input pixels per cell of this head's output maps."""
        return float(self.backbone.stride * self.heads[head_name].stride)

    def get_target(self, outputs: dict[str, dict[str, torch.Tensor]],
                   labels: dict[str, torch.Tensor]) -> dict[str, dict]:
        return {name: head.target_generator(self.get_stride(name), outputs[name], labels)
                for name, head in self.heads.items()}

    def get_loss(self, outputs: dict[str, dict[str, torch.Tensor]],
                 targets: dict[str, dict]) -> dict[str, torch.Tensor]:
        """Returns {"total_loss": sum over heads, "<head>_<output>": loss, ...}."""
        losses: dict[str, torch.Tensor] = {}
        total = 0.0
        for name, head in self.heads.items():
            head_losses = head.get_loss(outputs[name], targets[name])
            total = total + head_losses.pop("total_loss")
            losses.update({f"{name}_{key}": value for key, value in head_losses.items()})
        losses["total_loss"] = total
        return losses

    def get_predictions(self, outputs: dict[str, dict[str, torch.Tensor]]) -> dict[str, dict]:
        return {name: head.predictor(self.get_stride(name), outputs[name])
                for name, head in self.heads.items()}

    @staticmethod
    def build(cfg: dict) -> "PoseModel":
        """Builds the model from the ``model`` section of a pytorch_config.yaml."""
        cfg = copy.deepcopy(cfg)
        backbone = BACKBONES.build(cfg["backbone"])
        neck = NECKS.build(cfg["neck"]) if cfg.get("neck") else None
        heads = {name: HEADS.build(head_cfg) for name, head_cfg in cfg["heads"].items()}
        return PoseModel(cfg, backbone, heads, neck)
