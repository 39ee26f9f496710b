"""DLCRNet: DeepLabCut's multi-scale ResNet (``dlcrnet_stride16_ms5``, ``dlcrnet_stride32_ms5``).

A ResNet whose last feature map is concatenated with two earlier "banks" brought down to the
same resolution by small strided conv blocks: the output of ``layer1[2]`` (stride 4) and of
``layer2[2]`` (stride 8). Keys as DeepLabCut 3: ``model.*`` (the ResNet, timm layout) and
``conv_block1..5.{0: Conv2d, 1: BatchNorm2d}``. The ResNet itself is ``ResNetFeatures``, reused
unchanged; this file only runs its stages one by one to tap the banks.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dlc_train.models.backbones.base import BACKBONES
from dlc_train.models.backbones.resnet import ResNet
from dlc_train.models.resize import resize_bilinear_antialiased

# Block of layer1 / layer2 whose output DeepLabCut taps (``layer1[2]``, ``layer2[2]``). For
# ResNet-50 the first is the end of layer1 and the second the third of layer2's four blocks.
BANK_BLOCKS = (2, 2)
BANK_OUT_CHANNELS = 128


def _conv_block(in_channels: int, out_channels: int, kernel_size: int,
                stride: int) -> nn.Sequential:
    """Conv (bias, no padding) -> BatchNorm (momentum 0.001, TF's decay 0.999) -> ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=kernel_size, stride=stride),
        nn.BatchNorm2d(out_channels, momentum=0.001),
        nn.ReLU(),
    )


@BACKBONES.register_module
class DLCRNet(ResNet):
    """Multi-scale ResNet, DeepLabCut 3's ``DLCRNet``.

    Output channels: 128 (stride-4 bank) + 128 (stride-8 bank) + the ResNet's (2304 for
    ResNet-50), at the ResNet's output stride.

    Args:
        model_name: the ResNet (DeepLabCut uses ``resnet50``; any ``RESNET_SPECS`` name works).
        output_stride: 16 (``dlcrnet_stride16_ms5``) or 32 (``dlcrnet_stride32_ms5``).
        pretrained: see ResNet (the ImageNet weights go into the ResNet part).
        detach_banks: stop gradients from the multi-scale branch into layer1/layer2. DeepLabCut
            taps the banks with forward hooks that ``detach()`` them, so those stages learn
            only through the main path; True (the default) trains the same way.
        kwargs: ResNet arguments (drop_path_rate, freeze_bn_stats, ...).
    """

    def __init__(self, model_name: str = "resnet50", output_stride: int = 32,
                 pretrained: bool = True, detach_banks: bool = True, **kwargs):
        super().__init__(model_name=model_name, output_stride=output_stride,
                         pretrained=pretrained, **kwargs)
        self.detach_banks = detach_banks
        # Bank widths follow the ResNet (256 and 512 for ResNet-50: DeepLabCut's constants).
        c1 = _stage_channels(self.model.layer1)
        c2 = _stage_channels(self.model.layer2)
        self.conv_block1 = _conv_block(c2, c2, kernel_size=3, stride=2)
        self.conv_block2 = _conv_block(c2, BANK_OUT_CHANNELS, kernel_size=1, stride=1)
        self.conv_block3 = _conv_block(c1, c1, kernel_size=3, stride=2)
        self.conv_block4 = _conv_block(c1, c1, kernel_size=3, stride=2)
        self.conv_block5 = _conv_block(c1, BANK_OUT_CHANNELS, kernel_size=1, stride=1)

    @property
    def num_features(self) -> int:
        return 2 * BANK_OUT_CHANNELS + self.model.num_features

    def _run_stage(self, stage: nn.Sequential, x: torch.Tensor,
                   tap: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Runs a stage and also returns the output of block ``tap`` (clipped to the stage)."""
        tap = min(tap, len(stage) - 1)
        bank = x
        for i, block in enumerate(stage):
            x = block(x)
            if i == tap:
                bank = x
        return x, (bank.detach() if self.detach_banks else bank)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        x = m.maxpool(m.act1(m.bn1(m.conv1(x))))
        x, bank1_s4 = self._run_stage(m.layer1, x, BANK_BLOCKS[0])
        x, bank2_s8 = self._run_stage(m.layer2, x, BANK_BLOCKS[1])
        out = m.layer4(m.layer3(x))

        bank2 = self.conv_block2(self.conv_block1(bank2_s8))
        bank1 = self.conv_block5(self.conv_block4(self.conv_block3(bank1_s4)))
        # The unpadded strided convs land one cell short of the main path (e.g. h/16 - 1): resize
        # to its size, bilinear with antialiasing as torchvision's ``resize`` (DeepLabCut's call).
        # Antialiasing only changes downscaling (stride 32); it is left off when upscaling, where
        # the result is the same. Traced (ONNX, TorchScript) the same resize takes an exportable
        # form that does not freeze the frame size (``_resize_traced``).
        if _is_tracing():
            bank1, bank2 = self._resize_traced(bank1, out), self._resize_traced(bank2, out)
        else:
            size = out.shape[-2:]
            bank1, bank2 = _resize(bank1, size), _resize(bank2, size)
        return torch.cat((bank1, bank2, out), dim=1)

    def _resize_traced(self, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """The eager resize, in a form that exports for any frame size.

        Whether the banks are downscaled depends on the output stride, not on the frame size
        the trace happens to see: both end near stride 16 (h/16 - 1 cells), so at stride 16
        they are upscaled (a plain ONNX Resize) and at stride 32 downscaled, where the
        antialiased resize, which has no ONNX operator, becomes two matmuls whose weights the
        graph computes from the traced sizes (exact when upscaling too, e.g. on tiny frames).
        """
        if self.stride < 32:
            return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)
        return resize_bilinear_antialiased(x, torch._shape_as_tensor(like)[-2:])


def _stage_channels(stage: nn.Sequential) -> int:
    last = stage[-1]
    conv = getattr(last, "conv3", None) or last.conv2
    return conv.out_channels


def _is_tracing() -> bool:
    """True while ``torch.jit.trace`` / the TorchScript ONNX exporter records the model."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def _resize(x: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """Eager (training and reference) resize: torchvision's, as DeepLabCut calls it."""
    down = bool(x.shape[-2] > size[0] or x.shape[-1] > size[1])
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False,
                         antialias=down)
