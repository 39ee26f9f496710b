"""RTMPose's coordinate-classification head (RTMCC): SimCC with a gated attention unit.

State_dict layout as DeepLabCut 3 (which follows mmpose): ``final_layer.*``, ``mlp.0.g``,
``mlp.1.weight``, ``gau.{uv,o}.weight``, ``gau.{gamma,beta}``, ``gau.ln.g``,
``gau.res_scale.scale``, ``cls_x.weight``, ``cls_y.weight``.

The head flattens its feature map into a fixed-size Linear layer, so it is built for one input
size (``input_size`` / ``in_featuremap_size``); ``RTMCCHead.update_input_size`` rewrites a
config for another size, as DeepLabCut's does.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dlc_train.models.criterions.base import BaseCriterion
from dlc_train.models.heads.base import apply_weight_init, HEADS, WEIGHT_INITS, BaseHead
from dlc_train.models.layers import DropPath
from dlc_train.models.predictors.base import BasePredictor
from dlc_train.models.target_generators.base import BaseGenerator


class ScaleNorm(nn.Module):
    """ScaleNorm (Nguyen & Salazar 2019): x / ||x|| * sqrt(dim) * g, one learned scalar g.

    Args:
        dim: size of the last axis (normalized over).
        eps: lower clamp of the scaled norm.
    """

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.scale = dim ** -0.5
        self.eps = eps
        self.g = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True) * self.scale
        return x / norm.clamp(min=self.eps) * self.g


class Scale(nn.Module):
    """Learned per-channel scale on the last axis.

    Args:
        dim: channels.
        init_value: initial scale.
    """

    def __init__(self, dim: int, init_value: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(init_value * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def rope(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Rotary position embedding along axis ``dim`` (one spatial axis), with mmpose's (and
    DeepLabCut's) frequencies ``10000 ** (i / half)``, kept for checkpoint parity."""
    length, half = x.shape[dim], x.shape[-1] // 2
    position = torch.arange(length, device=x.device, dtype=x.dtype)
    position = position.reshape([length] + [1] * (x.dim() - dim - 2))
    inv_freq = 10000 ** (torch.arange(half, device=x.device, dtype=x.dtype) / half)
    sinusoid = position[..., None] * inv_freq
    sin, cos = torch.sin(sinusoid), torch.cos(sinusoid)
    x1, x2 = torch.chunk(x, 2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class RTMCCBlock(nn.Module):
    """Gated attention unit (Hua et al. 2022) over keypoint tokens, self-attention only.

    x -> ScaleNorm -> Linear -> act -> split(u, v, base); q, k = base * gamma + beta;
    attention = relu(q k^T / sqrt(s))^2; out = Linear(u * attention v), plus a scaled shortcut.

    Args:
        num_token: tokens (keypoints); sizes the relative position bias.
        in_token_dims, out_token_dims: token widths (a shortcut when equal).
        expansion_factor: e = in_token_dims * expansion_factor (u and v widths).
        s: width of the shared q/k base.
        eps: ScaleNorm epsilon.
        dropout_rate: dropout on the attention kernel.
        drop_path: stochastic depth on the block.
        act_fn: "SiLU" or "ReLU".
        bias: biases in the Linear layers.
        use_rel_bias: learned relative position bias on the attention logits.
        pos_enc: rotary position embedding on q and k.
    """

    def __init__(self, num_token: int, in_token_dims: int, out_token_dims: int,
                 expansion_factor: float = 2, s: int = 128, eps: float = 1e-5,
                 dropout_rate: float = 0.0, drop_path: float = 0.0, act_fn: str = "SiLU",
                 bias: bool = False, use_rel_bias: bool = True, pos_enc: bool = False):
        super().__init__()
        self.s = s
        self.num_token = num_token
        self.use_rel_bias = use_rel_bias
        self.pos_enc = pos_enc
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.e = int(in_token_dims * expansion_factor)
        if use_rel_bias:
            self.w = nn.Parameter(torch.rand(2 * num_token - 1))
        self.o = nn.Linear(self.e, out_token_dims, bias=bias)
        self.uv = nn.Linear(in_token_dims, 2 * self.e + s, bias=bias)
        self.gamma = nn.Parameter(torch.rand(2, s))
        self.beta = nn.Parameter(torch.rand(2, s))
        self.ln = ScaleNorm(in_token_dims, eps=eps)
        nn.init.xavier_uniform_(self.uv.weight)
        if act_fn not in ("SiLU", "ReLU"):
            raise ValueError(f"unknown act_fn {act_fn!r} (known: 'SiLU', 'ReLU')")
        self.act_fn = nn.SiLU() if act_fn == "SiLU" else nn.ReLU()
        self.shortcut = in_token_dims == out_token_dims
        if self.shortcut:
            self.res_scale = Scale(in_token_dims)
        self.sqrt_s = math.sqrt(s)
        self.dropout = nn.Dropout(dropout_rate) if dropout_rate > 0.0 else nn.Identity()

    def rel_pos_bias(self, seq_len: int) -> torch.Tensor:
        """(1, seq_len, seq_len): bias[i, j] = w[j - i + seq_len - 1] (a Toeplitz matrix)."""
        idx = torch.arange(seq_len, device=self.w.device)
        return self.w[idx[None, :] - idx[:, None] + seq_len - 1][None]

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        uv = self.act_fn(self.uv(self.ln(x)))                        # (B, K, 2e + s)
        u, v, base = torch.split(uv, [self.e, self.e, self.s], dim=2)
        base = base.unsqueeze(2) * self.gamma + self.beta            # (B, K, 2, s)
        if self.pos_enc:
            base = rope(base, dim=1)
        q, k = torch.unbind(base, dim=2)
        qk = torch.bmm(q, k.transpose(1, 2))                         # (B, K, K)
        if self.use_rel_bias:
            qk = qk + self.rel_pos_bias(q.size(1))
        kernel = self.dropout(torch.square(F.relu(qk / self.sqrt_s)))
        return self.o(u * torch.bmm(kernel, v))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.drop_path(self._attend(x))
        return self.res_scale(x) + out if self.shortcut else out


GatedAttentionUnit = RTMCCBlock  # DeepLabCut's name for it


@WEIGHT_INITS.register_module(name="RTMPose")
def init_rtmpose(module: nn.Module) -> None:
    """mmpose's RTMCC head init: convs N(0, 0.001), linears N(0, 0.01), biases 0; gamma, beta
    and the ScaleNorm / Scale parameters keep their own init.

    DeepLabCut 3 names this init in its configs but its RTMCCHead never applies it (the head
    keeps PyTorch's default init); we apply it, as mmpose does. Only training from scratch is
    affected, not loading a snapshot.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, std=0.001 if isinstance(m, nn.Conv2d) else 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


@HEADS.register_module
class RTMCCHead(BaseHead):
    """SimCC head: per-keypoint 1-D logits over x bins and y bins.

    final_layer (k x k conv, K channels) -> flatten (B, K, h*w) -> ScaleNorm + Linear -> GAU ->
    cls_x (W * ratio bins), cls_y (H * ratio bins).

    Args:
        input_size: model input (width, height) in pixels.
        in_channels: backbone channels.
        out_channels: keypoints (K).
        in_featuremap_size: backbone feature map size (h, w); only h * w matters.
        simcc_split_ratio: bins per input pixel.
        final_layer_kernel_size: kernel of the conv that makes the K keypoint maps.
        gau_cfg: hidden_dims, s, expansion_factor, dropout_rate, drop_path, act_fn,
            use_rel_bias, pos_enc.
        predictor, target_generator, criterion, aggregator: see BaseHead (criterion: one per
            output, "x" and "y").
        weight_init: a WEIGHT_INITS name ("RTMPose") or None.
    """

    def __init__(self, input_size: tuple[int, int], in_channels: int, out_channels: int,
                 in_featuremap_size: tuple[int, int], simcc_split_ratio: float,
                 final_layer_kernel_size: int, gau_cfg: dict, predictor: BasePredictor,
                 target_generator: BaseGenerator,
                 criterion: BaseCriterion | dict[str, BaseCriterion],
                 aggregator: nn.Module | None = None, weight_init: str | dict | None = None):
        # Stride 1 as DeepLabCut: SimCC bins map to input pixels through simcc_split_ratio,
        # so the predictor and target generator ignore the stride they are given.
        super().__init__(1.0, predictor, target_generator, criterion, aggregator)
        self.input_size = tuple(input_size)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.in_featuremap_size = tuple(in_featuremap_size)
        self.simcc_split_ratio = simcc_split_ratio
        flatten_dims = self.in_featuremap_size[0] * self.in_featuremap_size[1]
        hidden = gau_cfg["hidden_dims"]
        out_w = int(self.input_size[0] * simcc_split_ratio)
        out_h = int(self.input_size[1] * simcc_split_ratio)

        self.final_layer = nn.Conv2d(in_channels, out_channels, final_layer_kernel_size,
                                     padding=final_layer_kernel_size // 2)
        self.mlp = nn.Sequential(ScaleNorm(flatten_dims),
                                 nn.Linear(flatten_dims, hidden, bias=False))
        self.gau = RTMCCBlock(
            num_token=out_channels, in_token_dims=hidden, out_token_dims=hidden,
            expansion_factor=gau_cfg.get("expansion_factor", 2), s=gau_cfg.get("s", 128),
            eps=1e-5, dropout_rate=gau_cfg.get("dropout_rate", 0.0),
            drop_path=gau_cfg.get("drop_path", 0.0), act_fn=gau_cfg.get("act_fn", "SiLU"),
            use_rel_bias=gau_cfg.get("use_rel_bias", False),
            pos_enc=gau_cfg.get("pos_enc", False))
        self.cls_x = nn.Linear(hidden, out_w, bias=False)
        self.cls_y = nn.Linear(hidden, out_h, bias=False)

        apply_weight_init(self, weight_init)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.final_layer(x).flatten(2)                       # (B, K, h*w)
        if feats.shape[-1] != self.mlp[1].in_features:
            h, w = x.shape[-2:]
            raise ValueError(
                f"RTMCCHead was built for {self.in_featuremap_size} feature maps (input "
                f"{self.input_size}), got {h}x{w}: resize the crops or rebuild the head with "
                f"RTMCCHead.update_input_size")
        feats = self.gau(self.mlp(feats))                            # (B, K, hidden)
        return {"x": self.cls_x(feats), "y": self.cls_y(feats)}

    @staticmethod
    def update_input_size(model_cfg: dict, input_size: tuple[int, int]) -> None:
        """Rewrites a pytorch_config (in place) for a new crop size (width, height), with the
        SimCC sigmas mmpose uses for that size (DeepLabCut's rule).

        Args:
            model_cfg: the whole pytorch_config dict (``data`` and ``model`` sections).
            input_size: the new (width, height), multiples of 32.
        """
        known = {192: 4.9, 256: 5.66, 288: 6.0, 384: 6.93}

        def sigma(size: int) -> float:
            return known.get(size, 2.87 + 0.01 * size)

        w, h = input_size
        for split in ("inference", "train"):
            model_cfg["data"][split]["top_down_crop"] = {"width": w, "height": h}
        head = model_cfg["model"]["heads"]["bodypart"]
        head["input_size"] = [w, h]
        head["in_featuremap_size"] = [h // 32, w // 32]
        head["target_generator"]["input_size"] = [w, h]
        head["target_generator"]["sigma"] = [sigma(w), sigma(h)]
