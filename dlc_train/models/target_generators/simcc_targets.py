"""SimCC targets (RTMPose): one 1-D label vector over the x bins and one over the y bins per
keypoint, with Gaussian (or standard) label smoothing, as DeepLabCut 3 / mmpose make them.

Computed for the whole batch at once by broadcasting over (B, N, K, bins); DeepLabCut loops over
images, individuals and keypoints in numpy.
"""
from __future__ import annotations

import math

import torch

from dlc_train.models.target_generators.base import TARGET_GENERATORS, BaseGenerator


def _pair(value: float | tuple[float, ...] | list[float]) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        return float(value), float(value)
    x, y = value
    return float(x), float(y)


@TARGET_GENERATORS.register_module
class SimCCGenerator(BaseGenerator):
    """Targets {"x": {"target": (B, N, K, Wx), "weights": (B, N, K)}, "y": {... (B, N, K, Wy)}}.

    A keypoint at pixel p sits in bin mu = round(p * simcc_split_ratio) (half to even, as
    numpy). Gaussian mode: target[i] = exp(-(i - mu)^2 / (2 sigma^2)) over bins i = 0..W-1
    (divided by sigma * sqrt(2 pi) when ``normalize``); standard mode: 1 - label_smooth_weight
    at mu, label_smooth_weight / (W - 1) elsewhere.

    Weights are 1 for labelled keypoints (visibility > 0), 0 otherwise and 0 for keypoints
    outside the input (Gaussian: its 3-sigma support misses every bin; standard: mu outside
    the bins). Keypoints with visibility below 0.5 get all-zero targets (DeepLabCut's rule;
    with visibility 0 < v < 0.5 they keep weight 1).

    Args:
        input_size: model input (width, height) in pixels; Wx = round(width * ratio), Wy
            likewise.
        smoothing_type: "gaussian" or "standard".
        sigma: Gaussian sigma in bins, (x, y) or one value for both.
        simcc_split_ratio: bins per input pixel.
        label_smooth_weight: standard mode's smoothing (must be 0 in Gaussian mode).
        normalize: divide Gaussian targets by sigma * sqrt(2 pi).
        label_keypoint_key: the labels entry holding (B, N, K, 3) keypoints.
    """

    def __init__(self, input_size: tuple[int, int], smoothing_type: str = "gaussian",
                 sigma: float | tuple[float, float] = 6.0, simcc_split_ratio: float = 2.0,
                 label_smooth_weight: float = 0.0, normalize: bool = True,
                 label_keypoint_key: str = "keypoints"):
        super().__init__()
        if smoothing_type not in ("gaussian", "standard"):
            raise ValueError(f"smoothing_type must be 'gaussian' or 'standard', got "
                             f"{smoothing_type!r}")
        if smoothing_type == "gaussian" and label_smooth_weight > 0:
            raise ValueError("label_smooth_weight is only used in 'standard' mode")
        if not 0.0 <= label_smooth_weight <= 1.0:
            raise ValueError("label_smooth_weight must be in [0, 1]")
        self.input_size = tuple(input_size)
        self.smoothing_type = smoothing_type
        self.sigma = _pair(sigma)
        self.simcc_split_ratio = float(simcc_split_ratio)
        self.label_smooth_weight = float(label_smooth_weight)
        self.normalize = normalize
        self.label_keypoint_key = label_keypoint_key
        w, h = self.input_size
        # Python's round is half-to-even like np.around.
        self.num_bins = (round(w * self.simcc_split_ratio), round(h * self.simcc_split_ratio))

    def _axis(self, mu: torch.Tensor, num_bins: int,
              sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Targets (..., num_bins) and in-range mask (...) for bin centres ``mu``."""
        bins = torch.arange(num_bins, device=mu.device, dtype=mu.dtype)
        if self.smoothing_type == "gaussian":
            radius = 3.0 * sigma
            in_range = (mu - radius < num_bins) & (mu + radius + 1 >= 0)
            target = torch.exp(-((bins - mu[..., None]) ** 2) / (2.0 * sigma ** 2))
            if self.normalize:
                target = target / (sigma * math.sqrt(2.0 * math.pi))
        else:
            in_range = (mu >= 0) & (mu < num_bins)
            on = (bins == mu[..., None]).to(mu.dtype)
            off = self.label_smooth_weight / (num_bins - 1) if self.label_smooth_weight else 0.0
            target = on * (1.0 - self.label_smooth_weight) + (1.0 - on) * off
        return target, in_range

    def forward(self, stride: float, outputs: dict[str, torch.Tensor],
                labels: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
        device, dtype = outputs["x"].device, outputs["x"].dtype
        keypoints = torch.as_tensor(labels[self.label_keypoint_key], device=device).to(dtype)
        if keypoints.dim() == 3:  # single animal without the individual axis
            keypoints = keypoints[:, None]
        visibility = torch.nan_to_num(keypoints[..., 2], nan=0.0)
        weights = (visibility > 0).to(dtype)                          # (B, N, K)
        labelled = visibility >= 0.5
        # Missing keypoints may hold NaN coordinates; keep them out of the arithmetic.
        xy = torch.nan_to_num(keypoints[..., :2]) * labelled[..., None]
        mu = torch.round(xy * self.simcc_split_ratio)                 # (B, N, K, 2)

        target_x, in_x = self._axis(mu[..., 0], self.num_bins[0], self.sigma[0])
        target_y, in_y = self._axis(mu[..., 1], self.num_bins[1], self.sigma[1])
        # Gaussian mode drops a keypoint whose support misses the bins on either axis (both
        # targets zeroed); standard mode likewise when its bin is outside on either axis.
        keep = labelled & in_x & in_y
        weights = torch.where(labelled & ~(in_x & in_y), torch.zeros_like(weights), weights)
        target_x = target_x * keep[..., None]
        target_y = target_y * keep[..., None]
        return {"x": {"target": target_x, "weights": weights},
                "y": {"target": target_y, "weights": weights.clone()}}
