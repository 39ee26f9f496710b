"""Neck base class and registry (optional blocks between backbone and heads)."""
from __future__ import annotations

from torch import nn

from dlc_train.registry import Registry

NECKS = Registry("neck")


class BaseNeck(nn.Module):
    """Transforms backbone features before the heads see them."""
