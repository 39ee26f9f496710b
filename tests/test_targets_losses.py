"""Heatmap/locref target generators, weighted criterions, and a tiny end-to-end training run."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dlc_train.models import CRITERIONS, TARGET_GENERATORS, PoseModel
from dlc_train.models.target_generators.heatmap_targets import (
    HeatmapGaussianGenerator,
    HeatmapPlateauGenerator,
)

STD = 7.2801
THRESH = 17.0
SIGMA = 2 * THRESH / 3


def outputs_of(batch: int, k: int, h: int, w: int) -> dict[str, torch.Tensor]:
    return {"heatmap": torch.zeros(batch, k, h, w), "locref": torch.zeros(batch, 2 * k, h, w)}


def kpts(rows) -> torch.Tensor:
    """rows: [batch][individual][keypoint] -> (x, y, vis)."""
    return torch.tensor(rows, dtype=torch.float32)


# ------------------------------------------------------------------ target generators


def test_gaussian_target_values_locref_and_weights():
    gen = HeatmapGaussianGenerator(num_heatmaps=2, pos_dist_thresh=THRESH, locref_std=STD)
    # keypoint 0 at (20, 12) = centre of cell (row 1, col 2) at stride 8; keypoint 1 missing
    labels = {"keypoints": kpts([[[[20.0, 12.0, 2.0], [float("nan"), float("nan"), 0.0]]]])}
    t = gen(8.0, outputs_of(1, 2, 6, 8), labels)
    hm = t["heatmap"]["target"]
    assert hm.shape == (1, 2, 6, 8)
    assert hm[0, 0, 1, 2] == pytest.approx(1.0)
    # cell (1, 3) centre (28, 12): d^2 = 64; cell (3, 4) centre (36, 28): d^2 = 256 + 256
    assert hm[0, 0, 1, 3] == pytest.approx(math.exp(-64 / (2 * SIGMA ** 2)), rel=1e-5)
    assert hm[0, 0, 3, 4] == pytest.approx(math.exp(-512 / (2 * SIGMA ** 2)), rel=1e-5)
    assert torch.count_nonzero(hm[0, 1]) == 0          # missing keypoint: no positive target
    assert torch.all(t["heatmap"]["weights"] == 1)      # no gradient masking: weights 1

    loc, lw = t["locref"]["target"], t["locref"]["weights"]
    assert loc.shape == lw.shape == (1, 4, 6, 8)
    # cell (2, 3) centre (28, 20): offset (-8, -8) / std, within 17 px
    assert loc[0, 0, 2, 3] == pytest.approx(-8 / STD) and loc[0, 1, 2, 3] == pytest.approx(-8 / STD)
    assert lw[0, 0, 2, 3] == 1 and lw[0, 1, 2, 3] == 1
    # cell (3, 4) is sqrt(512) = 22.6 px away: outside the locref region
    assert lw[0, 0, 3, 4] == 0 and lw[0, 1, 3, 4] == 0
    centres_y, centres_x = torch.meshgrid(torch.arange(6) * 8 + 4., torch.arange(8) * 8 + 4.,
                                          indexing="ij")
    within = ((centres_x - 20) ** 2 + (centres_y - 12) ** 2) <= THRESH ** 2
    assert torch.equal(lw[0, 0].bool(), within) and torch.equal(lw[0, 1].bool(), within)
    assert torch.count_nonzero(lw[0, 2:]) == 0 and torch.isfinite(loc).all()


def test_max_over_individuals_and_nearest_locref():
    gen = HeatmapGaussianGenerator(num_heatmaps=1, pos_dist_thresh=THRESH)
    labels = {"keypoints": kpts([[[[12.0, 12.0, 2.0]], [[36.0, 12.0, 2.0]], [[0, 0, -1.0]]]])}
    t = gen(8.0, outputs_of(1, 1, 4, 6), labels)
    hm = t["heatmap"]["target"][0, 0]
    assert hm[1, 1] == pytest.approx(1.0) and hm[1, 4] == pytest.approx(1.0)
    d1, d2 = (28 - 12) ** 2, (28 - 36) ** 2  # cell (1, 3) centre (28, 12)
    assert hm[1, 3] == pytest.approx(math.exp(-min(d1, d2) / (2 * SIGMA ** 2)), rel=1e-5)
    # cell (1, 3) is in reach of both: refine towards the nearer one (36, 12)
    assert t["locref"]["target"][0, 0, 1, 3] == pytest.approx(8 / STD)
    assert t["locref"]["target"][0, 0, 1, 2] == pytest.approx(-8 / STD)


def test_plateau_target():
    gen = TARGET_GENERATORS.build({"type": "HeatmapPlateauGenerator", "num_heatmaps": 1,
                                   "pos_dist_thresh": 10, "heatmap_mode": "keypoint"})
    assert isinstance(gen, HeatmapPlateauGenerator)
    labels = {"keypoints": kpts([[[[20.0, 20.0, 1.0]]]])}
    t = gen(4.0, outputs_of(1, 1, 10, 10), labels)
    cy, cx = torch.meshgrid(torch.arange(10) * 4 + 2., torch.arange(10) * 4 + 2., indexing="ij")
    expected = (((cx - 20) ** 2 + (cy - 20) ** 2) <= 100).float()
    assert torch.equal(t["heatmap"]["target"][0, 0], expected)
    assert torch.equal(t["locref"]["weights"][0, 0], expected)
    assert t["locref"]["target"][0, 0, 4, 6] == pytest.approx((20 - 26) / STD)


def test_gradient_masking_weights():
    gen = HeatmapGaussianGenerator(num_heatmaps=3, pos_dist_thresh=THRESH, gradient_masking=True,
                                   background_weight=0.25)
    # one animal: kp0 labelled, kp1 unlabelled (masks its whole map), kp2 labelled
    # plus a padding individual with nothing labelled (must not mask anything)
    labels = {"keypoints": kpts([[[[20.0, 20.0, 2.0], [0, 0, 0.0], [60.0, 40.0, 2.0]],
                                  [[-1, -1, -1.0], [-1, -1, -1.0], [-1, -1, -1.0]]]])}
    w = gen(8.0, outputs_of(1, 3, 8, 10), labels)["heatmap"]["weights"][0]
    cy, cx = torch.meshgrid(torch.arange(8) * 8 + 4., torch.arange(10) * 8 + 4., indexing="ij")
    near0 = ((cx - 20) ** 2 + (cy - 20) ** 2) <= THRESH ** 2
    near2 = ((cx - 60) ** 2 + (cy - 40) ** 2) <= THRESH ** 2
    assert torch.equal(w[0], torch.where(near0, 1.0, 0.25))
    assert torch.count_nonzero(w[1]) == 0
    assert torch.equal(w[2], torch.where(near2, 1.0, 0.25))


def test_individual_mode():
    gen = HeatmapGaussianGenerator(num_heatmaps=2, pos_dist_thresh=THRESH,
                                   heatmap_mode="INDIVIDUAL", generate_locref=False)
    labels = {"keypoints": kpts([[[[4.0, 4.0, 2.0], [12.0, 4.0, 2.0]],
                                  [[28.0, 28.0, 2.0], [0, 0, -1.0]]]]),
              "individual_ids": torch.tensor([[1, 0]])}
    t = gen(8.0, outputs_of(1, 2, 4, 4), labels)
    assert set(t) == {"heatmap"}
    hm = t["heatmap"]["target"][0]
    assert hm[0, 3, 3] == pytest.approx(1.0)              # individual id 0 is the second one
    assert hm[1, 0, 0] == pytest.approx(1.0) and hm[1, 0, 1] == pytest.approx(1.0)


def _loop_reference(gen, stride, shape, keypoints):
    """DeepLabCut's per-keypoint loop, in numpy, for the heatmap and the locref mask."""
    b, k, h, w = shape
    hm = np.zeros(shape, np.float64)
    mask = np.zeros((b, 2 * k, h, w), np.float64)
    gy, gx = np.mgrid[:h, :w] * stride + stride / 2
    for bi in range(b):
        for ni in range(keypoints.shape[1]):
            for ki in range(k):
                x, y, vis = keypoints[bi, ni, ki]
                if vis <= 0:
                    continue
                d2 = (gx - x) ** 2 + (gy - y) ** 2
                hm[bi, ki] = np.maximum(hm[bi, ki], np.exp(-d2 / (2 * gen.std ** 2)))
                mask[bi, 2 * ki:2 * ki + 2][:, d2 <= gen.dist_thresh_sq] = 1
    return hm, mask


def test_matches_loop_reference():
    torch.manual_seed(0)
    b, n, k, h, w, stride = 8, 3, 12, 32, 32, 4.0
    keypoints = torch.rand(b, n, k, 3) * 128
    keypoints[..., 2] = (torch.rand(b, n, k) > 0.3).float() * 2 - (torch.rand(b, n, k) > 0.5).float()
    gen = HeatmapGaussianGenerator(num_heatmaps=k, pos_dist_thresh=THRESH)
    t = gen(stride, outputs_of(b, k, h, w), {"keypoints": keypoints})
    hm, mask = _loop_reference(gen, stride, (b, k, h, w), keypoints.numpy())
    np.testing.assert_allclose(t["heatmap"]["target"].numpy(), hm, atol=1e-6)
    np.testing.assert_array_equal(t["locref"]["weights"].numpy(), mask)


# ------------------------------------------------------------------------- criterions


def test_weighted_mse_and_huber_normalise_by_element_count():
    out = torch.tensor([[1.0, 2.0], [3.0, 5.0]])
    target = torch.tensor([[0.0, 2.0], [1.0, 1.0]])
    weights = torch.tensor([[1.0, 1.0], [0.5, 0.0]])
    mse = CRITERIONS.build({"type": "WeightedMSECriterion"})
    # (1*1 + 0 + 0.5*4 + 0*16) / 4 elements
    assert mse(out, target, weights).item() == pytest.approx(3.0 / 4)
    huber = CRITERIONS.build({"type": "WeightedHuberCriterion"})
    # huber(1) = 0.5, huber(2) = 1.5, huber(4) = 3.5 -> (0.5 + 0 + 0.5*1.5 + 0) / 4
    assert huber(out, target, weights).item() == pytest.approx(1.25 / 4)
    assert mse(out, target).item() == pytest.approx((1 + 0 + 4 + 16) / 4)
    assert mse(out, target, 0.5).item() == pytest.approx(0.5 * 21 / 4)


def test_weighted_bce_is_with_logits():
    torch.manual_seed(0)
    logits, target = torch.randn(2, 3, 4, 4), torch.rand(2, 3, 4, 4)
    weights = (torch.rand(2, 3, 4, 4) > 0.5).float()
    bce = CRITERIONS.build({"type": "WeightedBCECriterion"})
    expected = (F.binary_cross_entropy_with_logits(logits, target, reduction="none")
                * weights).mean()
    assert bce(logits, target, weights).item() == pytest.approx(expected.item(), rel=1e-6)


def test_zero_weights_give_zero_loss_with_gradient():
    out = torch.tensor([1.0, float("inf")], requires_grad=True)
    target = torch.tensor([0.0, float("nan")])
    mse = CRITERIONS.build({"type": "WeightedMSECriterion"})
    loss = mse(out, target, torch.tensor([1.0, 0.0]))
    assert loss.item() == pytest.approx(0.5)             # masked inf/NaN do not leak
    loss = mse(out, target, torch.zeros(2))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(out.grad, torch.zeros(2))


# ---------------------------------------------------------------------------- training


def synthetic_batch(n: int, size: int, generator: torch.Generator):
    """White disks on noise; the disk centre is the one keypoint."""
    images = torch.rand(n, 3, size, size, generator=generator) * 0.3
    centres = torch.rand(n, 2, generator=generator) * (size - 24) + 12
    yy, xx = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    for i in range(n):
        disk = (xx - centres[i, 0]) ** 2 + (yy - centres[i, 1]) ** 2 <= 25
        images[i, :, disk] = 1.0
    keypoints = torch.cat((centres, torch.full((n, 1), 2.0)), dim=1)[:, None, None]
    return (images - 0.45) / 0.25, keypoints  # (n, 1, 1, 3)


def test_tiny_model_trains():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    head = {
        "type": "HeatmapHead", "weight_init": "normal",
        "predictor": {"type": "HeatmapPredictor", "apply_sigmoid": False, "clip_scores": True,
                      "location_refinement": True, "locref_std": STD},
        "target_generator": {"type": "HeatmapGaussianGenerator", "num_heatmaps": 1,
                             "pos_dist_thresh": 17, "heatmap_mode": "KEYPOINT",
                             "gradient_masking": False, "generate_locref": True,
                             "locref_std": STD},
        "criterion": {"heatmap": {"type": "WeightedMSECriterion", "weight": 1.0},
                      "locref": {"type": "WeightedHuberCriterion", "weight": 0.05}},
        "heatmap_config": {"channels": [512, 1], "kernel_size": [3], "strides": [2]},
        "locref_config": {"channels": [512, 2], "kernel_size": [3], "strides": [2]},
    }
    model = PoseModel.build({"backbone": {"type": "ResNet", "model_name": "resnet18",
                                          "output_stride": 16},
                             "heads": {"bodypart": head}})
    images, keypoints = synthetic_batch(4, 64, gen)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    losses = []
    for _ in range(30):
        outputs = model(images)
        targets = model.get_target(outputs, {"keypoints": keypoints})
        loss = model.get_loss(outputs, targets)
        optimizer.zero_grad()
        loss["total_loss"].backward()
        optimizer.step()
        losses.append(loss["total_loss"].item())
    assert set(loss) == {"total_loss", "bodypart_heatmap", "bodypart_locref"}
    assert all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3]), losses
    # Targets and decoding share one geometry: the fitted model finds its training disks
    # (batch statistics, as during the fit; 30 steps are too few for stable running stats).
    with torch.no_grad():
        poses = model.get_predictions(model(images))["bodypart"]["poses"]
    error = (poses[:, 0, 0, :2] - keypoints[:, 0, 0, :2]).norm(dim=1)
    assert error.max() < 6.0, error
