"""Head base class, registry and builder.

A head owns the three things that give its outputs meaning: the predictor (outputs -> keypoints),
the target generator (labels -> training targets) and the criterion (outputs vs targets -> loss).
None of them has parameters, so the state_dict holds only the head's layers, exactly as in
DeepLabCut 3.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

from dlc_train.models.criterions.base import CRITERIONS, LOSS_AGGREGATORS, BaseCriterion
from dlc_train.models.predictors.base import PREDICTORS, BasePredictor
from dlc_train.models.target_generators.base import TARGET_GENERATORS, BaseGenerator
from dlc_train.registry import Registry, build_from_cfg


def _build_head(cfg: dict, registry: Registry, **default_args):
    """Builds a head whose predictor / target generator / criterion are config dicts.

    ``criterion`` is either one criterion config (with ``type``) or a mapping from output name to
    criterion config with an optional ``weight``, which becomes a WeightedLossAggregator.
    """
    cfg["predictor"] = PREDICTORS.build(cfg["predictor"])
    cfg["target_generator"] = TARGET_GENERATORS.build(cfg["target_generator"])
    criterion_cfg = cfg["criterion"]
    if "type" in criterion_cfg:
        cfg["criterion"] = CRITERIONS.build(criterion_cfg)
    else:
        weights, criterions = {}, {}
        for output_name, one in criterion_cfg.items():
            one = dict(one)
            weights[output_name] = float(one.pop("weight", 1.0))
            criterions[output_name] = CRITERIONS.build(one)
        cfg["criterion"] = criterions
        cfg["aggregator"] = LOSS_AGGREGATORS.build({"type": "WeightedLossAggregator",
                                                    "weights": weights})
    return build_from_cfg(cfg, registry, **default_args)


HEADS = Registry("head", build_func=_build_head)


class BaseHead(ABC, nn.Module):
    """Args:
        stride: factor from the backbone's feature stride to the stride of this head's outputs
            (0.5 for one stride-2 deconvolution; 1 for a 1x1 conv).
        predictor, target_generator: built components.
        criterion: one criterion, or {output_name: criterion} summed by ``aggregator``.
    """

    def __init__(self, stride: float, predictor: BasePredictor, target_generator: BaseGenerator,
                 criterion: BaseCriterion | dict[str, BaseCriterion],
                 aggregator: nn.Module | None = None):
        super().__init__()
        self.stride = stride
        # Parameter-free helpers: kept out of the state_dict's key space by construction.
        self.predictor = predictor
        self.target_generator = target_generator
        self.criterion = criterion
        self.aggregator = aggregator

    @abstractmethod
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        ...

    def get_loss(self, outputs: dict[str, torch.Tensor],
                 targets: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Returns {"total_loss": ..., output_name: loss, ...}."""
        if isinstance(self.criterion, dict):
            losses = {name: crit(outputs[name], targets[name]["target"], targets[name]["weights"])
                      for name, crit in self.criterion.items()}
            losses["total_loss"] = self.aggregator(losses)
            return losses
        (name, target), = targets.items()
        loss = self.criterion(outputs[name], target["target"], target["weights"])
        return {"total_loss": loss, name: loss}


WEIGHT_INITS = Registry("weight init")


@WEIGHT_INITS.register_module(name="normal")
def init_normal(module: nn.Module, std: float = 0.001) -> None:
    """DeepLabCut's head init: conv weights ~ N(0, std), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


@WEIGHT_INITS.register_module(name="dekr")
def init_dekr(module: nn.Module) -> None:
    init_normal(module, std=0.001)


def apply_weight_init(module: nn.Module, weight_init: str | dict | None) -> None:
    """Applies a registered init: a name ("normal"), or ``{type: name, **its arguments}``."""
    if isinstance(weight_init, dict):
        args = dict(weight_init)
        WEIGHT_INITS.get(args.pop("type"))(module, **args)
    elif weight_init:
        WEIGHT_INITS.get(weight_init)(module)
