"""Bilinear resize with antialiasing, computed from the tensors' shapes so it exports.

``F.interpolate(x, size, mode="bilinear", antialias=True)`` (torchvision's ``resize``) traces to
``aten::_upsample_bilinear2d_aa``, which has no ONNX operator (and ONNX ``Resize`` has no
antialias that TensorRT imports). The same resize is a product with two weight matrices, one per
axis. Here those matrices are built from the input and output sizes *as tensors* (Range, Floor,
Abs, Clip, ReduceSum, ...: operators TensorRT's parser imports), so an exported graph resizes
correctly at any frame size, not only at the one it was traced with.

``dlc_train.models.modules.coam.resize_antialiased`` does the same with sizes fixed at trace time
(CoAM models run at one input size).
"""
from __future__ import annotations

import torch


def antialias_weights(in_size: torch.Tensor, out_size: torch.Tensor) -> torch.Tensor:
    """(out, in) float32 weights of a 1D antialiased bilinear resize, from 0-dim int64 sizes.

    The rows are PyTorch's (and PIL's) separable antialiased filter: a triangle centred on
    ``scale * (i + 0.5)`` in input pixels (``scale = in / out``), widened by ``scale`` when
    downsampling, normalised to sum to 1. When upsampling it reduces to plain bilinear
    interpolation with half-pixel centres (``align_corners=False``), edges clamped, so one
    formula serves both directions.
    """
    # int64 Range: TensorRT 8.x only accepts a floating-point Range with constant bounds.
    src = torch.arange(in_size, dtype=torch.int64, device=in_size.device).to(torch.float32)
    dst = torch.arange(out_size, dtype=torch.int64, device=in_size.device).to(torch.float32)
    scale = in_size.to(torch.float32) / out_size.to(torch.float32)
    support = torch.clamp(scale, min=1.0)       # the triangle's half-width, input pixels
    center = (scale * (dst + 0.5)).unsqueeze(1)  # (out, 1)
    # PyTorch's kernel only visits taps in [floor(center - support + 0.5), floor(center +
    # support + 0.5)); outside it the triangle is zero in exact arithmetic, but float rounding
    # can leave a ~1e-7 weight there: the window is applied so the weights are the kernel's.
    first = torch.floor(center - support + 0.5)
    stop = torch.floor(center + support + 0.5)
    inside = (src >= first) & (src < stop)
    taps = torch.clamp(1.0 - torch.abs((src - center + 0.5) / support), min=0.0)
    taps = torch.where(inside, taps, torch.zeros_like(taps))
    total = taps.sum(dim=1, keepdim=True)
    # Every row has a positive tap (the one under its centre); the clamp only guards a 0/0.
    return taps / torch.clamp(total, min=1e-12)


def resize_bilinear_antialiased(x: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, size[0], size[1]) as ``F.interpolate(x, size, mode="bilinear",
    align_corners=False, antialias=True)``, computed as ``rows @ x @ cols.T``.

    Args:
        size: (2,) int64 tensor (height, width), e.g. ``torch._shape_as_tensor(y)[-2:]``:
            a tensor, so that a traced graph keeps it dynamic.
    """
    shape = torch._shape_as_tensor(x).to(x.device)
    size = size.to(x.device)
    rows = antialias_weights(shape[-2], size[0]).to(x.dtype)
    cols = antialias_weights(shape[-1], size[1]).to(x.dtype)
    return rows @ x @ cols.transpose(0, 1)
