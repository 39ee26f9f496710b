"""SimCC decoding (RTMPose): argmax over the x bins and the y bins of each keypoint."""
from __future__ import annotations

import torch

from dlc_train.models.predictors.base import PREDICTORS, BasePredictor


def _pair(value: float | tuple[float, ...] | list[float]) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        return float(value), float(value)
    x, y = value
    return float(x), float(y)


def simcc_normalize(pred: torch.Tensor) -> torch.Tensor:
    """mmpose's ``get_simcc_normalized``: clamp at 0; vectors whose max exceeds 1 are divided
    by their max."""
    pred = pred.clamp(min=0)
    peak = pred.amax(dim=-1, keepdim=True)
    return torch.where(peak > 1, pred / peak, pred)


@PREDICTORS.register_module
class SimCCPredictor(BasePredictor):
    """Decodes {"x": (B, K, Wx), "y": (B, K, Wy)} SimCC logits into (B, 1, K, 3) poses.

    x = argmax(x bins) / simcc_split_ratio (no half-bin offset, as mmpose), same for y;
    score = min(max_x, max_y) of the (softmaxed) vectors. A keypoint whose score is <= 0 gets
    bin -1, i.e. coordinate -1 / simcc_split_ratio, exactly as DeepLabCut (which sets the bin,
    not the coordinate, to -1).

    Same numbers as DeepLabCut 3's SimCCPredictor, which decodes in numpy; here softmax, argmax,
    max and where only, so it exports to ONNX. Coordinates are in input (crop) pixels; the
    ``stride`` argument is not used.

    Args:
        simcc_split_ratio: bins per input pixel.
        normalize_outputs: use ``simcc_normalize`` instead of scaling by sigma * decode_beta.
        apply_softmax: softmax over the bins before taking maxima (scores in (0, 1]).
        sigma: SimCC sigma (x, y) or one value for both; logits are scaled by
            sigma * decode_beta before the softmax (mmpose's sharpening).
        decode_beta: see sigma.
    """

    def __init__(self, simcc_split_ratio: float = 2.0, normalize_outputs: bool = False,
                 apply_softmax: bool = True, sigma: float | tuple[float, float] = 6.0,
                 decode_beta: float = 150.0):
        super().__init__()
        self.simcc_split_ratio = float(simcc_split_ratio)
        self.normalize_outputs = normalize_outputs
        self.apply_softmax = apply_softmax
        self.sigma = _pair(sigma)
        self.decode_beta = float(decode_beta)

    def _decode_axis(self, logits: torch.Tensor, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
        logits = logits.detach()
        if self.normalize_outputs:
            logits = simcc_normalize(logits)
        else:
            logits = logits * (sigma * self.decode_beta)
        if self.apply_softmax:
            logits = torch.softmax(logits, dim=-1)
        # torch.argmax and ONNX ArgMax (select_last_index=0) both return the first maximum.
        return logits.argmax(dim=-1), logits.amax(dim=-1)

    def forward(self, stride: float, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        ix, vx = self._decode_axis(outputs["x"], self.sigma[0])
        iy, vy = self._decode_axis(outputs["y"], self.sigma[1])
        score = torch.minimum(vx, vy)                                  # (B, K)
        missing = score <= 0
        dtype = score.dtype
        x = torch.where(missing, -1.0, ix.to(dtype)) / self.simcc_split_ratio
        y = torch.where(missing, -1.0, iy.to(dtype)) / self.simcc_split_ratio
        return {"poses": torch.stack((x, y, score), dim=-1)[:, None]}  # (B, 1, K, 3)
