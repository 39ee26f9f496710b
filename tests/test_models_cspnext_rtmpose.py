"""CSPNeXt backbone and RTMPose (RTMCC head, SimCC predictor / targets, KL loss): DeepLabCut 3
state_dict layout, shapes, decoding on hand-made vectors, training and ONNX export."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from dlc_train.models import BACKBONES, CRITERIONS, HEADS, PoseModel
from dlc_train.models.backbones.cspnext import CSPNEXT_VARIANTS, CSPNeXt
from dlc_train.models.criterions.kl import KLDiscreteLoss
from dlc_train.models.heads.rtmcc import RTMCCBlock, RTMCCHead, ScaleNorm
from dlc_train.models.predictors.simcc import SimCCPredictor
from dlc_train.models.target_generators.simcc_targets import SimCCGenerator

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DLC3 = SHARED / "dlc3"


def _config(name: str) -> dict:
    return yaml.safe_load(_dlc3(f"pytorch_configs/{name}.yaml").read_text())


def _tiny_rtmpose_cfg(input_size=(64, 48), num_kpts: int = 3, widen: float = 0.125,
                      sigma: float = 2.0) -> dict:
    """A small RTMPose model config, DeepLabCut's layout (input_size is (width, height))."""
    w, h = input_size
    return {
        "backbone": {"type": "CSPNeXt", "model_name": "cspnext_tiny_test", "deepen_factor": 0.33,
                     "widen_factor": widen},
        "heads": {"bodypart": {
            "type": "RTMCCHead", "weight_init": "RTMPose",
            "target_generator": {"type": "SimCCGenerator", "input_size": [w, h],
                                 "smoothing_type": "gaussian", "sigma": [sigma, sigma],
                                 "simcc_split_ratio": 2.0, "label_smooth_weight": 0.0,
                                 "normalize": False},
            "criterion": {axis: {"type": "KLDiscreteLoss", "use_target_weight": True,
                                 "beta": 10.0, "label_softmax": True} for axis in "xy"},
            "predictor": {"type": "SimCCPredictor", "simcc_split_ratio": 2.0,
                          "sigma": [sigma, sigma], "decode_beta": 150.0, "apply_softmax": True,
                          "normalize_outputs": False},
            "input_size": [w, h], "in_channels": int(1024 * widen), "out_channels": num_kpts,
            "in_featuremap_size": [h // 32, w // 32], "simcc_split_ratio": 2.0,
            "final_layer_kernel_size": 7,
            "gau_cfg": {"hidden_dims": 32, "s": 16, "expansion_factor": 2, "dropout_rate": 0,
                        "drop_path": 0.0, "act_fn": "SiLU", "use_rel_bias": False,
                        "pos_enc": False}}},
    }
from conftest import dlc3_file as _dlc3, reference_keys
from helpers.variants import key_file_net_type, tiered

def _reference_keys(name: str) -> dict[str, tuple[int, ...]]:
    return dict(reference_keys(name))

pytestmark = pytest.mark.usefixtures("one_thread")



# ------------------------------------------------------------------- DeepLabCut layout


@pytest.mark.parametrize("name", tiered(["cspnext_s_BU_sa", "rtmpose_s_TD_ma", "rtmpose_m_TD_ma"],
                                        net_type=key_file_net_type))
def test_state_dict_matches_deeplabcut(name):
    model = PoseModel.build(_config(name)["model"])
    got = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    expected = _reference_keys(name)
    assert sorted(set(got) - set(expected)) == []
    assert sorted(set(expected) - set(got)) == []
    assert {k: v for k, v in got.items() if v != expected[k]} == {}


def test_snapshot_loads_strict_and_reproduces_outputs():
    cfg = _config("rtmpose_s_TD_ma")["model"]
    torch.manual_seed(0)
    source = PoseModel.build(cfg).eval()
    target = PoseModel.build(cfg).eval()
    # A DeepLabCut snapshot is {"model": state_dict, ...}; strict keys must load it.
    target.load_state_dict({"model": source.state_dict()}["model"], strict=True)
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        a, b = source(x)["bodypart"], target(x)["bodypart"]
    torch.testing.assert_close(a["x"], b["x"], rtol=0, atol=0)
    torch.testing.assert_close(a["y"], b["y"], rtol=0, atol=0)


def test_cspnext_variant_factors():
    # s and m as in the DeepLabCut sample configs; x as DeepLabCut's cspnext_x.yaml (1280 ch.)
    for name, expected in (("cspnext_s_BU_sa", "cspnext_s"), ("rtmpose_m_TD_ma", "cspnext_m")):
        backbone = _config(name)["model"]["backbone"]
        assert backbone["model_name"] == expected
        assert (backbone["deepen_factor"], backbone["widen_factor"]) == CSPNEXT_VARIANTS[expected]
    assert CSPNEXT_VARIANTS["cspnext_x"] == (1.33, 1.25)


@pytest.mark.slow  # the family's largest size; the s models run in the fast tier
def test_cspnext_x_and_rtmpose_x_build_and_run():
    cfg = _config("rtmpose_s_TD_ma")
    cfg["model"]["backbone"].update(model_name="cspnext_x", deepen_factor=1.33, widen_factor=1.25)
    cfg["model"]["heads"]["bodypart"]["in_channels"] = 1280
    # 64 x 64 crops keep the x-large model cheap on CPU; the head is rebuilt for them.
    RTMCCHead.update_input_size(cfg, (64, 64))
    model = PoseModel.build(cfg["model"]).eval()
    backbone = model.backbone
    assert backbone.num_features == 1280 and backbone.stride == 32
    # blocks per CSP layer: round(3 * 1.33) = 4, round(6 * 1.33) = 8
    assert [len(getattr(backbone, f"stage{i}")[-1].blocks) for i in range(1, 5)] == [4, 8, 8, 4]
    assert backbone.stem[2].conv.out_channels == 80
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert out["bodypart"]["x"].shape == (1, 4, 128) and out["bodypart"]["y"].shape == (1, 4, 128)
    poses = model.get_predictions(out)["bodypart"]["poses"]
    assert poses.shape == (1, 1, 4, 3)


# ------------------------------------------------------------------------ forward shapes


@pytest.mark.parametrize("width,height", [(256, 256), (192, 256)])
def test_rtmpose_forward_and_predictions(width, height):
    cfg = _config("rtmpose_s_TD_ma")
    RTMCCHead.update_input_size(cfg, (width, height))
    head_cfg = cfg["model"]["heads"]["bodypart"]
    assert head_cfg["in_featuremap_size"] == [height // 32, width // 32]
    torch.manual_seed(0)
    model = PoseModel.build(cfg["model"]).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, height, width))
    assert out["bodypart"]["x"].shape == (2, 4, 2 * width)
    assert out["bodypart"]["y"].shape == (2, 4, 2 * height)
    poses = model.get_predictions(out)["bodypart"]["poses"]
    assert poses.shape == (2, 1, 4, 3)
    assert ((poses[..., 0] >= 0) & (poses[..., 0] < width)).all()
    assert ((poses[..., 1] >= 0) & (poses[..., 1] < height)).all()
    assert ((poses[..., 2] > 0) & (poses[..., 2] <= 1)).all()
    # the head is built for one crop size and says so for another
    with pytest.raises(ValueError, match="update_input_size"):
        model(torch.randn(1, 3, height + 32, width))


@pytest.mark.parametrize("height,width", [(128, 128), (96, 160)])
def test_cspnext_bottom_up_forward_and_predictions(height, width):
    model = PoseModel.build(_config("cspnext_s_BU_sa")["model"]).eval()
    assert model.get_stride("bodypart") == 16.0
    with torch.no_grad():
        features = model.backbone(torch.randn(1, 3, height, width))
        out = model(torch.randn(1, 3, height, width))
    assert features.shape == (1, 512, height // 32, width // 32)
    h, w = 2 * (height // 32) + 1, 2 * (width // 32) + 1
    assert out["bodypart"]["heatmap"].shape == (1, 4, h, w)
    assert out["bodypart"]["locref"].shape == (1, 8, h, w)
    assert model.get_predictions(out)["bodypart"]["poses"].shape == (1, 1, 4, 3)


def test_cspnext_out_indices_and_freeze_bn():
    backbone = BACKBONES.build({"type": "CSPNeXt", "deepen_factor": 0.33, "widen_factor": 0.125,
                                "out_indices": (1, 2, 4), "freeze_bn_stats": True})
    feats = backbone(torch.randn(2, 3, 64, 64))
    assert [tuple(f.shape) for f in feats] == [(2, 16, 16, 16), (2, 32, 8, 8), (2, 128, 2, 2)]
    backbone.train()
    norm = backbone.stage1[0].norm
    assert isinstance(norm, nn.BatchNorm2d) and not norm.training
    before = norm.running_mean.clone()
    backbone(torch.randn(2, 3, 64, 64) * 3 + 1)
    torch.testing.assert_close(norm.running_mean, before)
    with pytest.raises(ValueError):
        CSPNeXt(arch="P7")


# --------------------------------------------------------------------- head internals


def test_gau_relative_bias_matches_the_reference_construction():
    gau = RTMCCBlock(num_token=5, in_token_dims=8, out_token_dims=8, s=4, use_rel_bias=True)
    n = 5
    # DeepLabCut / mmpose build the Toeplitz bias by padding, tiling and slicing w.
    t = F.pad(gau.w[: 2 * n - 1], [0, n]).repeat(n)[..., :-n].reshape(-1, n, 3 * n - 2)
    r = (2 * n - 1) // 2
    torch.testing.assert_close(gau.rel_pos_bias(n), t[..., r:-r])


def test_gau_forward_against_written_out_formula():
    torch.manual_seed(0)
    gau = RTMCCBlock(num_token=3, in_token_dims=8, out_token_dims=8, expansion_factor=2, s=4,
                     use_rel_bias=False).eval()
    x = torch.randn(2, 3, 8)
    xn = x / (x.norm(dim=-1, keepdim=True) * 8 ** -0.5) * gau.ln.g
    uv = F.silu(xn @ gau.uv.weight.T)
    u, v, base = uv[..., :16], uv[..., 16:32], uv[..., 32:]
    q = base * gau.gamma[0] + gau.beta[0]
    k = base * gau.gamma[1] + gau.beta[1]
    kernel = F.relu(q @ k.transpose(1, 2) / 2.0) ** 2
    expected = x * gau.res_scale.scale + (u * (kernel @ v)) @ gau.o.weight.T
    torch.testing.assert_close(gau(x), expected)
    # rotary encoding changes the output but keeps the shape
    gau.pos_enc = True
    assert gau(x).shape == x.shape and not torch.allclose(gau(x), expected)


def test_scale_norm():
    norm = ScaleNorm(4)
    x = torch.tensor([[3.0, 4.0, 0.0, 0.0]])
    torch.testing.assert_close(norm(x), x / 5.0 * 2.0)
    assert torch.isfinite(norm(torch.zeros(1, 4))).all()


def test_rtmpose_weight_init():
    torch.manual_seed(0)
    head = HEADS.build(_tiny_rtmpose_cfg()["heads"]["bodypart"])
    assert 0.0005 < head.final_layer.weight.std().item() < 0.002
    assert torch.count_nonzero(head.final_layer.bias) == 0
    assert 0.005 < head.cls_x.weight.std().item() < 0.02
    assert 0.005 < head.gau.uv.weight.std().item() < 0.02


# ---------------------------------------------------------------------------- predictor


def _dlc_simcc_reference(x: np.ndarray, y: np.ndarray, ratio: float, softmax: bool):
    """DeepLabCut's numpy decoding written out per keypoint (the behaviour to match)."""
    b, k, _ = x.shape
    out = np.zeros((b, 1, k, 3), dtype=np.float64)
    for i in range(b):
        for j in range(k):
            vx, vy = x[i, j].astype(np.float64), y[i, j].astype(np.float64)
            if softmax:
                vx = np.exp(vx - vx.max()); vx /= vx.sum()  # noqa: E702
                vy = np.exp(vy - vy.max()); vy /= vy.sum()  # noqa: E702
            score = min(vx.max(), vy.max())
            loc = (np.argmax(vx), np.argmax(vy)) if score > 0 else (-1, -1)
            out[i, 0, j] = (loc[0] / ratio, loc[1] / ratio, score)
    return out


def test_simcc_predictor_known_peaks():
    b, k, wx, wy = 2, 3, 40, 30
    x = torch.zeros(b, k, wx)
    y = torch.zeros(b, k, wy)
    peaks = {(0, 0): (7, 3), (0, 1): (39, 0), (0, 2): (0, 29), (1, 0): (12, 12),
             (1, 1): (20, 5), (1, 2): (33, 17)}
    for (i, j), (px, py) in peaks.items():
        x[i, j, px] = 0.02
        y[i, j, py] = 0.01 if (i, j) != (1, 1) else 0.03
        x[i, j, (px + 1) % wx] = 0.015  # a runner-up next to each peak
    sigma = (5.66, 4.0)
    out = SimCCPredictor(simcc_split_ratio=2.0, sigma=sigma, decode_beta=150.0)(
        32.0, {"x": x, "y": y})["poses"]
    assert out.shape == (b, 1, k, 3)
    for (i, j), (px, py) in peaks.items():
        assert out[i, 0, j, 0].item() == px / 2 and out[i, 0, j, 1].item() == py / 2
    # score = min over the axes of the sharpened softmax peaks; for (0, 0), both axes written out
    sx = torch.softmax(x[0, 0] * sigma[0] * 150.0, 0).max()
    sy = torch.softmax(y[0, 0] * sigma[1] * 150.0, 0).max()
    assert out[0, 0, 0, 2].item() == pytest.approx(min(sx.item(), sy.item()), rel=1e-6)
    ref = _dlc_simcc_reference((x * sigma[0] * 150).numpy(), (y * sigma[1] * 150).numpy(),
                               2.0, softmax=True)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-5, atol=1e-6)


def test_simcc_predictor_without_softmax_and_normalized():
    x = torch.tensor([[[0.1, 0.9, 0.2], [-0.3, -0.1, -0.2]]])
    y = torch.tensor([[[0.5, 0.4, 0.7, 0.1], [0.2, 0.6, 0.1, 0.0]]])
    out = SimCCPredictor(simcc_split_ratio=2.0, apply_softmax=False, sigma=1.0,
                         decode_beta=1.0)(1.0, {"x": x, "y": y})["poses"][0, 0]
    np.testing.assert_allclose(out[0].numpy(), [0.5, 1.0, 0.7], atol=1e-6)
    # best score <= 0: DeepLabCut sets the bins to -1, so the coordinates are -1 / ratio
    np.testing.assert_allclose(out[1].numpy(), [-0.5, -0.5, -0.1], atol=1e-6)
    ref = _dlc_simcc_reference(x.numpy(), y.numpy(), 2.0, softmax=False)
    np.testing.assert_allclose(out.numpy(), ref[0, 0], atol=1e-6)

    # normalize_outputs: clamp at 0, divide by the max where it exceeds 1
    x = torch.tensor([[[0.0, 4.0, 2.0]]])
    y = torch.tensor([[[0.3, -1.0]]])
    out = SimCCPredictor(simcc_split_ratio=1.0, apply_softmax=False, normalize_outputs=True)(
        1.0, {"x": x, "y": y})["poses"][0, 0, 0]
    np.testing.assert_allclose(out.numpy(), [1.0, 0.0, 0.3], atol=1e-6)


# ---------------------------------------------------------------------------- targets


def _loop_targets(keypoints: np.ndarray, size, sigma, ratio, normalize):
    """Gaussian SimCC labels written out per keypoint, DeepLabCut's rules."""
    b, n, k, _ = keypoints.shape
    wx, wy = round(size[0] * ratio), round(size[1] * ratio)
    tx, ty = np.zeros((b, n, k, wx)), np.zeros((b, n, k, wy))
    weights = np.zeros((b, n, k))
    for i in range(b):
        for m in range(n):
            for j in range(k):
                px, py, vis = keypoints[i, m, j]
                weights[i, m, j] = float(vis > 0)
                if vis < 0.5:
                    continue
                mx, my = np.around(px * ratio), np.around(py * ratio)
                if (mx - 3 * sigma[0] >= wx or my - 3 * sigma[1] >= wy
                        or mx + 3 * sigma[0] + 1 < 0 or my + 3 * sigma[1] + 1 < 0):
                    weights[i, m, j] = 0
                    continue
                tx[i, m, j] = np.exp(-((np.arange(wx) - mx) ** 2) / (2 * sigma[0] ** 2))
                ty[i, m, j] = np.exp(-((np.arange(wy) - my) ** 2) / (2 * sigma[1] ** 2))
    if normalize:
        tx /= sigma[0] * np.sqrt(2 * np.pi)
        ty /= sigma[1] * np.sqrt(2 * np.pi)
    return tx, ty, weights


@pytest.mark.parametrize("normalize", [False, True])
def test_simcc_targets_match_written_out_rules(normalize):
    size, sigma, ratio = (48, 32), (3.0, 2.5), 2.0
    keypoints = np.array([[[[10.2, 5.0, 2.0], [0.0, 31.9, 1.0], [12.25, 7.75, 1.0],
                            [60.0, 10.0, 2.0], [-20.0, 3.0, 1.0], [5.0, 5.0, 0.0]]],
                          [[[47.9, 0.1, 1.0], [np.nan, np.nan, -1.0], [24.0, 16.0, 0.3],
                            [49.0, 33.0, 1.0], [1.0, 1.0, 1.0], [2.0, 2.0, 1.0]]]],
                         dtype=np.float32)
    gen = SimCCGenerator(input_size=size, sigma=sigma, simcc_split_ratio=ratio,
                         normalize=normalize)
    outputs = {"x": torch.zeros(2, 6, 96), "y": torch.zeros(2, 6, 64)}
    targets = gen(32.0, outputs, {"keypoints": torch.from_numpy(keypoints)})
    tx, ty, w = _loop_targets(keypoints, size, sigma, ratio, normalize)
    assert targets["x"]["target"].shape == (2, 1, 6, 96)
    assert targets["y"]["target"].shape == (2, 1, 6, 64)
    np.testing.assert_allclose(targets["x"]["target"].numpy(), tx, atol=1e-6)
    np.testing.assert_allclose(targets["y"]["target"].numpy(), ty, atol=1e-6)
    np.testing.assert_array_equal(targets["x"]["weights"].numpy(), w)
    np.testing.assert_array_equal(targets["y"]["weights"].numpy(), w)
    # spot checks written by hand: peak bin round(10.2 * 2) = 20, 12.25 * 2 = 24.5 -> 24
    # (half to even), 60 px is far outside the 48 px crop -> weight 0, v = 0.3 -> weight 1
    # with an all-zero target
    assert targets["x"]["target"][0, 0, 0].argmax().item() == 20
    assert targets["x"]["target"][0, 0, 2].argmax().item() == 24
    assert targets["y"]["target"][0, 0, 2].argmax().item() == 16  # 15.5 -> 16
    assert w[0, 0, 3] == 0 and w[1, 0, 2] == 1 and targets["x"]["target"][1, 0, 2].sum() == 0


def test_simcc_targets_standard_smoothing():
    gen = SimCCGenerator(input_size=(8, 4), smoothing_type="standard", sigma=1.0,
                         simcc_split_ratio=1.0, label_smooth_weight=0.1)
    kpts = torch.tensor([[[[3.0, 2.0, 1.0], [9.0, 1.0, 1.0]]]])
    out = gen(1.0, {"x": torch.zeros(1, 2, 8), "y": torch.zeros(1, 2, 4)}, {"keypoints": kpts})
    expected_x = torch.full((8,), 0.1 / 7)
    expected_x[3] = 0.9
    torch.testing.assert_close(out["x"]["target"][0, 0, 0], expected_x)
    assert out["x"]["weights"][0, 0].tolist() == [1.0, 0.0]  # x = 9 is outside 8 bins
    with pytest.raises(ValueError):
        SimCCGenerator(input_size=(8, 8), smoothing_type="gaussian", label_smooth_weight=0.1)


# -------------------------------------------------------------------------------- loss


def test_kl_discrete_loss_values():
    torch.manual_seed(0)
    out = torch.randn(2, 3, 10)
    tgt = torch.rand(2, 1, 3, 10)
    weights = torch.tensor([[[1.0, 0.0, 1.0]], [[1.0, 1.0, 0.5]]])
    loss = CRITERIONS.build({"type": "KLDiscreteLoss", "beta": 10.0, "label_softmax": True})
    value = loss(out, tgt, weights)
    # written out: KL(p || q) per keypoint, mean over bins, weighted, summed, / K
    p = torch.softmax(tgt.reshape(6, 10) * 10.0, 1)
    logq = torch.log_softmax(out.reshape(6, 10) * 10.0, 1)
    per_kpt = (p * (p.log() - logq)).mean(1)
    assert value.item() == pytest.approx((per_kpt * weights.reshape(-1)).sum().item() / 3,
                                         rel=1e-5)
    # perfect prediction: zero; weights ignored when use_target_weight is off
    assert loss(tgt.reshape(2, 3, 10), tgt, weights).item() == pytest.approx(0.0, abs=1e-6)
    unweighted = KLDiscreteLoss(beta=10.0, label_softmax=True, use_target_weight=False)
    assert unweighted(out, tgt, weights).item() == pytest.approx(per_kpt.sum().item() / 3,
                                                                 rel=1e-5)
    # mmpose's spelling builds the same loss
    assert isinstance(CRITERIONS.build({"type": "KLDiscretLoss"}), KLDiscreteLoss)


# ------------------------------------------------------------------ training and export


def test_tiny_rtmpose_trains_with_falling_loss():
    torch.manual_seed(0)
    cfg = _tiny_rtmpose_cfg(input_size=(64, 64), num_kpts=2)
    model = PoseModel.build(cfg)
    model.train()
    images = torch.randn(4, 3, 64, 64)
    keypoints = torch.tensor([[[[10.0, 20.0, 1.0], [40.0, 50.0, 1.0]]],
                              [[[30.0, 12.0, 1.0], [55.0, 5.0, 1.0]]],
                              [[[5.0, 60.0, 1.0], [20.0, 20.0, 0.0]]],
                              [[[33.0, 33.0, 1.0], [8.0, 44.0, 1.0]]]])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        outputs = model(images)
        targets = model.get_target(outputs, {"keypoints": keypoints})
        loss = model.get_loss(outputs, targets)["total_loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.5 * losses[0], losses
    assert set(model.get_loss(outputs, targets)) == {"total_loss", "bodypart_x", "bodypart_y"}
    # the fitted model decodes its training keypoints near the labels
    model.eval()
    with torch.no_grad():
        poses = model.get_predictions(model(images))["bodypart"]["poses"]
    labelled = keypoints[..., 2] > 0
    error = (poses[..., :2] - keypoints[..., :2]).norm(dim=-1)[labelled]
    assert error.median().item() < 8.0, error


class _HeadAndPredictor(nn.Module):
    def __init__(self, model: PoseModel):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = self.model(x)
        return self.model.get_predictions(outputs)["bodypart"]["poses"]


def test_rtmpose_onnx_export_matches_onnxruntime(tmp_path):
    torch.manual_seed(0)
    model = PoseModel.build(_tiny_rtmpose_cfg(input_size=(64, 96), num_kpts=3)).eval()
    wrapper = _HeadAndPredictor(model).eval()
    path = tmp_path / "rtmpose.onnx"
    torch.onnx.export(wrapper, (torch.randn(1, 3, 96, 64),), str(path), dynamo=False,
                      opset_version=17, input_names=["image"], output_names=["poses"],
                      dynamic_axes={"image": {0: "batch"}, "poses": {0: "batch"}})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = torch.randn(3, 3, 96, 64)
    with torch.no_grad():
        expected = wrapper(images).numpy()
    got = session.run(None, {"image": images.numpy()})[0]
    assert got.shape == expected.shape == (3, 1, 3, 3)
    np.testing.assert_array_equal(got[..., :2], expected[..., :2])
    np.testing.assert_allclose(got[..., 2], expected[..., 2], rtol=1e-4, atol=1e-5)
