"""Conditional attention modules (CoAM) of BUCTD's HRNet-CoAM, DeepLabCut 3's layout.

A CoAM block sits between two HRNet stages and lets every branch attend to the condition
heatmaps (the bottom-up keypoints, see ``conditions.py``) resized to its resolution:

- channel attention (DANet-style): a (C x C) attention between the channels of the condition
  features and of the image features, followed by ``fc_o``, a Linear over the flattened map.
  That Linear is (h*w x h*w), so a CoAM model only runs at the input size it was built for.
- position attention: the condition pixels are the queries, the image pixels the keys and values.

Module and parameter names (``att_layers.N.position_attention_module.pa.fc_q`` ...) follow
DeepLabCut's so its snapshots load with strict keys. Attention dropout (p=0.1) is kept: it is
part of how DeepLabCut trains these models.
"""
from __future__ import annotations

import functools
import math

import torch
from torch import nn


def _init_linear(module: nn.Module) -> None:
    # DeepLabCut's attention init: N(0, 0.001) Linear weights, zero biases.
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.001)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class ScaledDotProductAttention(nn.Module):
    """Multi-head attention with separate input widths for queries and keys.

    Args:
        dim_q: query features.
        dim_k: key / value features (and the output width).
        d_k, d_v: per-head query/key and value widths.
        heads: number of heads.
        dropout: dropout on the attention weights.
    """

    def __init__(self, dim_q: int, dim_k: int, d_k: int, d_v: int, heads: int = 1,
                 dropout: float = 0.1):
        super().__init__()
        self.fc_q = nn.Linear(dim_q, heads * d_k)
        self.fc_k = nn.Linear(dim_k, heads * d_k)
        self.fc_v = nn.Linear(dim_k, heads * d_v)
        self.fc_o = nn.Linear(heads * d_v, dim_k)
        self.dropout = nn.Dropout(dropout)
        self.d_k, self.d_v, self.heads = d_k, d_v, heads
        _init_linear(self)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor,
                values: torch.Tensor) -> torch.Tensor:
        """(B, nq, dim_q), (B, nk, dim_k), (B, nk, dim_k) -> (B, nq, dim_k)."""
        b, nq, nk = queries.shape[0], queries.shape[1], keys.shape[1]
        q = self.fc_q(queries).view(b, nq, self.heads, self.d_k).transpose(1, 2)
        k = self.fc_k(keys).view(b, nk, self.heads, self.d_k).permute(0, 2, 3, 1)
        v = self.fc_v(values).view(b, nk, self.heads, self.d_v).transpose(1, 2)
        att = self.dropout(torch.softmax(q @ k / math.sqrt(self.d_k), dim=-1))
        out = (att @ v).transpose(1, 2).reshape(b, nq, self.heads * self.d_v)
        return self.fc_o(out)


class SimplifiedScaledDotProductAttention(nn.Module):
    """Attention without input projections: only the output Linear ``fc_o`` (dim x dim).

    Args:
        dim: token width (for CoAM's channel attention: the flattened map, h*w).
        heads: number of heads (dim must divide by it).
        dropout: dropout on the attention weights.
    """

    def __init__(self, dim: int, heads: int = 1, dropout: float = 0.1):
        super().__init__()
        self.dim, self.heads, self.d_k = dim, heads, dim // heads
        self.fc_o = nn.Linear(heads * self.d_k, dim)
        self.dropout = nn.Dropout(dropout)
        _init_linear(self)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor,
                values: torch.Tensor) -> torch.Tensor:
        """(B, nq, dim), (B, nk, dim), (B, nk, dim) -> (B, nq, dim)."""
        b, nq, nk = queries.shape[0], queries.shape[1], keys.shape[1]
        if queries.shape[-1] != self.dim or keys.shape[-1] != self.dim:
            raise ValueError(f"channel attention was built for maps of {self.dim} cells, got "
                             f"{keys.shape[-1]}: CoAM models run only at their img_size")
        q = queries.reshape(b, nq, self.heads, self.d_k).transpose(1, 2)
        k = keys.reshape(b, nk, self.heads, self.d_k).permute(0, 2, 3, 1)
        v = values.reshape(b, nk, self.heads, self.d_k).transpose(1, 2)
        att = self.dropout(torch.softmax(q @ k / math.sqrt(self.d_k), dim=-1))
        out = (att @ v).transpose(1, 2).reshape(b, nq, self.heads * self.d_k)
        return self.fc_o(out)


class PositionAttentionModule(nn.Module):
    """Per-pixel attention: condition pixels query the image pixels (or the image itself).

    Args:
        d_model: image feature channels.
        d_cond: condition channels (None: self-attention over the image features).
        kernel_size: size of the 3x3 convs in front of the attention.
        heads: attention heads.
    """

    def __init__(self, d_model: int, d_cond: int | None, kernel_size: int = 3, heads: int = 1):
        super().__init__()
        pad = (kernel_size - 1) // 2
        self.cnn = nn.Conv2d(d_model, d_model, kernel_size, padding=pad)
        self.self_att = d_cond is None
        dim_q = d_model if self.self_att else d_cond
        # pa before cnn_cond: DeepLabCut's registration (and so state_dict) order.
        self.pa = ScaledDotProductAttention(dim_q, d_model, d_model, d_model, heads)
        if not self.self_att:
            self.cnn_cond = nn.Conv2d(d_cond, d_cond, kernel_size, padding=pad)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, h, w) features [, (B, Cc, h, w) conditions] -> (B, h*w, C)."""
        y = self.cnn(x).flatten(2).transpose(1, 2)                  # (B, h*w, C)
        if self.self_att:
            return self.pa(y, y, y)
        y_cond = self.cnn_cond(cond).flatten(2).transpose(1, 2)    # (B, h*w, Cc)
        return self.pa(y_cond, y, y)


class ChannelAttentionModule(nn.Module):
    """Channel attention: (C x C) attention between condition and image feature channels.

    Args:
        d_model: image feature channels.
        d_cond: condition channels (None: self-attention).
        spatial_size: h*w of the maps this module runs on (the size of ``pa.fc_o``).
        kernel_size: size of the convs in front of the attention.
        heads: attention heads.
    """

    def __init__(self, d_model: int, d_cond: int | None, spatial_size: int,
                 kernel_size: int = 3, heads: int = 1):
        super().__init__()
        pad = (kernel_size - 1) // 2
        self.cnn = nn.Conv2d(d_model, d_model, kernel_size, padding=pad)
        self.self_att = d_cond is None
        if not self.self_att:
            self.cnn_cond = nn.Conv2d(d_cond, d_model, kernel_size, padding=pad)
        self.pa = SimplifiedScaledDotProductAttention(spatial_size, heads)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, h, w) features [, (B, Cc, h, w) conditions] -> (B, C, h*w)."""
        y = self.cnn(x).flatten(2)                                   # (B, C, h*w)
        if self.self_att:
            return self.pa(y, y, y)
        return self.pa(self.cnn_cond(cond).flatten(2), y, y)


class DAModule(nn.Module):
    """Dual (channel + position) conditional attention on one branch, with a residual.

    Args:
        d_model: the branch's channels.
        d_cond: condition channels.
        spatial_size: h*w of the branch at the model's img_size.
        kernel_size: conv size in both attentions.
        heads: attention heads.
        channel_only: only channel attention, applied as a gate (``x * attention``) as
            DeepLabCut does, instead of ``x + channel + position``.
    """

    def __init__(self, d_model: int, d_cond: int, spatial_size: int, kernel_size: int = 3,
                 heads: int = 1, channel_only: bool = False):
        super().__init__()
        self.channel_only = channel_only
        if not channel_only:
            self.position_attention_module = PositionAttentionModule(d_model, d_cond,
                                                                     kernel_size, heads)
        self.channel_attention_module = ChannelAttentionModule(d_model, d_cond, spatial_size,
                                                               kernel_size, heads)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        c_out = self.channel_attention_module(x, cond).reshape(b, c, h, w)
        if self.channel_only:
            return x * c_out
        p_out = self.position_attention_module(x, cond).transpose(1, 2).reshape(b, c, h, w)
        return x + (p_out + c_out)


class SelfDAModule(nn.Module):
    """Unconditional dual attention (DeepLabCut's ``SelfDAModule``); no residual, as there.

    Args:
        d_model: the branch's channels.
        spatial_size: h*w of the branch at the model's img_size.
        kernel_size: conv size in both attentions.
    """

    def __init__(self, d_model: int, spatial_size: int, kernel_size: int = 3):
        super().__init__()
        self.position_attention_module = PositionAttentionModule(d_model, None, kernel_size)
        self.channel_attention_module = ChannelAttentionModule(d_model, None, spatial_size,
                                                               kernel_size)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        p_out = self.position_attention_module(x).transpose(1, 2).reshape(b, c, h, w)
        return p_out + self.channel_attention_module(x).reshape(b, c, h, w)


@functools.lru_cache(maxsize=64)
def antialias_resize_matrix(in_size: int, out_size: int) -> torch.Tensor:
    """(out, in) weights of a 1D bilinear resize with antialiasing (PIL's triangle filter,
    widened by the scale when downsampling), as torchvision's ``resize`` / ``F.interpolate(...,
    mode="bilinear", antialias=True)`` compute it.

    Resizing with two such matrices (rows, then columns) exports to ONNX as MatMuls, where the
    antialiased interpolation op has no TorchScript-exporter mapping.
    """
    scale = in_size / out_size
    support = max(scale, 1.0)   # the triangle's half-width in input pixels
    inv = 1.0 / support
    # Cached and shared: callers must not modify the returned tensor in place.
    weights = torch.zeros(out_size, in_size, dtype=torch.float64)
    for i in range(out_size):
        center = scale * (i + 0.5)
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        taps = torch.tensor([max(0.0, 1.0 - abs((j - center + 0.5) * inv))
                             for j in range(lo, hi)], dtype=torch.float64)
        if taps.sum() > 0:
            weights[i, lo:hi] = taps / taps.sum()
    return weights


def resize_antialiased(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, size[0], size[1]), bilinear with antialiasing, as two matmuls."""
    # int(): under ONNX tracing sizes are tensors; CoAM sizes are fixed, so make them constants
    # (and cache keys) rather than tracing the weight computation.
    rows = antialias_resize_matrix(int(x.shape[-2]), int(size[0])).to(x)
    cols = antialias_resize_matrix(int(x.shape[-1]), int(size[1])).to(x)
    return rows @ x @ cols.T


class CoAMBlock(nn.Module):
    """One (Self)DAModule per HRNet branch; conditions are resized to each branch's map.

    Args:
        spat_dims: per branch, DeepLabCut's ``(img_h / s, img_w / s)`` pair.
        channel_list: per branch, its channels.
        d_cond: condition channels; None builds the unconditional (self-attention) variant.
        heads: attention heads.
        channel_only: see DAModule.
    """

    def __init__(self, spat_dims: list[tuple[int, int]], channel_list: list[int] | tuple[int, ...],
                 d_cond: int | None, heads: int = 1, channel_only: bool = False):
        super().__init__()
        self.spat_dims = [tuple(int(v) for v in d) for d in spat_dims]
        if d_cond is None:
            layers = [SelfDAModule(c, d[0] * d[1]) for c, d in zip(channel_list, self.spat_dims)]
        else:
            layers = [DAModule(c, d_cond, d[0] * d[1], heads=heads, channel_only=channel_only)
                      for c, d in zip(channel_list, self.spat_dims)]
        self.att_layers = nn.ModuleList(layers)

    def forward(self, xs: list[torch.Tensor], cond: torch.Tensor | None) -> list[torch.Tensor]:
        out = list(xs)
        for i, layer in enumerate(self.att_layers):
            cond_i = None
            if cond is not None:
                # DeepLabCut resizes to (spat[1], spat[0]) = (w/s, h/s) with torchvision's
                # resize (bilinear, antialiased by default since torchvision 0.17); the swap only
                # matters for non-square inputs, and is kept so that DeepLabCut-trained
                # non-square models see the same maps.
                dims = self.spat_dims[i]
                cond_i = resize_antialiased(cond, (dims[1], dims[0]))
            out[i] = layer(xs[i], cond_i)
        return out
