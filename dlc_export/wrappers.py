"""nn.Module wrappers that put preprocessing and keypoint decoding around a PoseModel.

The same modules run in eager PyTorch (the parity reference) and inside the exported graph, so the
exported graph cannot drift from what is checked: only the backend differs.
"""
from __future__ import annotations

import torch
from torch import nn

from dlc_train.models.model import PoseModel

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class NormalizeFrames(nn.Module):
    """uint8 NHWC RGB frames -> float32 NCHW normalized as DeepLabCut trains (ImageNet on /255).

    ``(x / 255 - mean) / std`` is folded into one subtract and one multiply on the raw pixels, so
    only uint8 crosses to the device and the graph does two elementwise ops.
    """

    def __init__(self, mean: tuple[float, ...] = IMAGENET_MEAN,
                 std: tuple[float, ...] = IMAGENET_STD):
        super().__init__()
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        scale_t = 1.0 / (torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("mean", mean_t, persistent=False)
        self.register_buffer("scale", scale_t, persistent=False)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        # Cast first: TensorRT converts uint8 only through a Cast and cannot transpose uint8.
        x = frames.to(self.mean.dtype).permute(0, 3, 1, 2)
        return (x - self.mean) * self.scale


class BottomUpSingleAnimal(nn.Module):
    """frames (B, H, W, 3) uint8 -> keypoints (B, 1, K, 3) float32 (x, y in frame pixels, score).

    Args:
        model: a PoseModel whose ``head`` has a heatmap predictor.
        head: the head to decode (DeepLabCut's ``bodypart``).
    """

    def __init__(self, model: PoseModel, head: str = "bodypart"):
        super().__init__()
        self.normalize = NormalizeFrames()
        self.model = model
        self.head = head
        self.stride = model.get_stride(head)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        outputs = self.model(self.normalize(frames))
        predictor = self.model.heads[self.head].predictor
        return predictor(self.stride, outputs[self.head])["poses"].to(torch.float32)
