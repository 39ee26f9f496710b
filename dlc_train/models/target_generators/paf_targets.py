"""Part affinity field targets, and the generator that chains several target generators.

Both are DeepLabCut 3's: ``PartAffinityFieldGenerator`` (``pafs_targets.py``) and
``SequentialGenerator`` (heatmap + locref from one generator, PAFs from another, as the
bottom-up multi-animal configs combine them).
"""
from __future__ import annotations

import torch
from torch import nn

from dlc_train.models.target_generators.base import TARGET_GENERATORS, BaseGenerator


@TARGET_GENERATORS.register_module
class PartAffinityFieldGenerator(BaseGenerator):
    """PAF targets, 2 channels (x, y) per graph edge: on each labelled limb of each individual,
    the limb's unit vector scaled by ``1 - d / width``, d being the distance across the limb
    (so a band of half-width ``width`` input pixels that fades towards its edges), between the
    two keypoints along it.

    Cells covered by several individuals' limbs take the last individual's vector (DeepLabCut
    overwrites; it does not average). Weights are all ones (DeepLabCut supervises the whole map).

    Args:
        graph: edges [[bodypart_a, bodypart_b], ...] (the PAF channel order).
        width: half-width of a limb's band, in input pixels.
        label_keypoint_key: labels entry holding the (B, N, K, 3) keypoints.
    """

    def __init__(self, graph: list[list[int]], width: float,
                 label_keypoint_key: str = "keypoints"):
        super().__init__()
        self.graph = [tuple(int(i) for i in edge) for edge in graph]
        self.width = float(width)
        self.label_keypoint_key = label_keypoint_key

    def forward(self, stride: float, outputs: dict[str, torch.Tensor],
                labels: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
        ref = outputs["paf"] if "paf" in outputs else outputs["heatmap"]
        batch, height, width = ref.shape[0], ref.shape[-2], ref.shape[-1]
        device, dtype = ref.device, ref.dtype
        keypoints = torch.as_tensor(labels[self.label_keypoint_key], device=device).to(dtype)
        if keypoints.dim() == 3:
            keypoints = keypoints[:, None]
        num_limbs = len(self.graph)
        paf = torch.zeros((batch, num_limbs, 2, height, width), device=device, dtype=dtype)
        if num_limbs == 0 or keypoints.shape[1] == 0:
            return self._pack(paf)

        # DeepLabCut writes the cell centres into an integer grid, truncating ``i * stride +
        # stride / 2``: identical for even integer strides (all of its models), kept for others.
        xs = torch.floor(torch.arange(width, device=device, dtype=dtype) * stride + stride / 2)
        ys = torch.floor(torch.arange(height, device=device, dtype=dtype) * stride + stride / 2)
        xs, ys = xs[None, None, None, :], ys[None, None, :, None]          # (1, 1, h|1, w|1)
        src = torch.tensor([e[0] for e in self.graph], device=device)
        dst = torch.tensor([e[1] for e in self.graph], device=device)

        # Vectorized over the batch and the limbs; the loop is over individuals (a handful) so
        # that later ones overwrite earlier ones in DeepLabCut's order, with (B, L, h, w) memory.
        for n in range(keypoints.shape[1]):
            kp = keypoints[:, n]                                            # (B, K, 3)
            p1, p2 = kp[:, src], kp[:, dst]                                 # (B, L, 3)
            visible = (p1[..., 2] > 0) & (p2[..., 2] > 0)
            x1, y1 = torch.nan_to_num(p1[..., 0]), torch.nan_to_num(p1[..., 1])
            x2, y2 = torch.nan_to_num(p2[..., 0]), torch.nan_to_num(p2[..., 1])
            dx, dy = x2 - x1, y2 - y1
            length = torch.sqrt(dx * dx + dy * dy)
            valid = visible & (length > 0)
            safe = torch.where(valid, length, torch.ones_like(length))
            ux, uy = (dx / safe)[..., None, None], (dy / safe)[..., None, None]   # (B, L, 1, 1)
            start = ux * x1[..., None, None] + uy * y1[..., None, None]
            end = ux * x2[..., None, None] + uy * y2[..., None, None]
            along = ux * xs + uy * ys                                       # (B, L, h, w)
            across = ((ys * ux - xs * uy) - (y1[..., None, None] * ux
                                             - x1[..., None, None] * uy)) / self.width
            across = across.abs()
            mask = ((along >= torch.minimum(start, end)) & (along <= torch.maximum(start, end))
                    & (across <= 1) & valid[..., None, None])
            fade = 1 - across
            value = torch.stack((ux * fade, uy * fade), dim=2)              # (B, L, 2, h, w)
            paf = torch.where(mask[:, :, None], value, paf)
        return self._pack(paf)

    @staticmethod
    def _pack(paf: torch.Tensor) -> dict[str, dict[str, torch.Tensor]]:
        paf = paf.flatten(1, 2)                   # channel 2l = x, 2l + 1 = y of limb l
        return {"paf": {"target": paf, "weights": torch.ones_like(paf)}}


@TARGET_GENERATORS.register_module
class SequentialGenerator(BaseGenerator):
    """Runs several generators on the same batch and merges their targets (a later generator's
    output of the same name replaces an earlier one's).

    Args:
        generators: target generator configs (each with ``type``) or built generators.
        label_keypoint_key: accepted for DeepLabCut config compatibility (each generator reads
            its own).
    """

    def __init__(self, generators: list[dict | BaseGenerator],
                 label_keypoint_key: str = "keypoints"):
        super().__init__()
        self.generators = nn.ModuleList(
            g if isinstance(g, nn.Module) else TARGET_GENERATORS.build(g) for g in generators)
        self.label_keypoint_key = label_keypoint_key

    def forward(self, stride: float, outputs: dict[str, torch.Tensor],
                labels: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
        targets: dict[str, dict[str, torch.Tensor]] = {}
        for generator in self.generators:
            targets.update(generator(stride, outputs, labels))
        return targets
