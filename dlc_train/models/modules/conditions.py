"""Condition encoding for conditional top-down (CTD / BUCTD) models.

A CTD pose model reads, beside the image crop, the keypoints a bottom-up model predicted for the
individual in that crop (its "conditions"). DeepLabCut 3 draws them as heatmaps before the first
layer: one pixel of value 255 per visible keypoint, a Gaussian blur (OpenCV's
``GaussianBlur(ksize=(15, 15), sigmaX=0)``, i.e. sigma 2.6), then the whole sample rescaled so
that its maximum (over every channel) is 255. ``StackedKeypointEncoder`` gives one channel per
keypoint; ``ColoredKeypointEncoder`` paints every keypoint into 3 RGB channels with its own
"rainbow" colour.

DeepLabCut does this in numpy/OpenCV on the host (a device -> host copy per batch). Here it is
tensor code (one-hot maps and a separable convolution), so it runs on the model's device and
inside an exported graph. The configs' names and arguments are DeepLabCut's, so
``kpt_encoder: {type: StackedKeypointEncoder, num_joints: K, kernel_size: [15, 15]}`` builds here.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dlc_train.registry import Registry

KEYPOINT_ENCODERS = Registry("keypoint encoder")

# OpenCV's fixed kernels for small odd sizes when sigma <= 0 (getGaussianKernel's
# small_gaussian_tab). The 9-tap one is in the OpenCV 5 checked here, maybe not in older
# ones; DeepLabCut's templates use 15, which every version computes from sigma.
_CV_SMALL_KERNELS = {
    1: (1.0,),
    3: (0.25, 0.5, 0.25),
    5: (0.0625, 0.25, 0.375, 0.25, 0.0625),
    7: (0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125),
    9: (0.015625, 0.05078125, 0.1171875, 0.19921875, 0.234375, 0.19921875, 0.1171875,
        0.05078125, 0.015625),
}


def gaussian_kernel_1d(size: int, sigma: float = 0.0) -> torch.Tensor:
    """The 1D Gaussian kernel OpenCV's ``getGaussianKernel(size, sigma)`` returns (float64).

    Args:
        size: odd kernel length.
        sigma: standard deviation; <= 0 derives it from the size as OpenCV does
            (``0.3 * ((size - 1) * 0.5 - 1) + 0.8``).
    """
    if size < 1 or size % 2 == 0:
        raise ValueError(f"Gaussian kernel sizes must be odd and positive, got {size}")
    if sigma <= 0 and size in _CV_SMALL_KERNELS:
        return torch.tensor(_CV_SMALL_KERNELS[size], dtype=torch.float64)
    if sigma <= 0:
        sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    kernel = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    return kernel / kernel.sum()


def rainbow_colors(num_colors: int) -> list[tuple[int, int, int]]:
    """DeepLabCut's per-keypoint colours: matplotlib's "rainbow" colormap (256 entries) sampled at
    ``linspace(0, 256, n, dtype=int)``, scaled to 0..255 and truncated.

    Written out (r = |2x - 0.5|, g = sin(pi x), b = cos(pi x / 2), clipped to [0, 1]) so that
    matplotlib is not needed; index 256 is past the table and maps to its last entry, as
    matplotlib's "over" colour does by default.
    """
    # float64 arithmetic as numpy's linspace does it (start + i * step), so truncation matches.
    step = 256 / (num_colors - 1) if num_colors > 1 else 0.0
    picks = [int(i * step) for i in range(num_colors)]
    colors = []
    for pick in picks:
        x = min(pick, 255) * (1.0 / 255)
        rgb = (abs(2 * x - 0.5), math.sin(math.pi * x), math.cos(math.pi * x / 2))
        colors.append(tuple(int(min(max(c, 0.0), 1.0) * 255) for c in rgb))
    return colors


class BaseKeypointEncoder(nn.Module):
    """Draws condition keypoints as blurred heatmaps, (B, K, 2|3) -> (B, C, H, W) in [0, 255].

    Holds no weights (only non-persistent buffers), so it adds no state_dict keys: DeepLabCut's
    encoders are plain objects.

    Args:
        num_joints: keypoints per individual (K).
        kernel_size: (width, height) of the Gaussian blur, OpenCV's ``ksize`` order.
        img_size: (height, width) the keypoints are checked against: a keypoint outside
            [0, width] x [0, height] is dropped (DeepLabCut's ``out_of_bounds_keypoints``).
    """

    def __init__(self, num_joints: int, kernel_size: tuple[int, int] | list[int] = (15, 15),
                 img_size: tuple[int, int] | list[int] = (256, 256)):
        super().__init__()
        self.num_joints = int(num_joints)
        self.kernel_size = (int(kernel_size[0]), int(kernel_size[1]))
        self.img_size = (int(img_size[0]), int(img_size[1]))
        # float32 kernels: the float64 blur DeepLabCut runs differs by ~1e-5 relative.
        self.register_buffer("kernel_x", gaussian_kernel_1d(self.kernel_size[0]).float(),
                             persistent=False)
        self.register_buffer("kernel_y", gaussian_kernel_1d(self.kernel_size[1]).float(),
                             persistent=False)

    @property
    def num_channels(self) -> int:
        raise NotImplementedError

    def keypoint_maps(self, keypoints: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(B, K, 2|3) keypoints -> (B, K, H, W) maps holding 255 at each visible keypoint's pixel.

        The pixel is DeepLabCut's: column ``int(x) - 1``, row ``int(y) - 1``. A keypoint with
        0 <= x < 1 therefore lands in the last column (numpy's index -1); this is kept, since
        models trained by DeepLabCut saw their conditions drawn that way.
        """
        keypoints = _as_batch(keypoints, self.num_joints)
        height, width = int(size[0]), int(size[1])
        x, y = keypoints[..., 0], keypoints[..., 1]
        if keypoints.shape[-1] > 2:
            visible = keypoints[..., 2] > 0  # NaN scores compare False: not visible
        else:
            visible = torch.ones_like(x, dtype=torch.bool)
        # DeepLabCut replaces NaN coordinates by 0 *before* its bounds check, so a NaN keypoint
        # with a positive score is drawn at (0, 0) (i.e. the last row/column, see above).
        x, y = torch.nan_to_num(x, nan=0.0), torch.nan_to_num(y, nan=0.0)
        max_h, max_w = self.img_size
        visible = (visible & torch.isfinite(x) & torch.isfinite(y)
                   & (x >= 0) & (x <= max_w) & (y >= 0) & (y <= max_h))
        x = torch.where(visible, x, torch.zeros_like(x))
        y = torch.where(visible, y, torch.zeros_like(y))
        # int() truncates; here x, y >= 0, where floor is the same (and ONNX has Floor, not Trunc).
        col = torch.floor(x).long() - 1
        row = torch.floor(y).long() - 1
        col = torch.where(col < 0, col + width, col)
        row = torch.where(row < 0, row + height, row)
        # DeepLabCut raises IndexError when img_size exceeds the input; drop those instead.
        visible = visible & (col < width) & (row < height)
        rows = torch.arange(height, device=keypoints.device)
        cols = torch.arange(width, device=keypoints.device)
        hit = ((rows[None, None, :, None] == row[..., None, None])
               & (cols[None, None, None, :] == col[..., None, None])
               & visible[..., None, None])
        return hit.to(torch.float32) * 255.0

    def blur(self, maps: torch.Tensor) -> torch.Tensor:
        """Separable Gaussian blur per channel, OpenCV's default border (BORDER_REFLECT_101,
        which is torch's "reflect" padding).

        Each channel is blurred as its own one-channel image, so the kernels' shape never
        depends on the input's: the ONNX export with a dynamic batch needs static conv weights.
        """
        b, c, h, w = maps.shape
        kx, ky = self.kernel_x.to(maps), self.kernel_y.to(maps)
        px, py = kx.numel() // 2, ky.numel() // 2
        maps = F.pad(maps.reshape(-1, 1, h, w), (px, px, py, py), mode="reflect")
        maps = F.conv2d(maps, kx.view(1, 1, 1, -1))
        return F.conv2d(maps, ky.view(1, 1, -1, 1)).reshape(b, c, h, w)

    @staticmethod
    def normalize(maps: torch.Tensor) -> torch.Tensor:
        """Rescales each sample so its maximum over all channels is 255 (all-zero samples stay)."""
        peak = maps.flatten(1).amax(dim=1).view(-1, 1, 1, 1)
        return torch.where(peak > 0, maps * (255.0 / peak.clamp_min(1e-12)), maps)

    def forward(self, keypoints: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Args:
            keypoints: (B, K, 2|3) or DeepLabCut's (B, 1, K, 3) condition keypoints in input
                pixels; the third column is a score/visibility (> 0 means drawn).
            size: (height, width) of the maps (the input image size).

        Returns:
            (B, num_channels, H, W) float32 condition maps with values in [0, 255].
        """
        raise NotImplementedError


@KEYPOINT_ENCODERS.register_module
class StackedKeypointEncoder(BaseKeypointEncoder):
    """One condition channel per keypoint (DeepLabCut's ``StackedKeypointEncoder``)."""

    @property
    def num_channels(self) -> int:
        return self.num_joints

    def forward(self, keypoints: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return self.normalize(self.blur(self.keypoint_maps(keypoints, size)))


@KEYPOINT_ENCODERS.register_module
class ColoredKeypointEncoder(BaseKeypointEncoder):
    """All keypoints in 3 RGB channels, each with its colour (``ColoredKeypointEncoder``).

    Args:
        colors: (r, g, b) per keypoint in 0..255; default DeepLabCut's rainbow colours.
        num_joints, kernel_size, img_size: see BaseKeypointEncoder.
    """

    def __init__(self, num_joints: int, colors: list | None = None, **kwargs):
        super().__init__(num_joints=num_joints, **kwargs)
        colors = rainbow_colors(self.num_joints) if colors is None else colors
        table = torch.tensor(colors, dtype=torch.float32)
        if table.shape != (self.num_joints, 3):
            raise ValueError(f"expected {self.num_joints} (r, g, b) colours, got {colors!r}")
        self.register_buffer("colors", table, persistent=False)

    @property
    def num_channels(self) -> int:
        return 3

    def forward(self, keypoints: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        # Blur is linear, so blurring K one-hot maps and mixing them by colour equals blurring the
        # painted image. Two keypoints on the same pixel add up here, where DeepLabCut keeps the
        # colour of the last one.
        maps = self.blur(self.keypoint_maps(keypoints, size) / 255.0)
        painted = torch.einsum("bkhw,kc->bchw", maps, self.colors.to(maps))
        return self.normalize(painted)


def _as_batch(keypoints: torch.Tensor, num_joints: int) -> torch.Tensor:
    """Accepts (B, K, D) or DeepLabCut's (B, 1, K, D) context tensors; returns float (B, K, D)."""
    keypoints = torch.as_tensor(keypoints)
    if keypoints.dim() == 4:
        if keypoints.shape[1] != 1:
            raise ValueError("conditions must hold one individual per crop, got shape "
                             f"{tuple(keypoints.shape)}")
        keypoints = keypoints[:, 0]
    if keypoints.dim() != 3 or keypoints.shape[1] != num_joints or keypoints.shape[2] < 2:
        raise ValueError(f"conditions must be (B, {num_joints}, 2|3) keypoints, got shape "
                         f"{tuple(keypoints.shape)}")
    return keypoints.float()
