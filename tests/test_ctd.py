"""Conditional top-down (CTD) models: CondPreNet / HRNetCoAM backbones, the condition encoders and
PoseModel's ``cond_kpts`` path. DeepLabCut 3 state_dict layout, outputs with conditions, and the
condition heatmaps checked on hand-made keypoints and against an OpenCV rendition of DeepLabCut's
numpy encoder."""
from __future__ import annotations

import copy
import math
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import torch

from dlc_train.config import available_net_types, make_pytorch_pose_config
from dlc_train.models import BACKBONES, PoseModel
from dlc_train.models.backbones.ctd import CondPreNet, HRNetCoAM
from dlc_train.models.modules.coam import DAModule, resize_antialiased
from dlc_train.models.modules.conditions import (KEYPOINT_ENCODERS, ColoredKeypointEncoder,
                                                 StackedKeypointEncoder, gaussian_kernel_1d,
                                                 rainbow_colors)

DLC3 = Path(__file__).resolve().parents[1].parent / "shared" / "dlc3"
K = 4  # bodyparts a..d of the reference key files
LOCREF_STD = 7.2801


# -- model configs, DeepLabCut's config/ctd templates for 4 bodyparts ---------------------------

def _encoder_cfg() -> dict:
    return {"type": "StackedKeypointEncoder", "num_joints": K, "kernel_size": [15, 15]}


def _hrnet_head(channels: int = 32) -> dict:
    def branch(out: int) -> dict:
        return {"channels": [channels], "kernel_size": [], "strides": [],
                "final_conv": {"out_channels": out, "kernel_size": 1}}
    return {"type": "HeatmapHead", "weight_init": "normal",
            "predictor": {"type": "HeatmapPredictor", "apply_sigmoid": False,
                          "clip_scores": True, "location_refinement": True,
                          "locref_std": LOCREF_STD},
            "target_generator": {"type": "HeatmapGaussianGenerator", "num_heatmaps": K,
                                 "pos_dist_thresh": 17, "heatmap_mode": "KEYPOINT",
                                 "generate_locref": True, "locref_std": LOCREF_STD},
            "criterion": {"heatmap": {"type": "WeightedMSECriterion", "weight": 1.0},
                          "locref": {"type": "WeightedHuberCriterion", "weight": 0.05}},
            "heatmap_config": branch(K), "locref_config": branch(2 * K)}


def _rtmcc_head() -> dict:
    return {"type": "RTMCCHead", "weight_init": "RTMPose",
            "target_generator": {"type": "SimCCGenerator", "input_size": [256, 256],
                                 "smoothing_type": "gaussian", "sigma": [5.66, 5.66],
                                 "simcc_split_ratio": 2.0, "label_smooth_weight": 0.0,
                                 "normalize": False},
            "criterion": {axis: {"type": "KLDiscreteLoss", "use_target_weight": True,
                                 "beta": 10.0, "label_softmax": True} for axis in ("x", "y")},
            "predictor": {"type": "SimCCPredictor", "simcc_split_ratio": 2.0},
            "input_size": [256, 256], "in_channels": 512, "out_channels": K,
            "in_featuremap_size": [8, 8], "simcc_split_ratio": 2.0, "final_layer_kernel_size": 7,
            "gau_cfg": {"hidden_dims": 256, "s": 128, "expansion_factor": 2,
                        "dropout_rate": 0.0, "drop_path": 0.0, "act_fn": "SiLU",
                        "use_rel_bias": False, "pos_enc": False}}
from conftest import reference_keys

def _reference_keys(name: str) -> dict[str, tuple[int, ...]]:
    return dict(reference_keys(name))

pytestmark = pytest.mark.usefixtures("one_thread")



def _model_cfg(net_type: str) -> dict:
    if net_type == "ctd_prenet_hrnet_w32":
        backbone = {"type": "CondPreNet", "kpt_encoder": _encoder_cfg(), "img_size": [256, 256],
                    "backbone": {"type": "HRNet", "model_name": "hrnet_w32", "pretrained": False,
                                 "freeze_bn_stats": False, "freeze_bn_weights": False,
                                 "interpolate_branches": False,
                                 "increased_channel_count": False}}
        return {"backbone": backbone, "backbone_output_channels": 32,
                "heads": {"bodypart": _hrnet_head()}}
    if net_type == "ctd_prenet_rtmpose_s":
        backbone = {"type": "CondPreNet", "kpt_encoder": _encoder_cfg(), "img_size": [256, 256],
                    "backbone": {"type": "CSPNeXt", "model_name": "cspnext_s",
                                 "freeze_bn_stats": False, "freeze_bn_weights": False,
                                 "deepen_factor": 0.33, "widen_factor": 0.5}}
        return {"backbone": backbone, "backbone_output_channels": 512,
                "heads": {"bodypart": _rtmcc_head()}}
    if net_type == "ctd_coam_w32":
        backbone = {"type": "HRNetCoAM", "base_model_name": "hrnet_w32", "pretrained": False,
                    "coam_modules": [2], "channel_att_only": False, "att_heads": 1,
                    "kpt_encoder": _encoder_cfg(), "img_size": [256, 256]}
        return {"backbone": backbone, "backbone_output_channels": 32,
                "heads": {"bodypart": _hrnet_head()}}
    raise KeyError(net_type)


def _project_config() -> dict:
    return {"multianimalproject": True, "multianimalbodyparts": list("abcd"),
            "individuals": ["ind1", "ind2"], "uniquebodyparts": [], "bodyparts": "MULTI!"}


_CACHE: dict[str, PoseModel] = {}


def _model(net_type: str) -> PoseModel:
    """Built once per session (HRNet-w32 builds take ~0.5 s); tests deep-copy to mutate."""
    if net_type not in _CACHE:
        _CACHE[net_type] = PoseModel.build(_model_cfg(net_type)).eval()
    return _CACHE[net_type]


def _conditions(batch: int = 1, size: tuple[int, int] = (256, 256), seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(batch, 1, K, 2, generator=g) * torch.tensor([size[1] - 1, size[0] - 1]) + 1
    score = torch.rand(batch, 1, K, 1, generator=g) * 0.9 + 0.1
    return torch.cat([xy, score], dim=-1)  # DeepLabCut's context layout (B, 1, K, 3)


# -- state_dict layout ---------------------------------------------------------------------------

@pytest.mark.parametrize("net_type", ["ctd_prenet_hrnet_w32", "ctd_prenet_rtmpose_s",
                                      "ctd_coam_w32"])
def test_state_dict_matches_deeplabcut(net_type):
    reference = _reference_keys(f"{net_type}_BU_ma")
    model = _model(net_type)
    ours = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert dict(ours) == reference
    # The backbone (ours to keep in DeepLabCut's order) is also in the same key order.
    assert ([k for k, _ in ours if k.startswith("backbone.")]
            == [k for k in reference if k.startswith("backbone.")])


@pytest.mark.parametrize("net_type", ["ctd_prenet_hrnet_w32", "ctd_coam_w32",
                                      "ctd_prenet_rtmpose_s"])
def test_project_config_builds_the_same_model(net_type):
    """The config package's ctd_* templates (owned elsewhere) build this layout too."""
    assert net_type in available_net_types()
    cfg = make_pytorch_pose_config(_project_config(), "/tmp/ctd/pytorch_config.yaml",
                                   net_type=net_type)
    model = PoseModel.build(cfg["model"])
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == _reference_keys(f"{net_type}_BU_ma")


def test_strict_load_gives_the_same_outputs():
    source = _model("ctd_prenet_hrnet_w32")
    state = {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v
             for k, v in source.state_dict().items()}  # perturbed: not the init values
    a = copy.deepcopy(source)
    b = PoseModel.build(_model_cfg("ctd_prenet_hrnet_w32")).eval()
    a.load_state_dict(state, strict=True)
    b.load_state_dict(state, strict=True)
    x, cond = torch.randn(1, 3, 128, 96), _conditions(size=(128, 96))
    with torch.no_grad():
        out_a, out_b = a(x, cond_kpts=cond), b(x, cond_kpts=cond)
    assert torch.equal(out_a["bodypart"]["heatmap"], out_b["bodypart"]["heatmap"])


# -- forward with conditions --------------------------------------------------------------------

@pytest.mark.parametrize("size", [(256, 256), (160, 96)])
def test_prenet_hrnet_forward_two_sizes(size):
    model = _model("ctd_prenet_hrnet_w32")
    x, cond = torch.randn(2, 3, *size), _conditions(2, size)
    with torch.no_grad():
        out = model(x, cond_kpts=cond)
    assert out["bodypart"]["heatmap"].shape == (2, K, size[0] // 4, size[1] // 4)
    assert out["bodypart"]["locref"].shape == (2, 2 * K, size[0] // 4, size[1] // 4)
    poses = model.get_predictions(out)["bodypart"]["poses"]
    assert poses.shape == (2, 1, K, 3)
    assert bool(torch.isfinite(poses).all())
    assert bool(((poses[..., 2] >= 0) & (poses[..., 2] <= 1)).all())  # clipped scores


def test_conditions_change_the_output_and_are_per_sample():
    model = copy.deepcopy(_model("ctd_prenet_hrnet_w32"))
    # Larger pre-net weights than DeepLabCut's N(0, 0.001) init, so conditions visibly matter.
    torch.nn.init.normal_(model.backbone.cond_preNet[0].weight, std=0.05)
    size = (96, 64)
    x = torch.randn(2, 3, *size)
    c1, c2 = _conditions(2, size, seed=1), _conditions(2, size, seed=2)
    with torch.no_grad():
        both = model(x, cond_kpts=c1)["bodypart"]["heatmap"]
        other = model(x, cond_kpts=c2)["bodypart"]["heatmap"]
        second = model(x[1:], cond_kpts=c1[1:])["bodypart"]["heatmap"]
    # An untrained HRNet's outputs are large (~1e4) and noisy in float32: compare to their scale.
    scale = float(both.abs().max())
    assert float((both - other).abs().max()) > 1e-2 * scale
    # Encoding (incl. its max-normalization) is per sample: batching does not mix samples.
    assert float((both[1:] - second).abs().max()) < 1e-4 * scale


def test_rtmpose_prenet_forward():
    model = _model("ctd_prenet_rtmpose_s")
    with torch.no_grad():
        out = model(torch.randn(1, 3, 256, 256), cond_kpts=_conditions(1))
    assert out["bodypart"]["x"].shape == (1, K, 512) and out["bodypart"]["y"].shape == (1, K, 512)
    assert model.get_predictions(out)["bodypart"]["poses"].shape == (1, 1, K, 3)


def test_coam_forward_and_fixed_input_size():
    model = _model("ctd_coam_w32")
    with torch.no_grad():
        out = model(torch.randn(1, 3, 256, 256), cond_kpts=_conditions(1)[:, 0])  # (B, K, 3)
        assert out["bodypart"]["heatmap"].shape == (1, K, 64, 64)
        assert model.get_predictions(out)["bodypart"]["poses"].shape == (1, 1, K, 3)
        # Channel attention's Linear is (h*w x h*w) for img_size: another size is refused.
        with pytest.raises(ValueError, match="img_size"):
            model(torch.randn(1, 3, 192, 192), cond_kpts=_conditions(1, (192, 192)))


def test_conditional_backbones_require_conditions():
    model = _model("ctd_prenet_hrnet_w32")
    with pytest.raises(ValueError, match="cond_kpts"):
        model(torch.randn(1, 3, 64, 64))
    with pytest.raises(ValueError, match="4, 2\\|3"):
        model(torch.randn(1, 3, 64, 64), cond_kpts=torch.zeros(1, 3, 3))  # 3 keypoints, not 4


def test_small_coam_positions_and_self_attention():
    """CoAM before stage 2 and after stage 4 (stride-4 branch), self-attention before stage 4."""
    backbone = BACKBONES.build({"type": "HRNetCoAM", "base_model_name": "hrnet_w18_small",
                                "pretrained": False, "coam_modules": [1, 4],
                                "selfatt_coam_modules": [3], "img_size": [64, 96],
                                "kpt_encoder": {"type": "ColoredKeypointEncoder",
                                                "num_joints": K}}).eval()
    assert isinstance(backbone, HRNetCoAM)
    assert backbone.coam_stages[1] is None and backbone.coam_stages[2] is None
    assert len(backbone.coam_stages[0].att_layers) == 2
    assert len(backbone.coam_stages[3].att_layers) == 1
    assert len(backbone.selfatt_coam_stages[2].att_layers) == 4
    # colored conditions: 3 channels into the condition convs; channel attention sized h*w
    assert backbone.coam_stages[0].att_layers[0].position_attention_module.cnn_cond.in_channels == 3
    fc_o = backbone.coam_stages[0].att_layers[1].channel_attention_module.pa.fc_o
    assert fc_o.in_features == 8 * 12  # stride 8 of 64 x 96
    with torch.no_grad():
        y = backbone(torch.randn(2, 3, 64, 96), cond_kpts=_conditions(2, (64, 96)))
    assert y.shape == (2, 16, 16, 24)


def test_damodule_matches_a_direct_computation():
    """Dual attention with one head, written out with einsum (eval: no dropout)."""
    torch.manual_seed(0)
    c, cc, h, w = 6, 3, 4, 5
    module = DAModule(d_model=c, d_cond=cc, spatial_size=h * w).eval()
    for p in module.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x, cond = torch.randn(2, c, h, w), torch.randn(2, cc, h, w)
    with torch.no_grad():
        got = module(x, cond)
        ca, pa = module.channel_attention_module, module.position_attention_module
        # channel attention: softmax over channels of <cond feature_i, image feature_j> / sqrt(hw)
        yi = ca.cnn(x).flatten(2)                                   # (B, C, hw)
        yc = ca.cnn_cond(cond).flatten(2)
        att = torch.softmax(torch.einsum("bin,bjn->bij", yc, yi) / math.sqrt(h * w), dim=-1)
        c_out = ca.pa.fc_o(torch.einsum("bij,bjn->bin", att, yi)).view(2, c, h, w)
        # position attention: condition pixels query image pixels, sqrt(C) scaling
        fi = pa.cnn(x).flatten(2).transpose(1, 2)                  # (B, hw, C)
        fc = pa.cnn_cond(cond).flatten(2).transpose(1, 2)          # (B, hw, Cc)
        q, k, v = pa.pa.fc_q(fc), pa.pa.fc_k(fi), pa.pa.fc_v(fi)
        att = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(c), dim=-1)
        p_out = pa.pa.fc_o(att @ v).transpose(1, 2).reshape(2, c, h, w)
    torch.testing.assert_close(got, x + p_out + c_out)


# -- condition encoding --------------------------------------------------------------------------

def test_stacked_encoder_peaks_on_hand_made_keypoints():
    enc = KEYPOINT_ENCODERS.build({"type": "StackedKeypointEncoder", "num_joints": 3,
                                   "kernel_size": [15, 15], "img_size": [48, 64]})
    kpts = torch.tensor([[[20.7, 10.2, 0.9],     # pixel (row 9, col 19): int() - 1
                          [40.0, 30.0, 0.0],     # score 0: not drawn
                          [70.0, 5.0, 0.5]]])    # x > width of img_size: not drawn
    maps = enc(kpts, (48, 64))
    assert maps.shape == (1, 3, 48, 64)
    assert maps[0, 1].abs().max() == 0 and maps[0, 2].abs().max() == 0
    peak = maps[0, 0]
    assert divmod(int(peak.argmax()), 64) == (9, 19)
    assert float(peak.max()) == pytest.approx(255.0, abs=1e-3)
    # OpenCV's sigma for a 15-tap kernel: 0.3 * ((15 - 1) / 2 - 1) + 0.8 = 2.6
    ratio = math.exp(-1 / (2 * 2.6 ** 2))
    assert float(peak[9, 20]) == pytest.approx(255 * ratio, rel=1e-4)
    assert float(peak[11, 19]) == pytest.approx(255 * ratio ** 4, rel=1e-4)


def test_stacked_encoder_normalizes_per_sample_over_all_channels():
    enc = StackedKeypointEncoder(num_joints=2, img_size=(40, 40))
    # keypoint 0 at row 0 (border: the reflected blur sums two taps there, a higher peak than
    # keypoint 1 in the middle), so keypoint 1's channel stays below 255.
    kpts = torch.tensor([[[20.0, 2.0, 1.0], [20.0, 20.0, 1.0]],
                         [[0.0, 0.0, 0.0], [0.0, 0.0, -1.0]]])
    maps = enc(kpts, (40, 40))
    assert float(maps[0].max()) == pytest.approx(255.0, abs=1e-3)
    assert float(maps[0, 0].max()) > float(maps[0, 1].max()) + 1.0
    assert maps[1].abs().max() == 0  # nothing visible: all zero, no NaN from 0 / 0


def test_encoder_keeps_deeplabcut_edge_cases():
    enc = StackedKeypointEncoder(num_joints=2, img_size=(32, 32))
    kpts = torch.tensor([[[0.5, 10.0, 1.0],            # int(0.5) - 1 = -1: the last column
                          [float("nan"), 20.0, 1.0]]])  # NaN x -> 0 before the bounds check
    maps = enc(kpts, (32, 32))
    assert divmod(int(maps[0, 0].argmax()), 32) == (9, 31)
    assert divmod(int(maps[0, 1].argmax()), 32) == (19, 31)


def _dlc_encoder_reference(kpts: np.ndarray, size: tuple[int, int], img_size: tuple[int, int],
                           colors: np.ndarray | None = None) -> np.ndarray:
    """DeepLabCut's encoders re-expressed with numpy + OpenCV: (B, K, 3) -> (B, C, H, W)."""
    k = kpts.astype(np.float64).copy()
    k[kpts[..., 2] <= 0] = 0
    k[k[..., 2] > 0, 2] = 2
    k = np.nan_to_num(k)
    oob = (k[..., 2] > 0) & ((k[..., 0] < 0) | (k[..., 0] > img_size[1])
                             | (k[..., 1] < 0) | (k[..., 1] > img_size[0]))
    k[oob] = 0
    k = k.astype(int)
    channels = k.shape[1] if colors is None else 3
    out = np.zeros((k.shape[0], size[0], size[1], channels))
    for b, pose in enumerate(k):
        for j, (x, y, vis) in enumerate(pose):
            if vis > 0:
                if colors is None:
                    out[b, y - 1, x - 1, j] = 255
                else:
                    out[b, y - 1, x - 1] = colors[j]
        blurred = cv2.GaussianBlur(out[b], (15, 15), sigmaX=0).reshape(size[0], size[1], -1)
        peak = blurred.max()
        out[b] = blurred / (peak / 255) if peak > 0 else blurred
    return out.transpose(0, 3, 1, 2)


def _random_keypoints(seed: int, num: int, size: tuple[int, int]) -> np.ndarray:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(-4, 1, (3, num, 2)) + rng.uniform(0, 1, (3, num, 2)) * [size[1], size[0]]
    score = rng.uniform(-0.3, 1.0, (3, num, 1))
    kpts = np.concatenate([xy, score], axis=-1)
    kpts[0, 0, :2] = [1.5, 0.7]               # near the top-left corner (reflected border)
    kpts[1, 1] = [size[1], size[0], 0.8]      # exactly on the far edge (kept by DeepLabCut)
    kpts[2, 2, 2] = np.nan
    return kpts


def test_stacked_encoder_matches_deeplabcut_reference():
    size = (72, 88)
    kpts = _random_keypoints(0, 6, size)
    ours = StackedKeypointEncoder(num_joints=6, img_size=size)(torch.from_numpy(kpts), size)
    ref = _dlc_encoder_reference(kpts, size, size)
    np.testing.assert_allclose(ours.numpy(), ref, atol=2e-3)


def test_colored_encoder_matches_deeplabcut_reference():
    size = (64, 80)
    kpts = _random_keypoints(1, 5, size)
    enc = ColoredKeypointEncoder(num_joints=5, img_size=size)
    assert enc.num_channels == 3
    ours = enc(torch.from_numpy(kpts), size)
    ref = _dlc_encoder_reference(kpts, size, size, colors=np.array(rainbow_colors(5)))
    np.testing.assert_allclose(ours.numpy(), ref, atol=2e-3)


def test_rainbow_colors_are_matplotlibs():
    # matplotlib.colormaps["rainbow"] at linspace(0, 256, n, dtype=int), as DeepLabCut samples it
    # (values taken from matplotlib 3.x).
    assert rainbow_colors(4) == [(127, 0, 255), (42, 220, 220), (212, 220, 127), (255, 0, 0)]
    assert rainbow_colors(3) == [(127, 0, 255), (128, 254, 179), (255, 0, 0)]
    assert rainbow_colors(5)[1] == (0, 180, 235) and rainbow_colors(5)[3] == (255, 178, 96)


@pytest.mark.parametrize("size", [3, 5, 7, 15, 21])
def test_gaussian_kernel_is_opencvs(size):
    expected = cv2.getGaussianKernel(size, 0, ktype=cv2.CV_64F).ravel()
    np.testing.assert_allclose(gaussian_kernel_1d(size).numpy(), expected, atol=1e-12)


def test_encoder_adds_no_state_dict_keys():
    backbone = CondPreNet(kpt_encoder=_encoder_cfg(),
                          backbone={"type": "HRNet", "model_name": "hrnet_w18_small"})
    assert not any(k.startswith("cond_enc") for k in backbone.state_dict())
    assert backbone.cond_enc.img_size == (256, 256)  # the backbone's img_size default
    assert backbone.stride == 4


@pytest.mark.parametrize("src, dst", [((256, 256), (64, 64)), ((256, 256), (16, 16)),
                                      ((100, 70), (33, 17)), ((20, 30), (40, 45))])
def test_coam_condition_resize_is_antialiased_bilinear(src, dst):
    """CoAM resizes conditions with matrices (exportable); same as torchvision's resize."""
    x = torch.rand(2, 3, *src, generator=torch.Generator().manual_seed(0)) * 255
    expected = torch.nn.functional.interpolate(x, size=dst, mode="bilinear",
                                               align_corners=False, antialias=True)
    torch.testing.assert_close(resize_antialiased(x, dst), expected, atol=1e-3, rtol=1e-5)


@pytest.mark.parametrize("backbone_cfg", [
    {"type": "CondPreNet", "kpt_encoder": {"type": "StackedKeypointEncoder", "num_joints": K},
     "backbone": {"type": "HRNet", "model_name": "hrnet_w18_small"}},
    {"type": "HRNetCoAM", "base_model_name": "hrnet_w18_small", "pretrained": False,
     "coam_modules": [2], "img_size": [64, 64],
     "kpt_encoder": {"type": "ColoredKeypointEncoder", "num_joints": K}},
], ids=["prenet", "coam"])
def test_conditional_backbones_export_to_onnx(backbone_cfg, tmp_path):
    """Condition encoding is tensor code: frames + keypoints in, features out, in one graph."""
    backbone = BACKBONES.build(backbone_cfg).eval()
    x = torch.randn(1, 3, 64, 64)
    cond = torch.tensor([[[10.0, 20.0, 1.0], [30.5, 40.2, 0.7], [0.0, 0.0, 0.0],
                          [50.0, 5.0, 0.3]]])
    path = tmp_path / "ctd.onnx"
    torch.onnx.export(backbone, (x, cond), str(path), input_names=["image", "cond_kpts"],
                      opset_version=17, dynamo=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": x.numpy(), "cond_kpts": cond.numpy()})[0]
    with torch.no_grad():
        expected = backbone(x, cond_kpts=cond).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4 * max(1.0, np.abs(expected).max()))
