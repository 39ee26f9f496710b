"""DLCRNet head: heatmaps, locref and part affinity fields with multi-stage refinement.

DeepLabCut 3's ``DLCRNetHead`` (used with ``DLCRNet`` and with plain ResNet bottom-up multi-animal
models). Layout and state_dict keys:

- ``convt1`` (heatmaps), ``convt2`` (locref), ``convt3`` (PAFs), ``convt4`` (``features_dim``
  features): stride-2 transposed convs with "same" padding (h -> 2h) on the backbone features;
- ``hm_ref_layers.i`` / ``paf_ref_layers.i``: one 3x3 conv per stage on
  [heatmaps, PAFs, features], heatmap stages residual from the second on;
- ``heatmap_head`` / ``paf_head`` (DeconvModule on the last stage's [heatmaps, PAFs, features])
  and ``locref_head`` (DeconvModule on ``convt2``'s output): the final stride-2 deconvs.

With ``num_stages=0`` the three DeconvModules read the backbone features directly; ``convt1..4``
are still built (unused) because DeepLabCut's snapshots hold them.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from dlc_train.models.criterions.base import BaseCriterion
from dlc_train.models.heads.base import HEADS, apply_weight_init
from dlc_train.models.heads.simple_head import DeconvModule, HeatmapHead
from dlc_train.models.predictors.base import BasePredictor
from dlc_train.models.target_generators.base import BaseGenerator


@HEADS.register_module
class DLCRNetHead(HeatmapHead):
    """Outputs ``heatmap`` (B, K, 4h+1, 4w+1), ``locref`` (B, 2K, ...) and ``paf`` (B, 2L, ...)
    for backbone features (B, C, h, w) (with ``num_stages > 0``; 2h+1 without).

    Args:
        predictor, target_generator, criterion, aggregator: see BaseHead.
        heatmap_config, locref_config, paf_config: DeconvModule arguments as DeepLabCut writes
            them (``channels[0]`` = backbone channels); with stages, the heatmap / PAF inputs
            become the refined [heatmaps, PAFs, features] and the locref input ``convt2``'s
            output, as in DeepLabCut.
        num_stages: refinement stages.
        features_dim: channels of ``convt4``'s features fed to every stage.
        weight_init: see HeatmapHead.
    """

    def __init__(self, predictor: BasePredictor, target_generator: BaseGenerator,
                 criterion: BaseCriterion | dict[str, BaseCriterion],
                 aggregator: nn.Module | None = None, heatmap_config: dict | None = None,
                 locref_config: dict | None = None, paf_config: dict | None = None,
                 num_stages: int = 5, features_dim: int = 128,
                 weight_init: str | dict | None = None):
        if heatmap_config is None or locref_config is None or paf_config is None:
            raise ValueError("DLCRNetHead needs heatmap_config, locref_config and paf_config")
        heatmap_config, locref_config, paf_config = (
            copy.deepcopy(c) for c in (heatmap_config, locref_config, paf_config))
        in_channels = heatmap_config["channels"][0]
        num_keypoints = heatmap_config["channels"][-1]
        num_paf = paf_config["channels"][-1]  # 2 per limb already
        num_locref = locref_config["channels"][-1]
        refined_channels = features_dim + num_keypoints + num_paf
        if num_stages > 0:
            heatmap_config["channels"][0] = paf_config["channels"][0] = refined_channels
            locref_config["channels"][0] = num_locref
        super().__init__(predictor, target_generator, criterion, aggregator,
                         heatmap_config=heatmap_config, locref_config=locref_config,
                         weight_init=None)
        self.num_stages = num_stages
        if num_stages > 0:
            self.stride = self.stride / 2  # the convt layers double the resolution once more
        self.paf_head = DeconvModule(**paf_config)
        self.convt1 = _convt_same(in_channels, num_keypoints)
        self.convt2 = _convt_same(in_channels, num_locref)
        self.convt3 = _convt_same(in_channels, num_paf)
        self.convt4 = _convt_same(in_channels, features_dim)
        # padding 1 is DeepLabCut's padding="same" for a 3x3 stride-1 conv (and exports plainly).
        self.hm_ref_layers = nn.ModuleList(
            nn.Conv2d(refined_channels, num_keypoints, 3, padding=1) for _ in range(num_stages))
        self.paf_ref_layers = nn.ModuleList(
            nn.Conv2d(refined_channels, num_paf, 3, padding=1) for _ in range(num_stages))
        # Applied once every layer exists (HeatmapHead would only see its two branches).
        apply_weight_init(self, weight_init)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.num_stages == 0:
            return {"heatmap": self.heatmap_head(x), "locref": self.locref_head(x),
                    "paf": self.paf_head(x)}
        heatmap, paf, features = self.convt1(x), self.convt3(x), self.convt4(x)
        stage_in = torch.cat((heatmap, paf, features), dim=1)
        for i, (hm_layer, paf_layer) in enumerate(zip(self.hm_ref_layers, self.paf_ref_layers)):
            # Heatmaps refine residually from the second stage on (the first replaces convt1's);
            # PAFs are predicted afresh at every stage. This is DeepLabCut's schedule.
            refined = hm_layer(stage_in)
            heatmap = refined + heatmap if i > 0 else refined
            paf = paf_layer(stage_in)
            stage_in = torch.cat((heatmap, paf, features), dim=1)
        return {"heatmap": self.heatmap_head(stage_in),
                "locref": self.locref_head(self.convt2(x)),
                "paf": self.paf_head(stage_in)}


def _convt_same(in_channels: int, out_channels: int) -> nn.ConvTranspose2d:
    """Stride-2 transposed conv mapping h to exactly 2h (TensorFlow's "same" upsampling)."""
    return nn.ConvTranspose2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1,
                              output_padding=1)
