"""Optimizers and LR schedulers from the ``runner`` section of a pytorch_config.yaml."""
from __future__ import annotations

import re
from typing import Any, Iterable

import torch
from torch.optim.lr_scheduler import LRScheduler

_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def to_numbers(value: Any) -> Any:
    """Turns numeric strings into floats, recursively.

    PyYAML reads ``1e-05`` (no dot) as a string; DeepLabCut's configs are full of them.
    """
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        return float(value)
    if isinstance(value, dict):
        return {k: to_numbers(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_numbers(v) for v in value)
    return value


class LRListScheduler(LRScheduler):
    """DeepLabCut's schedule: at epoch ``milestones[i]`` the LRs become ``lr_list[i]``.

    Args:
        milestones: epochs (scheduler steps) at which the LR changes, increasing.
        lr_list: one list of LRs (one per parameter group) per milestone.

    Unlike DeepLabCut's version, which keeps whatever LR the optimizer holds between milestones,
    the LR here is computed from the milestones alone, so a run resumed without optimizer state
    still gets the right LR.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, milestones: list[int],
                 lr_list: list[list[float]], last_epoch: int = -1):
        if len(milestones) != len(lr_list):
            raise ValueError(f"LRListScheduler: {len(milestones)} milestones but "
                             f"{len(lr_list)} lr_list entries")
        self.milestones = [int(m) for m in milestones]
        self.lr_list = [[float(x) for x in (lrs if isinstance(lrs, (list, tuple)) else [lrs])]
                        for lrs in lr_list]
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        passed = [i for i, m in enumerate(self.milestones) if m <= self.last_epoch]
        if not passed:
            return list(self.base_lrs)
        lrs = self.lr_list[passed[-1]]
        n = len(self.optimizer.param_groups)
        # One value for several groups means the same LR for all of them.
        return list(lrs) if len(lrs) == n else [lrs[0]] * n


def build_optimizer(cfg: dict, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """``{"type": "AdamW", "params": {"lr": ...}}`` -> the torch.optim optimizer."""
    cfg = to_numbers(cfg or {"type": "AdamW", "params": {"lr": 5e-4}})
    name = cfg.get("type")
    cls = getattr(torch.optim, str(name), None)
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise ValueError(f"unknown optimizer type {name!r} (use a torch.optim class name, "
                         "e.g. AdamW, SGD, Adam)")
    return cls(params, **(cfg.get("params") or {}))


def build_scheduler(cfg: dict | None, optimizer: torch.optim.Optimizer) -> LRScheduler | None:
    """``{"type": ..., "params": {...}}`` -> scheduler; SequentialLR's sub-schedulers nest."""
    if not cfg:
        return None
    cfg = to_numbers(cfg)
    name = cfg.get("type")
    params = dict(cfg.get("params") or {})
    if name == "LRListScheduler":
        return LRListScheduler(optimizer, **params)
    cls = getattr(torch.optim.lr_scheduler, str(name), None)
    if not (isinstance(cls, type) and issubclass(cls, LRScheduler)):
        raise ValueError(f"unknown scheduler type {name!r} (LRListScheduler or a "
                         "torch.optim.lr_scheduler class name)")
    if name in ("SequentialLR", "ChainedScheduler"):
        params["schedulers"] = [build_scheduler(c, optimizer) for c in params["schedulers"]]
        params["milestones"] = [int(m) for m in params.get("milestones", [])] \
            if name == "SequentialLR" else None
        if params["milestones"] is None:
            params.pop("milestones")
        if name == "ChainedScheduler":
            params["optimizer"] = optimizer
            return cls(**params)
    if name in ("StepLR",):
        params["step_size"] = int(params["step_size"])
    if name == "MultiStepLR":
        params["milestones"] = [int(m) for m in params["milestones"]]
    return cls(optimizer, **params)
