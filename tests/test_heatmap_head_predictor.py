"""HeatmapHead (DeconvModule) shapes and keys; HeatmapPredictor decoding and ONNX export."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from dlc_train.models import HEADS, PoseModel
from dlc_train.models.heads.simple_head import DeconvModule, HeatmapHead
from dlc_train.models.predictors.heatmap import HeatmapPredictor

STD = 7.2801


def head_cfg(in_channels: int, num_kpts: int, top_down: bool = False,
             weight_init: str | None = "normal") -> dict:
    if top_down:
        branch = lambda out: {"channels": [in_channels], "kernel_size": [], "strides": [],  # noqa
                              "final_conv": {"out_channels": out, "kernel_size": 1}}
    else:
        branch = lambda out: {"channels": [in_channels, out], "kernel_size": [3],  # noqa
                              "strides": [2]}
    return {
        "type": "HeatmapHead", "weight_init": weight_init,
        "predictor": {"type": "HeatmapPredictor", "apply_sigmoid": False, "clip_scores": True,
                      "location_refinement": True, "locref_std": STD},
        "target_generator": {"type": "HeatmapGaussianGenerator", "num_heatmaps": num_kpts,
                             "pos_dist_thresh": 17, "generate_locref": True, "locref_std": STD},
        "criterion": {"heatmap": {"type": "WeightedMSECriterion", "weight": 1.0},
                      "locref": {"type": "WeightedHuberCriterion", "weight": 0.05}},
        "heatmap_config": branch(num_kpts),
        "locref_config": branch(2 * num_kpts),
    }


# ----------------------------------------------------------------------------- head


def test_bottom_up_head_shapes_keys_and_stride():
    head = HEADS.build(head_cfg(16, 4))
    assert isinstance(head, HeatmapHead)
    assert head.stride == 0.5
    keys = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    assert keys == {"heatmap_head.deconv_layers.0.weight": (16, 4, 3, 3),
                    "heatmap_head.deconv_layers.0.bias": (4,),
                    "locref_head.deconv_layers.0.weight": (16, 8, 3, 3),
                    "locref_head.deconv_layers.0.bias": (8,)}
    out = head(torch.randn(2, 16, 5, 7))
    # kernel 3, stride 2, no padding: h -> 2h + 1 (DeepLabCut's geometry)
    assert out["heatmap"].shape == (2, 4, 11, 15)
    assert out["locref"].shape == (2, 8, 11, 15)


def test_top_down_head_final_conv():
    head = HEADS.build(head_cfg(16, 4, top_down=True))
    assert head.stride == 1.0
    assert set(head.state_dict()) == {"heatmap_head.final_conv.weight",
                                      "heatmap_head.final_conv.bias",
                                      "locref_head.final_conv.weight",
                                      "locref_head.final_conv.bias"}
    out = head(torch.randn(1, 16, 6, 5))
    assert out["heatmap"].shape == (1, 4, 6, 5) and out["locref"].shape == (1, 8, 6, 5)


def test_deconv_stack_relu_between_not_after():
    module = DeconvModule(channels=[8, 6, 3], kernel_size=[4, 3], strides=[2, 2])
    kinds = [type(m) for m in module.deconv_layers]
    assert kinds == [nn.ConvTranspose2d, nn.ReLU, nn.ConvTranspose2d]
    assert module.stride == 4
    out = module(torch.randn(1, 8, 3, 3))
    # (3 - 1) * 2 + 4 = 8, then (8 - 1) * 2 + 3 = 17; the last layer can go negative
    assert out.shape == (1, 3, 17, 17)
    with pytest.raises(ValueError):
        DeconvModule(channels=[8, 6], kernel_size=[3, 3], strides=[2])


def test_weight_init_normal_and_stride_mismatch():
    torch.manual_seed(0)
    head = HEADS.build(head_cfg(64, 4))
    w = head.heatmap_head.deconv_layers[0].weight
    assert 0.0005 < w.std().item() < 0.002
    assert torch.count_nonzero(head.heatmap_head.deconv_layers[0].bias) == 0
    head = HEADS.build({**head_cfg(64, 4), "weight_init": {"type": "normal", "std": 0.01}})
    assert 0.005 < head.heatmap_head.deconv_layers[0].weight.std().item() < 0.02
    cfg = head_cfg(8, 2)
    cfg["locref_config"] = {"channels": [8, 4], "kernel_size": [3], "strides": [1]}
    with pytest.raises(ValueError, match="upsample alike"):
        HEADS.build(cfg)


# ------------------------------------------------------------------------ predictor


def test_predictor_known_peaks_and_locref():
    b, k, h, w, stride = 2, 3, 5, 7, 8.0
    heatmap = torch.zeros(b, k, h, w)
    locref = torch.zeros(b, 2 * k, h, w)
    peaks = {(0, 0): (1, 2, 0.9), (0, 1): (4, 6, 0.7), (0, 2): (0, 0, 0.3),
             (1, 0): (3, 1, 0.8), (1, 1): (2, 5, 1.4), (1, 2): (4, 0, -0.2)}
    offsets = {(0, 0): (0.5, -0.25), (0, 1): (-1.0, 0.1), (1, 1): (0.2, 0.4)}
    heatmap[1, 2] = -1.0  # all-negative map: the peak is still found
    for (bi, ki), (row, col, value) in peaks.items():
        heatmap[bi, ki, row, col] = value
        ox, oy = offsets.get((bi, ki), (0.0, 0.0))
        locref[bi, 2 * ki, row, col] = ox
        locref[bi, 2 * ki + 1, row, col] = oy
        locref[bi, 2 * ki, (row + 1) % h, col] = 9.0  # decoys next to the peak
    out = HeatmapPredictor(apply_sigmoid=False, clip_scores=False, locref_std=STD)(
        stride, {"heatmap": heatmap, "locref": locref})["poses"]
    assert out.shape == (b, 1, k, 3)
    for (bi, ki), (row, col, value) in peaks.items():
        ox, oy = offsets.get((bi, ki), (0.0, 0.0))
        expected = [col * 8 + 4 + ox * STD, row * 8 + 4 + oy * STD, value]
        np.testing.assert_allclose(out[bi, 0, ki].numpy(), expected, rtol=0, atol=1e-5)
    # exact numbers for one keypoint, written out: col 2, row 1, offsets (0.5, -0.25)
    np.testing.assert_allclose(out[0, 0, 0].numpy(), [20 + 3.64005, 12 - 1.820025, 0.9],
                               atol=1e-5)

    clipped = HeatmapPredictor(apply_sigmoid=False, clip_scores=True)(
        stride, {"heatmap": heatmap, "locref": locref})["poses"]
    assert clipped[1, 0, 1, 2] == 1.0 and clipped[1, 0, 2, 2] == 0.0
    sig = HeatmapPredictor(apply_sigmoid=True, location_refinement=False)(
        stride, {"heatmap": heatmap})["poses"]
    np.testing.assert_allclose(sig[0, 0, 0].numpy(), [20, 12, 1 / (1 + np.exp(-0.9))],
                               atol=1e-6)


def test_predictor_first_maximum_wins():
    heatmap = torch.zeros(1, 1, 4, 4)
    heatmap[0, 0, 2, 1] = 1.0
    heatmap[0, 0, 1, 3] = 1.0  # earlier in row-major order
    heatmap[0, 0, 3, 0] = 1.0
    out = HeatmapPredictor(apply_sigmoid=False, location_refinement=False)(
        4.0, {"heatmap": heatmap})["poses"]
    assert out[0, 0, 0, :2].tolist() == [3 * 4 + 2, 1 * 4 + 2]


def _loop_reference(stride, heatmap, locref, std):
    """DeepLabCut's decoding, written the slow way: (h, w, K) argmax, (h, w, K, 2) locref."""
    b, k, h, w = heatmap.shape
    hm = heatmap.permute(0, 2, 3, 1).numpy()
    lr = locref.permute(0, 2, 3, 1).reshape(b, h, w, k, 2).numpy()
    poses = np.zeros((b, 1, k, 3), dtype=np.float64)
    for bi in range(b):
        for ki in range(k):
            row, col = np.unravel_index(np.argmax(hm[bi, :, :, ki]), (h, w))
            poses[bi, 0, ki] = [col * stride + stride / 2 + lr[bi, row, col, ki, 0] * std,
                                row * stride + stride / 2 + lr[bi, row, col, ki, 1] * std,
                                hm[bi, row, col, ki]]
    return poses


def test_predictor_matches_loop_reference_on_random_maps():
    torch.manual_seed(0)
    heatmap, locref = torch.randn(3, 5, 9, 11), torch.randn(3, 10, 9, 11)
    out = HeatmapPredictor(apply_sigmoid=False)(4.0, {"heatmap": heatmap, "locref": locref})
    np.testing.assert_allclose(out["poses"].numpy(), _loop_reference(4.0, heatmap, locref, STD),
                               rtol=1e-5, atol=1e-4)


# --------------------------------------------------------------------------- export


class PoseWithDecode(nn.Module):
    def __init__(self, model: PoseModel):
        super().__init__()
        self.model = model
        self.stride = model.get_stride("bodypart")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = self.model(x)["bodypart"]
        return self.model.heads["bodypart"].predictor(self.stride, outputs)["poses"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the legacy exporter, on purpose
def test_onnx_export_dynamic_batch_and_size(tmp_path):
    torch.manual_seed(0)
    cfg = {"backbone": {"type": "ResNet", "model_name": "resnet18", "output_stride": 16},
           "heads": {"bodypart": head_cfg(512, 3, weight_init=None)}}
    cfg["heads"]["bodypart"]["predictor"]["apply_sigmoid"] = True
    wrapper = PoseWithDecode(PoseModel.build(cfg)).eval()
    assert wrapper.stride == 8.0
    path = tmp_path / "pose.onnx"
    torch.onnx.export(wrapper, (torch.randn(1, 3, 64, 64),), str(path), dynamo=False,
                      opset_version=17, input_names=["images"], output_names=["poses"],
                      dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"},
                                    "poses": {0: "batch"}})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in [(2, 3, 64, 96), (1, 3, 80, 48)]:
        x = torch.randn(*shape)
        with torch.no_grad():
            expected = wrapper(x).numpy()
        got = session.run(None, {"images": x.numpy()})[0]
        assert got.shape == expected.shape == (shape[0], 1, 3, 3)
        # same peaks (same cells) and the same refined coordinates / scores
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3)
        assert expected[..., 0].max() < shape[3] + 16 and expected[..., 1].max() < shape[2] + 16
