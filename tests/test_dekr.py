"""DEKR: head keys, adaptive (deformable) conv numbers and ONNX export, predictor decoding,
targets, losses and a short training run."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
import yaml

from dlc_train.models import PoseModel
from dlc_train.models.criterions.dekr import DEKRHeatmapLoss, DEKROffsetLoss
from dlc_train.models.heads.base import WEIGHT_INITS
from dlc_train.models.heads.dekr import AdaptBlock, DEKROffset, deform_conv2d
from dlc_train.models.predictors.dekr import DEKRPredictor
from dlc_train.models.target_generators.dekr_targets import DEKRGenerator

DLC3 = Path(__file__).resolve().parents[1].parent / "shared" / "dlc3"


def _dekr_cfg(model_name: str = "hrnet_w18") -> dict:
    cfg = yaml.safe_load(_dlc3("pytorch_configs/dekr_w18_BU_ma.yaml").read_text())["model"]
    if model_name == "hrnet_w32":  # DeepLabCut's dekr_w32: 480 backbone channels, 32 hidden
        cfg["backbone"]["model_name"] = "hrnet_w32"
        cfg["backbone_output_channels"] = 480
        head = cfg["heads"]["bodypart"]
        head["heatmap_config"]["channels"][:2] = [480, 32]
        head["offset_config"]["channels"][0] = 480
    return cfg


def _tiny_cfg(num_kpts: int = 3, num_animals: int = 2) -> dict:
    """A DEKR model small enough to train in seconds on a shared CPU (same layout otherwise)."""
    c_in = 16 + 32 + 64 + 128
    return {
        "backbone": {"type": "HRNet", "model_name": "hrnet_w18_small",
                     "interpolate_branches": True, "freeze_bn_stats": False,
                     "freeze_bn_weights": False},
        "heads": {"bodypart": {
            "type": "DEKRHead", "weight_init": "dekr",
            "target_generator": {"type": "DEKRGenerator", "num_joints": num_kpts,
                                 "pos_dist_thresh": 17, "bg_weight": 0.1},
            "criterion": {"heatmap": {"type": "DEKRHeatmapLoss", "weight": 1},
                          "offset": {"type": "DEKROffsetLoss", "weight": 0.03}},
            "predictor": {"type": "DEKRPredictor", "apply_sigmoid": False, "use_heatmap": False,
                          "clip_scores": True, "num_animals": num_animals,
                          "keypoint_score_type": "combined", "max_absorb_distance": 75,
                          "nms_threshold": 0.05, "apply_pose_nms": True},
            "heatmap_config": {"channels": [c_in, 16, num_kpts + 1], "num_blocks": 1,
                               "dilation_rate": 1, "final_conv_kernel": 1},
            "offset_config": {"channels": [c_in, 4 * num_kpts, num_kpts],
                              "num_offset_per_kpt": 4, "num_blocks": 1, "dilation_rate": 1,
                              "final_conv_kernel": 1},
        }},
    }
from conftest import dlc3_file as _dlc3, reference_keys
from helpers.variants import key_file_net_type, tiered
_reference_keys = reference_keys



# ---------------------------------------------------------------- layout


@pytest.mark.parametrize("name, backbone", tiered(
    [("dekr_w18_BU_ma", "hrnet_w18"), ("dekr_w32_BU_ma", "hrnet_w32")],
    net_type=lambda case: key_file_net_type(case[0]), ids="-".join))
def test_state_dict_matches_deeplabcut(name, backbone):
    model = PoseModel.build(_dekr_cfg(backbone))
    ours = [(key, tuple(value.shape)) for key, value in model.state_dict().items()]
    reference = _reference_keys(name)
    assert [k for k, _ in ours] == [k for k, _ in reference]
    assert ours == reference
    model.load_state_dict({k: torch.zeros(s) for k, s in reference}, strict=True)
    # regular_matrix is a buffer: a snapshot's value must survive loading unchanged
    sd = model.state_dict()
    key = "heads.bodypart.offset_head.offset_feature_layers.0.0.regular_matrix"
    assert sd[key].shape == (2, 9)


@pytest.mark.parametrize("size", [(64, 64), (64, 96)])
def test_forward_and_predictor_shapes(size):
    torch.manual_seed(0)
    model = PoseModel.build(_dekr_cfg("hrnet_w18")).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    h, w = size[0] // 4, size[1] // 4
    assert out["bodypart"]["heatmap"].shape == (2, 5, h, w)
    assert out["bodypart"]["offset"].shape == (2, 8, h, w)
    assert model.get_stride("bodypart") == 4.0
    poses = model.get_predictions(out)["bodypart"]["poses"]
    assert poses.shape == (2, 2, 4, 3) and torch.isfinite(poses).all()


def test_dekr_weight_init_is_deeplabcuts():
    torch.manual_seed(0)
    head = PoseModel.build(_tiny_cfg()).heads["bodypart"]
    for name, param in head.named_parameters():
        if "bias" in name:
            assert torch.all(param == 0), name
        else:  # every other parameter, BatchNorm scales included, ~ N(0, 0.001)
            assert param.abs().max() < 0.01 and param.std() > 1e-4, name
    assert WEIGHT_INITS.get("dekr").__module__ == "dlc_train.models.heads.dekr"


# ---------------------------------------------------------------- adaptive convolution


def _bilinear_zero(img: np.ndarray, y: float, x: float) -> float:
    """torchvision's deform_conv2d sampling: bilinear, 0 outside (-1, H) x (-1, W)."""
    h, w = img.shape
    if y <= -1 or y >= h or x <= -1 or x >= w:
        return 0.0
    y0, x0 = math.floor(y), math.floor(x)
    total = 0.0
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                total += wy * wx * img[yy, xx]
    return total


def _deform_conv_reference(x, offset, weight, stride, padding, dilation):
    x, offset, weight = x.double().numpy(), offset.double().numpy(), weight.double().numpy()
    n, c, _, _ = x.shape
    o, _, kh, kw = weight.shape
    ho, wo = offset.shape[-2:]
    out = np.zeros((n, o, ho, wo))
    for b in range(n):
        for u in range(ho):
            for v in range(wo):
                for i in range(kh):
                    for j in range(kw):
                        k = i * kw + j
                        py = u * stride - padding + i * dilation + offset[b, 2 * k, u, v]
                        px = v * stride - padding + j * dilation + offset[b, 2 * k + 1, u, v]
                        vals = np.array([_bilinear_zero(x[b, ch], py, px) for ch in range(c)])
                        out[b, :, u, v] += weight[:, :, i, j] @ vals
    return torch.from_numpy(out)


@pytest.mark.parametrize("stride, padding, dilation", [(1, 1, 1), (1, 2, 2), (2, 1, 1)])
def test_deform_conv_matches_reference(stride, padding, dilation):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 7, dtype=torch.float64)
    weight = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    ho = (6 + 2 * padding - dilation * 2 - 1) // stride + 1
    wo = (7 + 2 * padding - dilation * 2 - 1) // stride + 1
    # offsets up to +-3 pixels: many taps fall between pixels and some outside the map
    offset = (torch.rand(2, 18, ho, wo, dtype=torch.float64) - 0.5) * 6
    ours = deform_conv2d(x, offset, weight, None, stride, padding, dilation)
    torch.testing.assert_close(ours, _deform_conv_reference(x, offset, weight, stride, padding,
                                                            dilation))


def test_deform_conv_zero_offsets_is_conv():
    torch.manual_seed(0)
    x, weight, bias = torch.randn(1, 4, 5, 6), torch.randn(3, 4, 3, 3), torch.randn(3)
    ours = deform_conv2d(x, torch.zeros(1, 18, 5, 6), weight, bias, padding=1)
    torch.testing.assert_close(ours, F.conv2d(x, weight, bias, padding=1), atol=1e-5,
                               rtol=1e-5)


def test_adapt_block_offsets_follow_deeplabcut():
    """DeepLabCut: offset = (A @ R - R) per pixel, laid out (dy, dx) per tap, plus (ty, tx)."""
    torch.manual_seed(0)
    block = AdaptBlock(5, 5)
    for conv in (block.transform_matrix_conv, block.translation_conv):
        torch.nn.init.normal_(conv.weight, std=0.3)
        torch.nn.init.normal_(conv.bias, std=0.3)
    x = torch.randn(2, 5, 4, 6)
    n, _, h, w = x.shape
    regular = block.regular_matrix
    matrix = block.transform_matrix_conv(x).permute(0, 2, 3, 1).reshape(n * h * w, 2, 2)
    expected = (matrix @ regular - regular).transpose(1, 2).reshape(n, h, w, 18)
    expected = expected.permute(0, 3, 1, 2).clone()
    t = block.translation_conv(x)
    expected[:, 0::2] += t[:, 0:1]
    expected[:, 1::2] += t[:, 1:2]
    torch.testing.assert_close(block.offsets(x), expected)
    # identity transform, no translation: the adaptive conv is a plain 3x3 conv
    for conv in (block.transform_matrix_conv, block.translation_conv):
        torch.nn.init.zeros_(conv.weight)
        torch.nn.init.zeros_(conv.bias)
    block.transform_matrix_conv.bias.data = torch.tensor([1.0, 0.0, 0.0, 1.0])
    assert block.offsets(x).abs().max() == 0


def test_offset_branch_exports_to_onnx(tmp_path):
    torch.manual_seed(0)
    module = DEKROffset([12, 8, 2], num_offset_per_kpt=4, num_blocks=2).eval()
    for m in module.modules():  # make the offsets large enough to matter
        if isinstance(m, AdaptBlock):
            torch.nn.init.normal_(m.transform_matrix_conv.weight, std=0.2)
            torch.nn.init.normal_(m.translation_conv.weight, std=0.5)
    path = tmp_path / "offset.onnx"
    torch.onnx.export(module, (torch.randn(1, 12, 16, 16),), str(path), dynamo=False,
                      opset_version=17, input_names=["x"], output_names=["offset"],
                      dynamic_axes={"x": {0: "b", 2: "h", 3: "w"}})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in [(1, 12, 16, 16), (2, 12, 12, 20)]:
        x = torch.randn(*shape)
        with torch.no_grad():
            expected = module(x).numpy()
        (got,) = session.run(None, {"x": x.numpy()})
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-3)


# ---------------------------------------------------------------- predictor

STRIDE = 4.0


def _hand_made_outputs(h: int = 16, w: int = 20):
    """Two animals; centre cells (5, 4) [x, y] and (14, 11); 3 keypoints each (cells)."""
    kpts = torch.tensor([[[3.0, 2.0], [6.5, 5.0], [4.0, 7.25]],
                         [[12.0, 9.0], [16.0, 13.5], [15.0, 10.0]]])
    centres = torch.tensor([[5, 4], [14, 11]])
    heatmap = torch.zeros(1, 4, h, w)
    heatmap[0, 3, 4, 5], heatmap[0, 3, 11, 14] = 0.9, 0.7
    heatmap[0, 3, 5, 5] = 0.5   # a shoulder of the first peak: not a local maximum
    offset = torch.zeros(1, 6, h, w)
    for (cx, cy), animal in zip(centres.tolist(), kpts):
        for k, (kx, ky) in enumerate(animal.tolist()):
            offset[0, 2 * k, cy, cx] = cx - kx
            offset[0, 2 * k + 1, cy, cx] = cy - ky
            heatmap[0, k, int(ky), int(kx)] = 0.5 + 0.1 * k
    return {"heatmap": heatmap, "offset": offset}, kpts


def test_predictor_two_animals_centre_scores():
    outputs, kpts = _hand_made_outputs()
    predictor = DEKRPredictor(num_animals=2, apply_sigmoid=False, use_heatmap=False,
                              keypoint_score_type="center", apply_pose_nms=True)
    poses = predictor(STRIDE, outputs)["poses"]
    assert poses.shape == (1, 2, 3, 3)
    torch.testing.assert_close(poses[0, :, :, :2], kpts * STRIDE + STRIDE / 2)
    torch.testing.assert_close(poses[0, :, :, 2], torch.tensor([[0.9] * 3, [0.7] * 3]))


def test_predictor_combined_scores_and_absorption():
    outputs, kpts = _hand_made_outputs()
    predictor = DEKRPredictor(num_animals=2, apply_sigmoid=False, use_heatmap=False,
                              keypoint_score_type="combined")
    poses = predictor(STRIDE, outputs)["poses"][0]
    heat = torch.tensor([0.5, 0.6, 0.7])
    torch.testing.assert_close(poses[..., 2], torch.stack((0.9 * heat, 0.7 * heat)))

    # Offsets 0.6 cell short of the keypoints: with use_heatmap the keypoints snap onto the
    # heatmap peaks (integer cells) when within max_absorb_distance, not otherwise.
    shifted = {k: v.clone() for k, v in outputs.items()}
    shifted["offset"] += 0.6
    snap = DEKRPredictor(num_animals=2, apply_sigmoid=False, use_heatmap=True,
                         keypoint_score_type="heatmap", max_absorb_distance=2)
    poses = snap(STRIDE, shifted)["poses"][0]
    torch.testing.assert_close(poses[..., :2], kpts.floor() * STRIDE + STRIDE / 2)
    torch.testing.assert_close(poses[..., 2], torch.stack((heat, heat)))
    far = DEKRPredictor(num_animals=2, apply_sigmoid=False, use_heatmap=True,
                        keypoint_score_type="heatmap", max_absorb_distance=0.1)
    poses = far(STRIDE, shifted)["poses"][0]
    torch.testing.assert_close(poses[..., :2], (kpts - 0.6) * STRIDE + STRIDE / 2)


def test_predictor_pose_nms_drops_duplicates():
    outputs, kpts = _hand_made_outputs()
    # a third centre peak, next to the first, regressing (almost) the same animal
    outputs["heatmap"][0, 3, 4, 9] = 0.8
    for k, (kx, ky) in enumerate(kpts[0].tolist()):
        outputs["offset"][0, 2 * k, 4, 9] = 9 - kx - 0.1
        outputs["offset"][0, 2 * k + 1, 4, 9] = 4 - ky
    kwargs = dict(num_animals=3, apply_sigmoid=False, use_heatmap=False,
                  keypoint_score_type="center")
    raw = DEKRPredictor(apply_pose_nms=False, **kwargs)(STRIDE, outputs)["poses"][0]
    assert raw[:, 0, 2].tolist() == pytest.approx([0.9, 0.8, 0.7])
    poses = DEKRPredictor(apply_pose_nms=True, nms_threshold=0.05, **kwargs)(
        STRIDE, outputs)["poses"][0]
    torch.testing.assert_close(poses[:2, :, :2], kpts * STRIDE + STRIDE / 2)  # kept, in order
    assert poses[:2, 0, 2].tolist() == pytest.approx([0.9, 0.7])
    assert torch.all(poses[2, :, :2] == -1) and torch.all(poses[2, :, 2] == 0)  # padding


# ---------------------------------------------------------------- targets and losses


def _labels() -> dict[str, torch.Tensor]:
    """Two animals of 3 keypoints in a 64 x 80 image; animal 2 misses its last keypoint."""
    # centres (means of the labelled keypoints) on cell centres: (18, 18) and (58, 42) px
    kpts = torch.tensor([[[[10.0, 12.0, 2], [26.0, 14.0, 2], [18.0, 28.0, 2]],
                          [[52.0, 40.0, 2], [64.0, 44.0, 2], [0.0, 0.0, 0]]]])
    return {"keypoints": kpts}


def test_targets_shapes_values_and_roundtrip():
    gen = DEKRGenerator(num_joints=3, pos_dist_thresh=17, bg_weight=0.1)
    h, w = 16, 20
    outputs = {"heatmap": torch.zeros(1, 4, h, w), "offset": torch.zeros(1, 6, h, w)}
    labels = _labels()
    targets = gen(STRIDE, outputs, labels)
    heatmap, hw = targets["heatmap"]["target"], targets["heatmap"]["weights"]
    offset, ow = targets["offset"]["target"], targets["offset"]["weights"]
    assert heatmap.shape == hw.shape == (1, 4, h, w)
    assert offset.shape == ow.shape == (1, 6, h, w)
    # pixel p -> cell (p - 2) / 4: keypoint (26, 14) sits on cell (6, 3), keypoint (18, 28)
    # between cells (4, 6) and (4, 7); Gaussians of sigma 17 / 2 / 4 cells
    sigma = 17 / 2 / STRIDE
    assert heatmap[0, 1, 3, 6].item() == pytest.approx(1.0)
    assert heatmap[0, 1, 3, 5].item() == pytest.approx(math.exp(-1 / (2 * sigma ** 2)))
    assert heatmap[0, 2].max() < 1
    assert heatmap[0, 2, 6, 4].item() == pytest.approx(math.exp(-0.25 / (2 * sigma ** 2)))
    # the centre heatmap is twice as wide: centre of animal 1 on cell (4, 4)
    assert heatmap[0, 3, 4, 4].item() == pytest.approx(1.0)
    assert heatmap[0, 3, 4, 3].item() == pytest.approx(math.exp(-1 / (2 * (2 * sigma) ** 2)))
    bg, fg = torch.isclose(hw, torch.tensor(0.1)), hw == 1
    assert torch.all(bg | fg) and bg.any() and fg.any()
    assert torch.all(fg[0, 1, 0:12, 0:15]) and bg[0, 1, 15, 2]   # box: cells [-2, 15) x [-5, 12)
    # the missing keypoint of animal 2 adds nothing near it; no offsets for it either
    assert heatmap[0, 2, 10:, 13:].max() == 0
    centre2 = (58.0, 42.0)
    cx, cy = int((centre2[0] - 2) / 4), int((centre2[1] - 2) / 4)
    assert ow[0, 4:, cy, cx].sum() == 0 and ow[0, :4, cy, cx].min() > 0
    # weights are 1 / sqrt(area); the area is the keypoints' box grown by 20 px per side
    area2 = (12 + 40) * (4 + 40)
    assert ow[0, 0, cy, cx].item() == pytest.approx(area2 ** -0.5)

    # The targets, read back by the predictor, give the labels back exactly
    predictor = DEKRPredictor(num_animals=2, apply_sigmoid=False, use_heatmap=False,
                              keypoint_score_type="center", apply_pose_nms=False)
    poses = predictor(STRIDE, {"heatmap": heatmap, "offset": offset})["poses"][0]
    order = poses[:, 0, 0].argsort()
    torch.testing.assert_close(poses[order][0, :, :2], labels["keypoints"][0, 0, :, :2])
    torch.testing.assert_close(poses[order][1, :2, :2], labels["keypoints"][0, 1, :2, :2])


def test_targets_accept_deeplabcut_centre_and_area():
    """Labels with DeepLabCut's centre keypoint appended and an explicit area."""
    gen = DEKRGenerator(num_joints=3, pos_dist_thresh=17)
    labels = _labels()
    kpts = labels["keypoints"]
    centre = torch.tensor([[[[18.0, 18.0, 2]], [[58.0, 42.0, 2]]]])
    outputs = {"heatmap": torch.zeros(1, 4, 16, 20), "offset": torch.zeros(1, 6, 16, 20)}
    ours = gen(STRIDE, outputs, {"keypoints": kpts})
    given = gen(STRIDE, outputs, {"keypoints": torch.cat((kpts, centre), dim=2),
                                  "area": torch.tensor([[100.0, 400.0]])})
    # same centres (the mean of the labelled keypoints) -> same heatmaps and offsets
    torch.testing.assert_close(given["heatmap"]["target"], ours["heatmap"]["target"])
    torch.testing.assert_close(given["offset"]["target"], ours["offset"]["target"])
    np.testing.assert_allclose(given["offset"]["weights"].unique().numpy(), [0, 0.05, 0.1])


def test_overlapping_animals_smaller_wins():
    gen = DEKRGenerator(num_joints=1, pos_dist_thresh=17)
    kpts = torch.tensor([[[[20.0, 20.0, 2]], [[24.0, 20.0, 2]]]])
    outputs = {"heatmap": torch.zeros(1, 2, 12, 12), "offset": torch.zeros(1, 2, 12, 12)}
    for areas, winner_x in (([400.0, 100.0], 24.0), ([100.0, 400.0], 20.0),
                            ([100.0, 100.0], 24.0)):
        t = gen(STRIDE, outputs, {"keypoints": kpts, "area": torch.tensor([areas])})
        # cell (5, 5) lies in both animals' offset squares
        off_x = t["offset"]["target"][0, 0, 5, 5].item()
        assert 5 - off_x == pytest.approx((winner_x - 2) / 4)


def test_losses():
    torch.manual_seed(0)
    out, target = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    weights = torch.rand(2, 3, 4, 5)
    torch.testing.assert_close(DEKRHeatmapLoss()(out, target, weights),
                               ((out - target) ** 2 * weights).mean())
    weights = torch.zeros(2, 3, 4, 5)
    weights[0, 0, :2] = 0.5                                  # 10 positive elements
    diff = (out - target).abs()
    beta = 1 / 9
    smooth = torch.where(diff < beta, 0.5 * diff ** 2 / beta, diff - 0.5 * beta)
    torch.testing.assert_close(DEKROffsetLoss()(out, target, weights),
                               (smooth * weights).sum() / 10)
    assert DEKROffsetLoss()(out, target, torch.zeros_like(out)).item() == 0
    with pytest.raises(ValueError):
        DEKRHeatmapLoss()(out, target[:, :2])


def test_training_reduces_loss():
    torch.manual_seed(0)
    model = PoseModel.build(_tiny_cfg(num_kpts=3))
    model.train()
    images = torch.randn(2, 3, 64, 64)
    labels = {"keypoints": torch.tensor([
        [[[10.0, 12.0, 2], [22.0, 14.0, 2], [16.0, 26.0, 2]],
         [[40.0, 40.0, 2], [52.0, 44.0, 2], [46.0, 54.0, 2]]],
        [[[30.0, 10.0, 2], [36.0, 20.0, 2], [24.0, 22.0, 2]],
         [[0.0, 0.0, 0], [0.0, 0.0, 0], [0.0, 0.0, 0]]]])}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(12):
        outputs = model(images)
        targets = model.get_target(outputs, labels)
        loss = model.get_loss(outputs, targets)
        assert set(loss) == {"total_loss", "bodypart_heatmap", "bodypart_offset"}
        optimizer.zero_grad()
        loss["total_loss"].backward()
        optimizer.step()
        losses.append(loss["total_loss"].item())
    assert all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3]), losses
