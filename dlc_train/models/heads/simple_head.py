"""Heatmap head: transposed convolutions (bottom-up) or a 1x1 conv (top-down) per output.

State_dict layout as DeepLabCut 3: ``heatmap_head.deconv_layers.0.weight``,
``locref_head.deconv_layers.0.weight``, ``heatmap_head.final_conv.weight``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from dlc_train.models.criterions.base import BaseCriterion
from dlc_train.models.heads.base import HEADS, BaseHead, apply_weight_init
from dlc_train.models.predictors.base import BasePredictor
from dlc_train.models.target_generators.base import BaseGenerator


class DeconvModule(nn.Module):
    """Transposed convs (ReLU between them, none after the last), then an optional conv.

    A kernel-3, stride-2, padding-0 transposed conv maps h to 2h + 1, not 2h; DeepLabCut does
    this and its cell-centre decoding (``i * stride + stride / 2``) assumes it, so it is kept.

    Args:
        channels: [in, out_1, ..., out_n]: one more entry than ``kernel_size`` and ``strides``.
        kernel_size: kernel of each transposed conv.
        strides: stride of each transposed conv.
        final_conv: ``{"out_channels", "kernel_size"}`` for a conv after the transposed convs.
    """

    def __init__(self, channels: list[int], kernel_size: list[int], strides: list[int],
                 final_conv: dict | None = None):
        super().__init__()
        if not len(channels) == len(kernel_size) + 1 == len(strides) + 1:
            raise ValueError(f"DeconvModule needs one more channel entry than kernel sizes and "
                             f"strides, got channels={channels}, kernel_size={kernel_size}, "
                             f"strides={strides}")
        self.stride = math.prod(strides) if strides else 1
        self.deconv_layers: nn.Module = nn.Identity()
        if kernel_size:
            layers: list[nn.Module] = []
            for c_in, c_out, k, s in zip(channels[:-1], channels[1:], kernel_size, strides):
                layers += [nn.ConvTranspose2d(c_in, c_out, kernel_size=k, stride=s), nn.ReLU()]
            self.deconv_layers = nn.Sequential(*layers[:-1])
        self.final_conv: nn.Module = nn.Identity()
        if final_conv:
            k = final_conv["kernel_size"]
            # padding 0, as DeepLabCut: only the 1x1 kernel its configs use keeps the map size.
            self.final_conv = nn.Conv2d(channels[-1], final_conv["out_channels"], kernel_size=k)
        self.out_channels = final_conv["out_channels"] if final_conv else channels[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_conv(self.deconv_layers(x))


@HEADS.register_module
class HeatmapHead(BaseHead):
    """Heatmaps (K channels) and optional location refinement maps (2K: x, y per keypoint).

    Args:
        predictor, target_generator, criterion, aggregator: see BaseHead.
        heatmap_config: DeconvModule arguments for the heatmap branch.
        locref_config: DeconvModule arguments for the locref branch; None for no locref.
        weight_init: a WEIGHT_INITS name ("normal"), or ``{"type": name, **kwargs}``; None keeps
            PyTorch's default init.
    """

    def __init__(self, predictor: BasePredictor, target_generator: BaseGenerator,
                 criterion: BaseCriterion | dict[str, BaseCriterion],
                 aggregator: nn.Module | None = None, heatmap_config: dict | None = None,
                 locref_config: dict | None = None, weight_init: str | dict | None = None):
        if heatmap_config is None:
            raise ValueError("HeatmapHead needs a heatmap_config")
        heatmap_head = DeconvModule(**heatmap_config)
        locref_head = DeconvModule(**locref_config) if locref_config is not None else None
        if locref_head is not None and locref_head.stride != heatmap_head.stride:
            raise ValueError(f"heatmap and locref branches must upsample alike, got strides "
                             f"{heatmap_head.stride} and {locref_head.stride}")
        super().__init__(1.0 / heatmap_head.stride, predictor, target_generator, criterion,
                         aggregator)
        self.heatmap_head = heatmap_head
        self.locref_head = locref_head
        apply_weight_init(self, weight_init)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = {"heatmap": self.heatmap_head(x)}
        if self.locref_head is not None:
            outputs["locref"] = self.locref_head(x)
        return outputs
