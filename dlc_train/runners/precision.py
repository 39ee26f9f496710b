"""Mixed precision and channels_last for training: ``runner.amp`` and ``runner.channels_last``.

DeepLabCut 3 has no training key for either (only ``inference.autocast`` for inference), so
these are ours:

- ``runner.amp``: false | true | bfloat16 | float16; default off, which is DeepLabCut's float32
  training. On CUDA, true picks bfloat16 where the GPU has it (Ampere and later), else float16;
  float16 also scales the loss (GradScaler) so that small gradients do not underflow. On the
  CPU, bfloat16 (or true) runs where the CPU has bfloat16 units (AVX512-BF16, AMX); float16,
  or a CPU without them, trains in float32 and says so once.
- ``runner.channels_last``: true stores the model and the images NHWC. Unset, pose models
  train NHWC on the CPU, where oneDNN's convolutions were faster in float32 for every family
  measured (benchmarks/results/train_step_cpu.json), and NCHW on CUDA (unmeasured there).

Other devices train in float32, NCHW, and say so when asked for more.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, ContextManager

import torch

logger = logging.getLogger(__name__)

_DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    """How a training step runs (the default: float32, contiguous NCHW).

    Attributes:
        dtype: the autocast dtype; None: no autocast.
        channels_last: images (and the model) in channels_last memory format.
        device_type: "cuda", "cpu", ... (the autocast device type).
    """

    dtype: torch.dtype | None = None
    channels_last: bool = False
    device_type: str = "cpu"

    def autocast(self) -> ContextManager[Any]:
        """The context the forward pass and the loss run in."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """A GradScaler for float16 on CUDA (bfloat16 has float32's range and needs none)."""
        if self.dtype == torch.float16 and self.device_type == "cuda":
            return torch.amp.GradScaler("cuda")
        return None

    def images(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last and images.dim() == 4:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def model(self, model: torch.nn.Module) -> torch.nn.Module:
        if self.channels_last:
            return model.to(memory_format=torch.channels_last)
        return model


def parse_amp(value: Any) -> torch.dtype | None:
    """``runner.amp`` -> the autocast dtype asked for (None: off; True: bfloat16, which
    :func:`precision_for` may lower to float16 on GPUs without it)."""
    from dlc_train.config import ConfigError

    if value is None or value is False or str(value).lower() in ("false", "off", "none", ""):
        return None
    if value is True or str(value).lower() in ("true", "on"):
        return torch.bfloat16
    dtype = _DTYPES.get(str(value).lower())
    if dtype is None:
        raise ConfigError(f"runner.amp must be false, true, bfloat16 or float16, got {value!r}")
    return dtype


def cpu_has_bf16() -> bool:
    """Whether oneDNN runs bfloat16 natively on this CPU (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.backends.mkldnn.is_available()
                    and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without the probe: assume not
        return False


def precision_for(amp: Any, channels_last: Any, device: torch.device,
                  announce: bool = True) -> Precision:
    """The Precision a run on ``device`` uses for these config values.

    Args:
        amp, channels_last: ``runner.amp`` and ``runner.channels_last`` (None: unset).
        device: the training device (CUDA, CPU; anything else trains in float32, NCHW).
        announce: log the choice (rank 0 only, under torchrun).
    """
    dtype = parse_amp(amp)
    if device.type == "cpu":
        return _cpu_precision(dtype, True if channels_last is None else bool(channels_last),
                              announce)
    wants_nhwc = bool(channels_last)
    if device.type != "cuda":
        if (dtype is not None or wants_nhwc) and announce:
            logger.warning("runner.amp / runner.channels_last apply on CUDA and the CPU only: "
                           "training on %s in float32", device)
        return Precision(device_type=device.type)
    if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        dtype = torch.float16  # pre-Ampere GPUs: float16 with loss scaling instead
    if announce and (dtype is not None or wants_nhwc):
        logger.info("mixed precision: %s, channels_last: %s", dtype or "off", wants_nhwc)
    return Precision(dtype=dtype, channels_last=wants_nhwc, device_type="cuda")


def _cpu_precision(dtype: torch.dtype | None, nhwc: bool, announce: bool) -> Precision:
    if dtype == torch.float16:
        if announce:
            logger.warning("runner.amp float16 is for CUDA: training on the CPU in float32 "
                           "(bfloat16 runs on CPUs with AVX512-BF16 or AMX)")
        dtype = None
    elif dtype == torch.bfloat16 and not cpu_has_bf16():
        if announce:
            logger.warning("runner.amp bfloat16: this CPU has no bfloat16 units (AVX512-BF16, "
                           "AMX): training in float32")
        dtype = None
    if announce and dtype is not None:
        logger.info("mixed precision on the CPU: bfloat16, channels_last: %s", nhwc)
    return Precision(dtype=dtype, channels_last=nhwc, device_type="cpu")
