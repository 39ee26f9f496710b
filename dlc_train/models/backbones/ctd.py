"""Conditional top-down (CTD, "BUCTD") backbones: pose models that also read the keypoints a
bottom-up model predicted for the individual in the crop (the "conditions").

- ``CondPreNet`` wraps any backbone: an image pre-network and a condition pre-network each map
  their input to 3 channels, their sum is the wrapped backbone's input (DeepLabCut's
  ``ctd_prenet_hrnet_w32``, ``ctd_prenet_rtmpose_s`` ...). Keys: ``backbone.*`` (the wrapped
  backbone), ``rgb_preNet.*``, ``cond_preNet.*``.
- ``HRNetCoAM`` is an HRNet with conditional attention modules (CoAM, ``modules/coam.py``) between
  its stages (DeepLabCut's ``ctd_coam_w32``). Keys: ``model.*`` (as HRNet), ``coam_stages.N.*``.

Both draw the conditions with a keypoint encoder (``modules/conditions.py``) at the input's size
and take them as ``forward(x, cond_kpts)``; ``PoseModel.forward(x, cond_kpts=...)`` passes them on.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dlc_train.models.backbones.base import BACKBONES, BaseBackbone
from dlc_train.models.backbones.hrnet import HRNET_SPECS, HRNet
from dlc_train.models.modules.coam import CoAMBlock
from dlc_train.models.modules.conditions import KEYPOINT_ENCODERS, BaseKeypointEncoder


def _build_encoder(kpt_encoder: dict | BaseKeypointEncoder,
                   img_size: tuple[int, int] | list[int]) -> BaseKeypointEncoder:
    if isinstance(kpt_encoder, BaseKeypointEncoder):
        return kpt_encoder
    cfg = dict(kpt_encoder)
    cfg.setdefault("img_size", list(img_size))  # as DeepLabCut: the backbone's img_size
    return KEYPOINT_ENCODERS.build(cfg)


def _require_conditions(cond_kpts: torch.Tensor | None, name: str) -> torch.Tensor:
    if cond_kpts is None:
        raise ValueError(f"{name} is a conditional top-down backbone: it needs the condition "
                         "keypoints, model(x, cond_kpts=(B, K, 3) keypoints in input pixels)")
    return torch.as_tensor(cond_kpts)


@BACKBONES.register_module
class CondPreNet(BaseBackbone):
    """A backbone behind two pre-networks that fuse the image with the condition heatmaps.

    ``rgb_preNet`` (conv3x3 3->64, BN, conv7x7 64->3, BN) and ``cond_preNet`` (conv7x7 C->3, BN),
    without activations, as DeepLabCut builds them; their outputs are summed.

    Args:
        kpt_encoder: the condition encoder or its config (``StackedKeypointEncoder`` ...).
        backbone: the wrapped backbone or its config.
        img_size: (height, width) of the crops; the encoder's default ``img_size``.
        pretrained: passed to the wrapped backbone (overriding its own, as DeepLabCut does).
        freeze_bn_stats, freeze_bn_weights: see BaseBackbone (the wrapped backbone has its own).
    """

    def __init__(self, kpt_encoder: dict | BaseKeypointEncoder, backbone: dict | BaseBackbone,
                 img_size: tuple[int, int] | list[int] = (256, 256), pretrained: bool = False,
                 **kwargs):
        if not isinstance(backbone, BaseBackbone):
            backbone = BACKBONES.build({**backbone, "pretrained": pretrained})
        super().__init__(stride=backbone.stride, **kwargs)
        self.img_size = (int(img_size[0]), int(img_size[1]))
        self.cond_enc = _build_encoder(kpt_encoder, img_size)  # no state_dict keys
        self.backbone = backbone
        self.rgb_preNet = nn.Sequential(
            nn.Conv2d(3, 64, 3, padding=1), nn.BatchNorm2d(64),
            nn.Conv2d(64, 3, 7, padding=3), nn.BatchNorm2d(3))
        self.cond_preNet = nn.Sequential(
            nn.Conv2d(self.cond_enc.num_channels, 3, 7, padding=3), nn.BatchNorm2d(3))
        self._init_prenets()

    def _init_prenets(self) -> None:
        # DeepLabCut's: N(0, 0.001) convs, so the wrapped (pretrained) backbone first sees an
        # almost-zero input and learns the fusion from there.
        for prenet in (self.rgb_preNet, self.cond_preNet):
            for m in prenet.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.normal_(m.weight, std=0.001)
                    nn.init.zeros_(m.bias)
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)

    @property
    def num_features(self) -> int:
        return self.backbone.num_features

    def forward(self, x: torch.Tensor, cond_kpts: torch.Tensor | None = None) -> torch.Tensor:
        """Args:
            x: (B, 3, H, W) normalized images.
            cond_kpts: (B, K, 3) or (B, 1, K, 3) condition keypoints (x, y, score) in input
                pixels.
        """
        cond_kpts = _require_conditions(cond_kpts, type(self).__name__).to(x.device)
        cond_hm = self.cond_enc(cond_kpts, x.shape[-2:]).to(x.dtype)
        return self.backbone(self.rgb_preNet(x) + self.cond_preNet(cond_hm))


@BACKBONES.register_module
class HRNetCoAM(HRNet):
    """HRNet with conditional attention modules between stages (output stride 4).

    Args:
        kpt_encoder: the condition encoder or its config.
        base_model_name: the HRNet (hrnet_w32, hrnet_w48, ...).
        pretrained: see HRNet.
        coam_modules: positions of CoAM blocks: 1, 2, 3 = before stage 2, 3, 4 (on every branch
            there), 4 = after stage 4 (on the stride-4 branch).
        selfatt_coam_modules: positions of unconditional self-attention blocks instead.
        channel_att_only: channel attention only, as a gate (see DAModule).
        att_heads: attention heads.
        img_size: (height, width) of the crops. The channel attention's Linear layers are sized
            for it: the model runs at this input size only.
        **kwargs: HRNet arguments (interpolate_branches, freeze_bn_stats, ...).
    """

    def __init__(self, kpt_encoder: dict | BaseKeypointEncoder, base_model_name: str = "hrnet_w32",
                 pretrained: bool = True, coam_modules: tuple[int, ...] | list[int] = (2,),
                 selfatt_coam_modules: tuple[int, ...] | list[int] | None = None,
                 channel_att_only: bool = False, att_heads: int = 1,
                 img_size: tuple[int, int] | list[int] = (256, 256), **kwargs):
        if kwargs.get("increased_channel_count"):
            raise NotImplementedError("HRNetCoAM does not support increased_channel_count "
                                      "(neither does DeepLabCut)")
        super().__init__(model_name=base_model_name, pretrained=pretrained, **kwargs)
        coam_modules = tuple(coam_modules or ())
        selfatt_coam_modules = tuple(selfatt_coam_modules or ())
        if set(coam_modules) & set(selfatt_coam_modules):
            raise ValueError("a position cannot hold both a CoAM and a self-attention CoAM block")
        if not set(coam_modules + selfatt_coam_modules) <= {1, 2, 3, 4}:
            raise ValueError(f"CoAM positions are 1..4, got {coam_modules + selfatt_coam_modules}")
        self.img_size = (int(img_size[0]), int(img_size[1]))
        self.coam_modules = coam_modules
        self.selfatt_coam_modules = selfatt_coam_modules
        self.channel_att_only = channel_att_only
        self.cond_enc = _build_encoder(kpt_encoder, img_size)  # no state_dict keys

        # int(size / stride) per branch, DeepLabCut's (img_h / s, img_w / s) pairs.
        spat_dims = [(int(self.img_size[0] / s), int(self.img_size[1] / s))
                     for s in (4, 8, 16, 32)]
        spec = HRNET_SPECS[base_model_name.split(".")[0]]
        stage_channels = [tuple(p * st.block.expansion for p in st.num_channels)
                          for st in spec.stages[1:]]  # stages 2, 3, 4

        def block(position: int, d_cond: int | None) -> CoAMBlock:
            if position == 4:
                dims, channels = spat_dims[:1], stage_channels[-1][:1]
            else:
                dims, channels = spat_dims[:position + 1], stage_channels[position - 1]
            return CoAMBlock(dims, channels, d_cond, heads=att_heads,
                             channel_only=channel_att_only)

        # Four slots, None where unused: the slot index is in the keys ("coam_stages.1.").
        self.coam_stages = nn.ModuleList(
            [block(p, self.cond_enc.num_channels) if p in coam_modules else None
             for p in (1, 2, 3, 4)])
        self.selfatt_coam_stages = nn.ModuleList(
            [block(p, None) if p in selfatt_coam_modules else None for p in (1, 2, 3, 4)])

    def _attend(self, slot: int, xs: list[torch.Tensor], cond_hm: torch.Tensor) -> list:
        if self.coam_stages[slot] is not None:
            return self.coam_stages[slot](xs, cond_hm)
        if self.selfatt_coam_stages[slot] is not None:
            return self.selfatt_coam_stages[slot](xs, None)
        return xs

    def forward(self, x: torch.Tensor, cond_kpts: torch.Tensor | None = None) -> torch.Tensor:
        """Args:
            x: (B, 3, H, W) normalized images, (H, W) = img_size.
            cond_kpts: (B, K, 3) or (B, 1, K, 3) condition keypoints (x, y, score) in input
                pixels.
        """
        cond_kpts = _require_conditions(cond_kpts, type(self).__name__).to(x.device)
        cond_hm = self.cond_enc(cond_kpts, x.shape[-2:]).to(x.dtype)
        m = self.model
        x = m.act1(m.bn1(m.conv1(x)))
        x = m.act2(m.bn2(m.conv2(x)))
        x = m.layer1(x)
        xs = self._attend(0, [t(x) for t in m.transition1], cond_hm)
        xs = m.stage2(xs)
        xs = self._attend(1, m._transition(m.transition2, xs), cond_hm)
        xs = m.stage3(xs)
        xs = self._attend(2, m._transition(m.transition3, xs), cond_hm)
        xs = self._attend(3, m.stage4(xs), cond_hm)
        if not self.interpolate_branches:
            return xs[0]
        size = xs[0].shape[-2:]
        return torch.cat([xs[0]] + [F.interpolate(f, size=size, mode="bilinear",
                                                  align_corners=False) for f in xs[1:]], dim=1)
