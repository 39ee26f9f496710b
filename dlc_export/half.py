"""fp16 variants of any export wrapper: the network in half, pre-processing and decoding fp32.

Decoding in half would put the keypoint coordinates themselves in fp16, whose spacing is 0.5 px
above 512 px and 1 px above 1024 px (measured on the tiny model at 160 px: 0.03 px all-half vs
1e-4 px mixed). The argmax still runs over values computed in half: two cells whose scores tie
in fp16 can pick another peak than fp32, a jump of one heatmap cell, which is why reduced
precision has its own parity gate (``parity.ParityGate.for_precision``). Every fp16 format
(torch artifacts, the fp16 ONNX graph) uses this one rule.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from dlc_export.errors import ExportError


class HalfPrecisionNetwork(nn.Module):
    """A PoseModel's network in half behind the PoseModel interface a wrapper uses.

    fp32 input in, fp32 head outputs out; backbone, neck and heads compute in half, the
    predictors (the decoding, with buffers such as the PAF peak kernel) stay fp32.

    Args:
        model: the fp32 PoseModel, converted in place (pass a copy: see
            :func:`half_precision`).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.half().eval()
        for head in self.model.heads.values():
            head.predictor.float()

    @property
    def heads(self) -> nn.ModuleDict:
        return self.model.heads

    def get_stride(self, head_name: str) -> float:
        return self.model.get_stride(head_name)

    def forward(self, x: torch.Tensor, **kwargs: torch.Tensor
                ) -> dict[str, dict[str, torch.Tensor]]:
        # Keyword inputs (a CTD model's cond_kpts) stay fp32: the condition encoder draws its
        # maps from them in fp32 (crop coordinates in half would be 0.125 px apart at 256 px).
        outputs = self.model(x.half(), **kwargs)
        return {head: {name: t.float() for name, t in out.items()}
                for head, out in outputs.items()}


def _network_holder(wrapper: nn.Module) -> nn.Module | None:
    """The module holding the PoseModel as ``.model``: the wrapper itself (bottom-up) or its
    ``pose`` part (top-down and CTD crops)."""
    for holder in (wrapper, getattr(wrapper, "pose", None)):
        model = getattr(holder, "model", None)
        if isinstance(model, nn.Module) and hasattr(model, "heads"):
            return holder
    return None


def half_precision(wrapper: nn.Module) -> nn.Module:
    """A copy of ``wrapper`` whose network runs in half; the caller's stays fp32."""
    if _network_holder(wrapper) is None:
        raise ExportError(f"fp16 export needs a wrapper holding its PoseModel as .model (or "
                          f".pose.model); {type(wrapper).__name__} does not")
    half = copy.deepcopy(wrapper)
    holder = _network_holder(half)
    holder.model = HalfPrecisionNetwork(holder.model)
    return half.eval()
