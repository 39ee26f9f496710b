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


class Letterbox(nn.Module):
    """float NCHW frames of any size -> (B, C, H, W) at the fixed network size, and the scale.

    The frame is resized keeping its aspect ratio so it fits in H x W (bilinear, half-pixel
    centres, ``align_corners=False``), then padded bottom/right with black, so the network always
    runs at one size. Keypoints go back to frame pixels by dividing by the returned scale.

    Args:
        size: (height, width) the network runs at.
    """

    def __init__(self, size: tuple[int, int]):
        super().__init__()
        self.size = (int(size[0]), int(size[1]))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the letterboxed frames and the (x, y) scale, network / frame pixels."""
        out_h, out_w = self.size
        target = torch.tensor(self.size, dtype=torch.float32, device=x.device)
        # The frame size as a tensor, so the traced graph computes the resize for any frame
        # size (torchvision's detection transforms do the same for ONNX export).
        frame = torch._shape_as_tensor(x)[2:].to(device=x.device, dtype=torch.float32)
        fit = torch.min(target / frame)
        resized = torch.clamp(torch.floor(frame * fit + 0.5), max=target).to(torch.int64)
        new_h, new_w = resized[0], resized[1]
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)
        x = F.pad(x, (0, out_w - new_w, 0, out_h - new_h))
        # Per axis: rounding the resized size makes it differ slightly from ``fit``; this is
        # the factor the resize really applied.
        scale_hw = resized.to(torch.float32) / frame
        return x, scale_hw.flip(0)


def letterbox_size(height: int, width: int, size: tuple[int, int]) -> tuple[int, int]:
    """The (height, width) a ``height`` x ``width`` frame is resized to before padding (plain
    Python, for references and docs; :class:`Letterbox` computes the same in the graph)."""
    fit = min(size[0] / height, size[1] / width)
    return min(int(height * fit + 0.5), size[0]), min(int(width * fit + 0.5), size[1])


def to_frame_coords(points: torch.Tensor, scale: torch.Tensor,
                    empty: torch.Tensor | None = None) -> torch.Tensor:
    """Maps (..., 2+) points (x, y, extra...) from letterboxed network pixels to frame pixels.

    Args:
        scale: (2,) x, y scale from :class:`Letterbox`.
        empty: (...) bool, slots that keep their -1 "none" marker unchanged.
    """
    xy = points[..., :2] / scale
    if empty is not None:
        xy = torch.where(empty.unsqueeze(-1), points[..., :2], xy)
    return torch.cat([xy, points[..., 2:]], dim=-1)


class NormalizeFrames(nn.Module):
    """uint8 NHWC RGB frames -> float32 NCHW normalized as DeepLabCut trains (ImageNet on /255).

    ``(x / 255 - mean) / std`` is folded into one subtract and one multiply on the raw pixels, so
    only uint8 crosses to the device and the graph does two elementwise ops.

    Args:
        pad_divisor: (height, width) divisors of DeepLabCut's ``auto_padding``: frames are padded
            bottom/right with black pixels to multiples of them (HRNet needs 32), as the training
            transform pads; keypoints need no shift, and any frame size runs.
        network_size: (height, width): letterbox every frame to this size (see
            :class:`Letterbox`); the wrappers then map keypoints back with ``prepare``'s scale.
    """

    def __init__(self, mean: tuple[float, ...] = IMAGENET_MEAN,
                 std: tuple[float, ...] = IMAGENET_STD, pad_divisor: tuple[int, int] = (1, 1),
                 network_size: tuple[int, int] | None = None):
        super().__init__()
        self.pad_divisor = pad_divisor
        self.letterbox = Letterbox(network_size) if network_size else None
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        scale_t = 1.0 / (torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("mean", mean_t, persistent=False)
        self.register_buffer("scale", scale_t, persistent=False)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.prepare(frames)[0]

    def prepare(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The network input and the letterbox's (x, y) scale (None without a letterbox)."""
        # Cast first: TensorRT converts uint8 only through a Cast and cannot transpose uint8.
        x = frames.to(self.mean.dtype).permute(0, 3, 1, 2)
        scale = None
        if self.letterbox is not None:
            # Before normalising, so the padding is black pixels as in DeepLabCut's padding.
            x, scale = self.letterbox(x)
        hdiv, wdiv = self.pad_divisor
        if hdiv > 1 or wdiv > 1:
            height, width = x.shape[-2:]
            x = F.pad(x, (0, (-width) % wdiv, 0, (-height) % hdiv))
        return (x - self.mean) * self.scale, scale


class PoseWrapper(nn.Module):
    """Base of the bottom-up wrappers: frame normalisation around a PoseModel.

    Args:
        model: a PoseModel.
        head: the head to decode (DeepLabCut's ``bodypart``).
    """

    def __init__(self, model: PoseModel, head: str = "bodypart"):
        super().__init__()
        self.normalize = NormalizeFrames()
        self.model = model
        self.head = head
        self.stride = model.get_stride(head)


class BottomUpSingleAnimal(PoseWrapper):
    """frames (B, H, W, 3) uint8 -> keypoints (B, 1, K, 3) float32 (x, y in frame pixels, score)
    of a heatmap predictor."""

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x, scale = self.normalize.prepare(frames)
        outputs = self.model(x)
        predictor = self.model.heads[self.head].predictor
        poses = predictor(self.stride, outputs[self.head])["poses"].to(torch.float32)
        return poses if scale is None else to_frame_coords(poses, scale)


def _unique_keypoints(model: PoseModel, outputs: dict[str, dict[str, torch.Tensor]],
                      scale: torch.Tensor | None = None) -> torch.Tensor:
    """(B, U, 3) from the ``unique_bodypart`` head (a single-animal heatmap head), in frame
    pixels when ``scale`` (a letterbox's) is given."""
    predictor = model.heads["unique_bodypart"].predictor
    stride = model.get_stride("unique_bodypart")
    poses = predictor(stride, outputs["unique_bodypart"])["poses"][:, 0].to(torch.float32)
    return poses if scale is None else to_frame_coords(poses, scale)


def _identity_scores(model: PoseModel, outputs: dict[str, dict[str, torch.Tensor]],
                     poses: torch.Tensor) -> torch.Tensor:
    """(B, N, K, num_ids) identity scores sampled at ``poses`` (B, N, K, 2+) in the graph."""
    predictor = model.heads["identity"].predictor
    stride = model.get_stride("identity")
    return predictor.keypoint_scores(stride, outputs["identity"], poses).to(torch.float32)


class BottomUpMultiAnimal(PoseWrapper):
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
        super().__init__(model, head)
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
        x, scale = self.normalize.prepare(frames)
        outputs = self.model(x)
        predictor = self.model.heads[self.head].predictor
        tensors = dict(predictor.forward_tensors(self.stride, outputs[self.head]))
        identity = None
        if self.with_identity:
            # Sampled in network pixels, before the peaks move to frame pixels. keypoint_scores
            # reads (B, N, K, 2) poses: peaks (B, K, P, 2) as P "animals".
            identity = _identity_scores(self.model, outputs, tensors["peaks"].transpose(1, 2))
        if scale is not None:
            # peak_index stays a raster index of the network's output grid.
            tensors["peaks"] = to_frame_coords(tensors["peaks"], scale,
                                               empty=tensors["peak_index"] < 0)
        result = [tensors[name] for name in self.base_outputs]
        if self.with_unique:
            result.append(_unique_keypoints(self.model, outputs, scale))
        if identity is not None:
            result.append(identity.transpose(1, 2))
        return tuple(result)


class BottomUpPoses(BottomUpMultiAnimal):
    """frames -> keypoints (B, N, K, 3) of a predictor that returns finished animals (DEKR),
    padded slots x = y = -1, score 0[, unique_keypoints (B, U, 3)][, identity_scores
    (B, N, K, num_ids)]. Returns a tensor when keypoints are the only output."""

    base_outputs = ("keypoints",)

    def forward(self, frames: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        x, scale = self.normalize.prepare(frames)
        outputs = self.model(x)
        predictor = self.model.heads[self.head].predictor
        poses = predictor(self.stride, outputs[self.head])["poses"].to(torch.float32)
        # Identity is sampled in network pixels, before the keypoints move to frame pixels.
        identity = _identity_scores(self.model, outputs, poses) if self.with_identity else None
        if scale is not None:
            empty = (poses[..., 0] == -1) & (poses[..., 1] == -1) & (poses[..., 2] <= 0)
            poses = to_frame_coords(poses, scale, empty=empty)
        result = [poses]
        if self.with_unique:
            result.append(_unique_keypoints(self.model, outputs, scale))
        if identity is not None:
            result.append(identity)
        return result[0] if len(result) == 1 else tuple(result)
