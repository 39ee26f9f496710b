"""Reduced-precision variants of any export wrapper: the network in fp16 or bf16,
pre-processing and decoding fp32.

Decoding in reduced precision would put the keypoint coordinates themselves in it: fp16's
spacing is 0.5 px above 512 px and 1 px above 1024 px (measured on the tiny model at 160 px:
0.03 px all-half vs 1e-4 px mixed), bf16's (8 significant bits) 2 px above 256 px. The argmax still
runs over values computed in reduced precision: two cells whose scores tie there can pick another
peak than fp32, a jump of one heatmap cell, which is why each reduced precision has its own parity
gate (``parity.ParityGate.for_precision``). Every reduced-precision format (torch artifacts, the
fp16 ONNX graph) uses this one rule; fp16 is the one ONNX and TensorRT take, bf16 is torch-only.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from dlc_export.errors import ExportError

#: The dtype each reduced precision runs the network in.
REDUCED_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def reduced_dtype(precision: str) -> torch.dtype:
    """The network dtype of ``precision`` ("fp16" or "bf16"); ExportError for anything else."""
    if precision not in REDUCED_DTYPES:
        raise ExportError(f"unknown reduced precision {precision!r}; use one of "
                          f"{', '.join(REDUCED_DTYPES)}")
    return REDUCED_DTYPES[precision]


class ReducedPrecisionNetwork(nn.Module):
    """A PoseModel's network in fp16 or bf16 behind the PoseModel interface a wrapper uses.

    fp32 input in, fp32 head outputs out; backbone, neck and heads compute in ``precision``,
    the predictors (the decoding, with buffers such as the PAF peak kernel) stay fp32.

    Args:
        model: the fp32 PoseModel, converted in place (pass a copy: see
            :func:`reduced_precision`).
        precision: "fp16" (default) or "bf16".
    """

    def __init__(self, model: nn.Module, precision: str = "fp16"):
        super().__init__()
        self.dtype = reduced_dtype(precision)
        self.model = model.to(self.dtype).eval()
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
        outputs = self.model(x.to(self.dtype), **kwargs)
        return {head: {name: t.float() for name, t in out.items()}
                for head, out in outputs.items()}


#: The fp16 network (``HalfPrecisionNetwork(model)``), by the name fp16 callers use.
HalfPrecisionNetwork = ReducedPrecisionNetwork


def _network_holder(wrapper: nn.Module) -> nn.Module | None:
    """The module holding the PoseModel as ``.model``: the wrapper itself (bottom-up) or its
    ``pose`` part (top-down and CTD crops)."""
    for holder in (wrapper, getattr(wrapper, "pose", None)):
        model = getattr(holder, "model", None)
        if isinstance(model, nn.Module) and hasattr(model, "heads"):
            return holder
    return None


def reduced_precision(wrapper: nn.Module, precision: str = "fp16") -> nn.Module:
    """A copy of ``wrapper`` whose network runs in ``precision`` ("fp16" or "bf16"); the
    caller's stays fp32."""
    reduced_dtype(precision)  # an unknown precision fails before the copy
    if _network_holder(wrapper) is None:
        raise ExportError(f"{precision} export needs a wrapper holding its PoseModel as .model "
                          f"(or .pose.model); {type(wrapper).__name__} does not")
    reduced = copy.deepcopy(wrapper)
    holder = _network_holder(reduced)
    holder.model = ReducedPrecisionNetwork(holder.model, precision)
    return reduced.eval()


def half_precision(wrapper: nn.Module) -> nn.Module:
    """A copy of ``wrapper`` whose network runs in fp16; the caller's stays fp32."""
    return reduced_precision(wrapper, "fp16")
