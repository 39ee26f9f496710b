"""Bottom-up multi-animal decoding with part affinity fields (DeepLabCut 3's PAF predictor).

Split in two so that the tensor work can live inside an exported graph:

- ``forward_tensors``: sigmoid, Gaussian smoothing, max-pool peak NMS, the ``max_peaks`` best
  peaks per bodypart with locref refinement, and the PAF line integral of every kept edge between
  every pair of candidate peaks. Tensor ops only, fixed-size outputs (padded with -1 / score 0):
  it traces into ONNX with dynamic batch and H/W.
- ``assemble`` (``dlc_runtime.postprocess.paf_assembly.PafAssembler``, numpy only): greedy
  grouping of the peaks into individuals, run on the host (by the runtime, without torch).

``forward`` runs both and returns ``{"poses": (B, num_animals, num_multibodyparts, 3)}``.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from dlc_train.models.predictors.base import PREDICTORS, BasePredictor
# The assembler is the runtime's (numpy only): the same code assembles in training evaluation
# and in deployment (a documented exception to the dependency rule, docs/architecture.md).
from dlc_runtime.postprocess.paf_assembly import PafAssembler

TENSOR_OUTPUTS = ("peaks", "scores", "peak_index", "affinities")


def _round3(x: torch.Tensor) -> torch.Tensor:
    """np.round(x, 3) in x's dtype (DeepLabCut rounds positions, scores and affinities)."""
    return torch.round(x * 1000.0) / 1000.0


@PREDICTORS.register_module
class PartAffinityFieldPredictor(BasePredictor):
    """Args:
        num_animals: maximum individuals per image.
        num_multibodyparts: bodyparts of an individual (the first heatmap channels).
        num_uniquebodyparts: unique bodyparts (heatmap channels after them, if the head has them).
        graph: PAF edges [[bodypart_a, bodypart_b], ...]; edge k owns PAF channels 2k (x), 2k+1.
        edges_to_keep: indices in ``graph`` of the edges used for assembly.
        locref_stdev: scale of the locref maps, in input pixels.
        nms_radius: Gaussian smoothing radius (kernel 2r+1) and max-pool NMS kernel (r).
        sigma: Gaussian smoothing sigma, in heatmap cells.
        min_affinity: weakest link kept by the assembly.
        apply_sigmoid: the heatmaps are logits.
        clip_scores: clip output scores to [0, 1].
        max_peaks: peaks kept per bodypart (default ``num_animals``: DeepLabCut's assembly only
            pairs the ``num_animals`` most confident peaks of each bodypart, so more change
            nothing).
        peak_threshold: smallest smoothed heatmap value of a peak (DeepLabCut: 0.01).
        num_samples: points sampled along each candidate limb for the line integral.
        add_discarded, force_fusion: DeepLabCut options that are not supported (must be False).
        return_preds: accepted for config compatibility; ignored.
    """

    def __init__(self, num_animals: int, num_multibodyparts: int, num_uniquebodyparts: int = 0,
                 graph: list[list[int]] | None = None, edges_to_keep: list[int] | None = None,
                 locref_stdev: float = 7.2801, nms_radius: int = 5, sigma: float = 1.0,
                 min_affinity: float = 0.05, apply_sigmoid: bool = True,
                 clip_scores: bool = False, max_peaks: int | None = None,
                 peak_threshold: float = 0.01, num_samples: int = 10,
                 add_discarded: bool = False, force_fusion: bool = False,
                 return_preds: bool = False):
        super().__init__()
        if add_discarded or force_fusion:
            raise NotImplementedError("PartAffinityFieldPredictor: add_discarded and "
                                      "force_fusion are not supported; set them to false")
        if nms_radius < 1 or nms_radius % 2 == 0:
            # DeepLabCut's max-pool (kernel r, padding r // 2) only keeps the map size for odd r.
            raise ValueError(f"nms_radius must be odd and positive, got {nms_radius}")
        self.graph = [tuple(int(i) for i in edge) for edge in (graph or [])]
        self.edges_to_keep = (list(range(len(self.graph))) if edges_to_keep is None
                              else [int(k) for k in edges_to_keep])
        self.num_animals = int(num_animals)
        self.num_multibodyparts = int(num_multibodyparts)
        self.num_uniquebodyparts = int(num_uniquebodyparts)
        self.locref_stdev = float(locref_stdev)
        self.nms_radius = int(nms_radius)
        self.sigma = float(sigma)
        self.min_affinity = float(min_affinity)
        self.apply_sigmoid = apply_sigmoid
        self.clip_scores = clip_scores
        self.max_peaks = int(max_peaks or num_animals)
        self.peak_threshold = float(peak_threshold)
        self.num_samples = int(num_samples)
        self.assembler = PafAssembler(
            self.graph, self.edges_to_keep, self.num_animals, self.num_multibodyparts,
            self.num_uniquebodyparts, min_affinity=self.min_affinity, clip_scores=clip_scores)
        # Not persistent: predictors hold no state_dict entries (DeepLabCut's keys).
        self.register_buffer("kernel", _gaussian_kernel(self.sigma, 2 * self.nms_radius + 1),
                             persistent=False)
        kept = [self.graph[k] for k in self.edges_to_keep]
        self.register_buffer("edge_src", torch.tensor([e[0] for e in kept], dtype=torch.long),
                             persistent=False)
        self.register_buffer("edge_dst", torch.tensor([e[1] for e in kept], dtype=torch.long),
                             persistent=False)
        self.register_buffer("edge_paf", torch.tensor(self.edges_to_keep, dtype=torch.long),
                             persistent=False)

    # ------------------------------------------------------------------------ tensor half
    def find_peaks(self, heatmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, K, h, w) scores -> (smoothed maps, candidate mask): Gaussian smoothing, then
        cells equal to the max over an ``nms_radius`` window and >= ``peak_threshold``."""
        size = self.kernel.shape[-1]
        # One single-channel conv over (B*K, 1, h, w) rather than a grouped conv: the kernel
        # keeps a static shape, which the ONNX exporter needs with a dynamic channel count.
        smoothed = F.conv2d(heatmap.flatten(0, 1)[:, None], self.kernel.to(heatmap.dtype),
                            padding=size // 2).view_as(heatmap)
        pooled = F.max_pool2d(smoothed, kernel_size=self.nms_radius, stride=1,
                              padding=self.nms_radius // 2)
        return smoothed, (smoothed == pooled) & (smoothed >= self.peak_threshold)

    def forward_tensors(self, stride: float,
                        outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Args:
            stride: input pixels per heatmap cell.
            outputs: {"heatmap": (B, K, h, w), "locref": (B, 2K, h, w), "paf": (B, 2L, h, w)}.

        Returns:
            "peaks": (B, K, P, 2) x, y in input pixels (-1 where no peak), P = ``max_peaks``,
            most confident first; "scores": (B, K, P) smoothed heatmap value (0 where none);
            "peak_index": (B, K, P) int64 raster index of the peak cell (-1 where none);
            "affinities": (B, E, P, P) PAF affinity of (source peak, target peak) for each kept
            edge (E = len(edges_to_keep)), 0 where either peak is missing.
        """
        heatmap = outputs["heatmap"]
        if self.apply_sigmoid:
            heatmap = torch.sigmoid(heatmap)
        batch, num_kpts, height, width = heatmap.shape
        smoothed, is_peak = self.find_peaks(heatmap)
        flat_scores = _round3(smoothed).flatten(2)                      # (B, K, h*w)
        # Rank by the rounded score (DeepLabCut sorts its rounded confidences), ties to the
        # earlier cell in raster order. ONNX TopK breaks ties that way by specification; torch's
        # topk does not promise it, so eager mode uses a stable sort (same result).
        key = torch.where(is_peak.flatten(2), flat_scores, torch.full_like(flat_scores, -1.0))
        if torch.onnx.is_in_onnx_export():
            top_key, index = torch.topk(key, self.max_peaks, dim=2)
        else:
            top_key, index = torch.sort(key, dim=2, descending=True, stable=True)
            top_key, index = top_key[..., : self.max_peaks], index[..., : self.max_peaks]
        valid = top_key >= 0                                            # (B, K, P)
        row = torch.div(index, width, rounding_mode="floor")
        col = index - row * width

        # x = col * stride + floor(stride / 2) + locref_x * std (DeepLabCut's integer half
        # stride: stride // 2 on a float tensor).
        half = float(math.floor(stride / 2))
        locref = outputs["locref"].reshape(batch, num_kpts, 2, height * width)
        offset = locref.gather(3, index[:, :, None, :].expand(-1, -1, 2, -1))   # (B, K, 2, P)
        x = col.to(heatmap.dtype) * stride + half + offset[:, :, 0] * self.locref_stdev
        y = row.to(heatmap.dtype) * stride + half + offset[:, :, 1] * self.locref_stdev
        xy = _round3(torch.stack((x, y), dim=-1))
        peaks = torch.where(valid[..., None], xy, torch.full_like(xy, -1.0))
        scores = torch.where(valid, top_key, torch.zeros_like(top_key))
        peak_index = torch.where(valid, index, torch.full_like(index, -1))
        affinities = self._edge_affinities(outputs["paf"], row, col, valid, width)
        return {"peaks": peaks, "scores": scores, "peak_index": peak_index,
                "affinities": affinities}

    def _edge_affinities(self, paf: torch.Tensor, row: torch.Tensor, col: torch.Tensor,
                         valid: torch.Tensor, width: int) -> torch.Tensor:
        """Line integral of each kept edge's PAF between every (source, target) peak pair.

        As DeepLabCut: ``num_samples`` cells on the segment between the two peak cells (integer
        coordinates, rounded down), the trapezoid integral of the x channel over the column
        steps and of the y channel over the row steps, and affinity = |integral| / length in
        cells. (The norm, not a dot product with the limb direction: a field pointing backwards
        scores like one pointing forwards. Kept for compatibility with trained models.)
        """
        batch = paf.shape[0]
        num_edges, p = self.edge_src.shape[0], self.max_peaks
        dtype = paf.dtype
        if num_edges == 0:
            return paf.new_zeros((batch, 0, p, p))
        paf = paf.reshape(batch, paf.shape[1] // 2, 2, -1)[:, self.edge_paf]   # (B, E, 2, h*w)
        r_s, c_s = row[:, self.edge_src, :, None], col[:, self.edge_src, :, None]
        r_t, c_t = row[:, self.edge_dst, None, :], col[:, self.edge_dst, None, :]  # (B,E,1,P)
        n = self.num_samples
        steps = torch.arange(n, device=paf.device, dtype=dtype)
        # floor(((n-1-i) * start + i * stop) / (n-1)): exact in float (numerator is an integer,
        # a non-integer quotient is >= 1/(n-1) away from the next integer).
        def sample(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            a, b = a.to(dtype)[..., None], b.to(dtype)[..., None]
            return torch.floor(((n - 1 - steps) * a + steps * b) / (n - 1))
        rows = sample(r_s, r_t)                                         # (B, E, P, P, n)
        cols = sample(c_s, c_t)
        flat = (rows * width + cols).to(torch.long).reshape(batch, num_edges, 1, -1)
        values = paf.gather(3, flat.expand(-1, -1, 2, -1)).reshape(
            batch, num_edges, 2, p, p, n)
        vx, vy = values[:, :, 0], values[:, :, 1]
        dcol = cols[..., 1:] - cols[..., :-1]  # (not Tensor.diff: no ONNX symbolic)
        drow = rows[..., 1:] - rows[..., :-1]
        integ_x = (dcol * (vx[..., 1:] + vx[..., :-1]) / 2).sum(-1)
        integ_y = (drow * (vy[..., 1:] + vy[..., :-1]) / 2).sum(-1)
        d_r = (r_t - r_s).to(dtype)
        d_c = (c_t - c_s).to(dtype)
        length = torch.sqrt(d_r * d_r + d_c * d_c) + float(np.spacing(np.float32(1)))
        affinity = _round3(torch.sqrt(integ_x * integ_x + integ_y * integ_y) / length)
        pair_ok = valid[:, self.edge_src, :, None] & valid[:, self.edge_dst, None, :]
        return torch.where(pair_ok, affinity, torch.zeros_like(affinity))

    # ------------------------------------------------------------------------ host half
    def assemble(self, tensors: dict[str, torch.Tensor | np.ndarray]) -> dict[str, np.ndarray]:
        """Numpy assembly of ``forward_tensors``' outputs (or an exported graph's)."""
        arrays = [t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
                  for t in (tensors[name] for name in TENSOR_OUTPUTS)]
        return self.assembler(*arrays)

    def forward(self, stride: float, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        tensors = self.forward_tensors(stride, outputs)
        result = self.assemble(tensors)
        device = outputs["heatmap"].device
        return {name: torch.from_numpy(value).to(device) for name, value in result.items()}


def _gaussian_kernel(sigma: float, size: int) -> torch.Tensor:
    """(1, 1, size, size) separable Gaussian, each axis normalized by a softmax (DeepLabCut)."""
    half = size // 2
    d2 = torch.arange(-half, size - half, dtype=torch.float32) ** 2
    k = torch.softmax(-d2 / (2 * sigma ** 2), dim=0)
    return torch.outer(k, k)[None, None]
