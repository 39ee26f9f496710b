"""nn.Module wrappers that put preprocessing and keypoint decoding around a PoseModel.

The same modules run in eager PyTorch (the parity reference) and inside the exported graph, so the
exported graph cannot drift from what is checked: only the backend differs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dlc_train.models.model import PoseModel

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class NormalizeFrames(nn.Module):
    """uint8 NHWC RGB frames -> float32 NCHW normalized as DeepLabCut trains (ImageNet on /255).

    ``(x / 255 - mean) / std`` is folded into one subtract and one multiply on the raw pixels, so
    only uint8 crosses to the device and the graph does two elementwise ops.

    Args:
        pad_divisor: (height, width) divisors of DeepLabCut's ``auto_padding``: frames are padded
            bottom/right with black pixels to multiples of them (HRNet needs 32), as the training
            transform pads; keypoints need no shift, and any frame size runs.
    """

    def __init__(self, mean: tuple[float, ...] = IMAGENET_MEAN,
                 std: tuple[float, ...] = IMAGENET_STD, pad_divisor: tuple[int, int] = (1, 1)):
        super().__init__()
        self.pad_divisor = pad_divisor
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        scale_t = 1.0 / (torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("mean", mean_t, persistent=False)
        self.register_buffer("scale", scale_t, persistent=False)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        # Cast first: TensorRT converts uint8 only through a Cast and cannot transpose uint8.
        x = frames.to(self.mean.dtype).permute(0, 3, 1, 2)
        hdiv, wdiv = self.pad_divisor
        if hdiv > 1 or wdiv > 1:
            height, width = x.shape[-2:]
            x = F.pad(x, (0, (-width) % wdiv, 0, (-height) % hdiv))
        return (x - self.mean) * self.scale


def pad_divisor_from_config(cfg: dict) -> tuple[int, int]:
    """``data.inference.auto_padding`` of a pytorch_config as (height, width) divisors."""
    padding = ((cfg.get("data") or {}).get("inference") or {}).get("auto_padding") or {}
    return (int(padding.get("pad_height_divisor") or 1),
            int(padding.get("pad_width_divisor") or 1))


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


def _unique_keypoints(model: PoseModel, outputs: dict[str, dict[str, torch.Tensor]]
                      ) -> torch.Tensor:
    """(B, U, 3) from the ``unique_bodypart`` head (a single-animal heatmap head)."""
    predictor = model.heads["unique_bodypart"].predictor
    stride = model.get_stride("unique_bodypart")
    return predictor(stride, outputs["unique_bodypart"])["poses"][:, 0].to(torch.float32)


def _identity_scores(model: PoseModel, outputs: dict[str, dict[str, torch.Tensor]],
                     poses: torch.Tensor) -> torch.Tensor:
    """(B, N, K, num_ids) identity scores sampled at ``poses`` (B, N, K, 2+) in the graph."""
    predictor = model.heads["identity"].predictor
    stride = model.get_stride("identity")
    return predictor.keypoint_scores(stride, outputs["identity"], poses).to(torch.float32)


class BottomUpMultiAnimal(nn.Module):
    """Base of the multi-animal wrappers: frames -> a tuple of named fixed-shape outputs.

    ``output_names`` lists the outputs in the order ``forward`` returns them; the optional
    heads of DeepLabCut's multi-animal models add ``unique_keypoints`` (B, U, 3) (the
    ``unique_bodypart`` head) and identity scores (the ``identity`` head).

    Args:
        model: a PoseModel with a ``bodypart`` head (and optional ``unique_bodypart`` and
            ``identity`` heads).
        head: the head to decode.
    """

    base_outputs: tuple[str, ...] = ()
    identity_output = "identity_scores"

    def __init__(self, model: PoseModel, head: str = "bodypart"):
        super().__init__()
        self.normalize = NormalizeFrames()
        self.model = model
        self.head = head
        self.stride = model.get_stride(head)
        self.with_unique = "unique_bodypart" in model.heads
        self.with_identity = "identity" in model.heads

    @property
    def output_names(self) -> tuple[str, ...]:
        names = list(self.base_outputs)
        if self.with_unique:
            names.append("unique_keypoints")
        if self.with_identity:
            names.append(self.identity_output)
        return tuple(names)


class BottomUpPAF(BottomUpMultiAnimal):
    """frames -> the PAF predictor's tensor half: (peaks (B, K, P, 2), scores (B, K, P),
    peak_index (B, K, P) int64, affinities (B, E, P, P)[, unique_keypoints (B, U, 3)]
    [, peak_identity (B, K, P, num_ids)]). Animals are assembled on the host (the runtime).

    Identity is scored at every candidate peak, not at the assembled keypoints (those only
    exist after assembly): the host gives each keypoint the scores of the peak it came from.
    """

    base_outputs = ("peaks", "scores", "peak_index", "affinities")
    identity_output = "peak_identity"

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.model(self.normalize(frames))
        predictor = self.model.heads[self.head].predictor
        tensors = predictor.forward_tensors(self.stride, outputs[self.head])
        result = [tensors[name] for name in self.base_outputs]
        if self.with_unique:
            result.append(_unique_keypoints(self.model, outputs))
        if self.with_identity:
            # keypoint_scores reads (B, N, K, 2) poses: peaks (B, K, P, 2) as P "animals".
            scores = _identity_scores(self.model, outputs, tensors["peaks"].transpose(1, 2))
            result.append(scores.transpose(1, 2))
        return tuple(result)


class BottomUpPoses(BottomUpMultiAnimal):
    """frames -> keypoints (B, N, K, 3) of a predictor that returns finished animals (DEKR),
    padded slots x = y = -1, score 0[, unique_keypoints (B, U, 3)][, identity_scores
    (B, N, K, num_ids)]. Returns a tensor when keypoints are the only output."""

    base_outputs = ("keypoints",)

    def forward(self, frames: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        outputs = self.model(self.normalize(frames))
        predictor = self.model.heads[self.head].predictor
        poses = predictor(self.stride, outputs[self.head])["poses"].to(torch.float32)
        result = [poses]
        if self.with_unique:
            result.append(_unique_keypoints(self.model, outputs))
        if self.with_identity:
            result.append(_identity_scores(self.model, outputs, poses))
        return result[0] if len(result) == 1 else tuple(result)
