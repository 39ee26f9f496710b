"""DLCRNet backbone, DLCRNetHead, PAF predictor (tensor half + numpy assembly), PAF targets."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import scipy.optimize
import torch
import torch.nn.functional as F
import yaml

from dlc_train.models import HEADS, PoseModel
from dlc_train.models.backbones.dlcrnet import DLCRNet
from dlc_train.models.predictors.paf import PartAffinityFieldPredictor
from dlc_runtime.postprocess.paf_assembly import PafAssembler, linear_sum_assignment
from dlc_train.models.target_generators.paf_targets import (
    PartAffinityFieldGenerator,
    SequentialGenerator,
)
from helpers.variants import tiered

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DLC3 = SHARED / "dlc3"
KEY_GRAPH = [[0, 1], [1, 2], [2, 3], [0, 3]]  # the graph the _ma key files were made with


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared not checked out beside the project)")
    return path


def _load_cfg(name: str, graph: list[list[int]] | None = None) -> dict:
    cfg = yaml.safe_load(_require(DLC3 / "pytorch_configs" / f"{name}.yaml").read_text())
    model = cfg["model"]
    if graph is not None:
        head = model["heads"]["bodypart"]
        head["predictor"]["graph"] = graph
        head["predictor"]["edges_to_keep"] = list(range(len(graph)))
        head["target_generator"]["generators"][1]["graph"] = graph
        head["paf_config"]["channels"][-1] = 2 * len(graph)
    return model


def _dlc_keys(name: str) -> dict[str, tuple[int, ...]]:
    out = {}
    for line in _require(DLC3 / "state_dict_keys" / f"{name}.txt").read_text().splitlines():
        key, shape = line.split("\t")
        out[key] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    return out


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # The CI box is shared by several test runs: intra-op threads oversubscribe it and make
    # these small convolutions 10x slower. Restored afterwards.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def models() -> dict[str, PoseModel]:
    torch.manual_seed(0)
    return {name: PoseModel.build(_load_cfg(name, KEY_GRAPH)).eval()
            for name in ("resnet_50_BU_ma", "dlcrnet_stride16_ms5_BU_ma")}


# ------------------------------------------------------------------------ keys and forward


@pytest.mark.parametrize("name", ["resnet_50_BU_ma", "dlcrnet_stride16_ms5_BU_ma"])
def test_state_dict_matches_dlc_keys(models, name):
    model = models[name]
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == _dlc_keys(name)
    # A DeepLabCut-shaped state_dict loads strictly (the predictor's buffers stay out of it).
    model.load_state_dict({k: v.clone() for k, v in model.state_dict().items()}, strict=True)


def test_config_graph_as_written_builds_six_edges():
    # The sample configs carry the full 6-edge graph (the key files were made with 4 edges).
    model = PoseModel.build(_load_cfg("resnet_50_BU_ma"))
    head = model.heads["bodypart"]
    assert len(head.predictor.graph) == 6 and head.predictor.edges_to_keep == list(range(6))
    assert head.paf_head.deconv_layers[0].weight.shape == (144, 12, 3, 3)
    assert head.hm_ref_layers[0].weight.shape == (4, 144, 3, 3)
    assert head.paf_ref_layers[4].weight.shape == (12, 144, 3, 3)


@pytest.mark.parametrize("size", [(64, 64), (80, 112)])
def test_forward_and_predictor(models, size):
    h, w = size
    for name, model in models.items():
        assert model.get_stride("bodypart") == 4.0
        with torch.no_grad():
            out = model(torch.randn(2, 3, h, w))["bodypart"]
            # backbone stride 16, "same" convT (x2) then kernel-3 deconv (2n + 1)
            hh, ww = 4 * (h // 16) + 1, 4 * (w // 16) + 1
            assert out["heatmap"].shape == (2, 4, hh, ww), name
            assert out["locref"].shape == (2, 8, hh, ww)
            assert out["paf"].shape == (2, 8, hh, ww)
            poses = model.get_predictions({"bodypart": out})["bodypart"]["poses"]
        assert poses.shape == (2, 2, 4, 3)
        found = ~torch.isnan(poses[..., 0])
        assert torch.all(poses[..., 2][~found] == 0)
        assert torch.all((poses[..., 2][found] > 0) & (poses[..., 2][found] <= 1))


def _dlc_style_dlcrnet(backbone: DLCRNet, x: torch.Tensor) -> torch.Tensor:
    """DeepLabCut's formulation, re-expressed: forward hooks on layer1[2] / layer2[2] around
    the plain ResNet forward, then the conv blocks and an antialiased bilinear resize."""
    banks = {}
    m = backbone.model
    hooks = [m.layer1[2].register_forward_hook(lambda *a: banks.__setitem__("b1", a[2])),
             m.layer2[2].register_forward_hook(lambda *a: banks.__setitem__("b2", a[2]))]
    try:
        out = m(x)
    finally:
        for hook in hooks:
            hook.remove()
    b2 = backbone.conv_block2(backbone.conv_block1(banks["b2"]))
    b1 = backbone.conv_block5(backbone.conv_block4(backbone.conv_block3(banks["b1"])))
    size = list(out.shape[-2:])
    b1 = F.interpolate(b1, size=size, mode="bilinear", align_corners=False, antialias=True)
    b2 = F.interpolate(b2, size=size, mode="bilinear", align_corners=False, antialias=True)
    return torch.cat((b1, b2, out), dim=1)


@pytest.mark.parametrize("output_stride",
                         tiered([16, 32], net_type=lambda stride: f"dlcrnet_stride{stride}_ms5"))
def test_dlcrnet_backbone_matches_hooked_reference(output_stride):
    torch.manual_seed(0)
    backbone = DLCRNet("resnet50", output_stride=output_stride, pretrained=False).eval()
    assert backbone.num_features == 2304 and backbone.stride == output_stride
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        ours = backbone(x)
        ref = _dlc_style_dlcrnet(backbone, x)
    assert ours.shape == (1, 2304, 96 // output_stride, 128 // output_stride)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_dlcrnet_banks_are_detached_like_dlc():
    torch.manual_seed(0)
    backbone = DLCRNet("resnet_tiny", output_stride=16, pretrained=False)
    x = torch.randn(1, 3, 64, 64)
    # Only the bank channels get a gradient: with detached banks, layer1 receives none.
    backbone(x)[:, :256].sum().backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in backbone.model.parameters())
    assert backbone.conv_block1[0].weight.grad.abs().sum() > 0
    backbone.zero_grad()
    backbone.detach_banks = False
    backbone(x)[:, :256].sum().backward()
    assert backbone.model.conv1.weight.grad.abs().sum() > 0


def test_head_without_stages_and_stride():
    cfg = _load_cfg("resnet_50_BU_ma", KEY_GRAPH)["heads"]["bodypart"]
    cfg = copy.deepcopy(cfg)
    for branch in ("heatmap_config", "locref_config", "paf_config"):
        cfg[branch]["channels"][0] = 32
    cfg["num_stages"] = 0
    head = HEADS.build(cfg)
    assert head.stride == 0.5 and len(head.hm_ref_layers) == 0
    out = head(torch.randn(1, 32, 5, 6))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "heatmap": (1, 4, 11, 13), "locref": (1, 8, 11, 13), "paf": (1, 8, 11, 13)}
    cfg["num_stages"] = 2
    head = HEADS.build(cfg)
    assert head.stride == 0.25 and len(head.paf_ref_layers) == 2
    assert head(torch.randn(1, 32, 5, 6))["heatmap"].shape == (1, 4, 21, 25)


# ------------------------------------------------------------------------ peaks


def _predictor(num_animals: int = 2, num_parts: int = 4, graph=KEY_GRAPH, **kw):
    args = dict(num_animals=num_animals, num_multibodyparts=num_parts, num_uniquebodyparts=0,
                graph=graph, edges_to_keep=list(range(len(graph))), nms_radius=5, sigma=1.0,
                locref_stdev=7.2801, min_affinity=0.05, apply_sigmoid=False)
    args.update(kw)
    return PartAffinityFieldPredictor(**args)


def _blobs(shape: tuple[int, int], centres: list[tuple[int, int, float]], sigma: float = 1.5):
    """A heatmap of Gaussian bumps (row, col, height)."""
    rows = torch.arange(shape[0], dtype=torch.float32)[:, None]
    cols = torch.arange(shape[1], dtype=torch.float32)[None]
    out = torch.zeros(shape)
    for r, c, height in centres:
        out = torch.maximum(out, height * torch.exp(-((rows - r) ** 2 + (cols - c) ** 2)
                                                    / (2 * sigma ** 2)))
    return out


def test_peak_nms_on_hand_made_heatmap():
    pred = _predictor(num_animals=3, num_parts=2, graph=[[0, 1]])
    hm = torch.zeros(1, 2, 20, 24)
    # channel 0: two clear peaks, a weaker one 2 cells from the first (suppressed by the NMS
    # window), and one too faint to count
    hm[0, 0] = _blobs((20, 24), [(4, 5, 0.9), (4, 7, 0.5), (15, 18, 0.6), (10, 2, 0.005)])
    # channel 1: a single peak
    hm[0, 1] = _blobs((20, 24), [(12, 12, 0.8)])
    locref = torch.zeros(1, 4, 20, 24)
    locref[0, 0, 15, 18], locref[0, 1, 15, 18] = 0.5, -1.0  # (x, y) offset of the 2nd peak
    out = pred.forward_tensors(8.0, {"heatmap": hm, "locref": locref,
                                     "paf": torch.zeros(1, 2, 20, 24)})
    assert out["peak_index"][0, 0].tolist() == [4 * 24 + 5, 15 * 24 + 18, -1]
    assert out["peak_index"][0, 1].tolist() == [12 * 24 + 12, -1, -1]
    # x = col * 8 + 4 + locref * 7.2801 (rounded to 3 decimals)
    np.testing.assert_allclose(out["peaks"][0, 0].numpy(),
                               [[44.0, 36.0], [148 + 3.640, 124 - 7.280], [-1, -1]], atol=1e-3)
    scores = out["scores"][0, 0]
    assert scores[0] > scores[1] > 0 and scores[2] == 0
    assert torch.all(out["affinities"][0, 0, :, 1:] == 0)  # target bodypart has one peak


def test_equal_scores_keep_raster_order():
    pred = _predictor(num_animals=2, num_parts=1, graph=[])
    hm = _blobs((16, 16), [(3, 12, 0.7), (10, 4, 0.7), (12, 12, 0.7)])[None, None]
    out = pred.forward_tensors(4.0, {"heatmap": hm, "locref": torch.zeros(1, 2, 16, 16),
                                     "paf": torch.zeros(1, 0, 16, 16)})
    # three equal peaks, two slots: the first two in raster order
    assert out["peak_index"][0, 0].tolist() == [3 * 16 + 12, 10 * 16 + 4]


# ------------------------------------------------------------------------ costs


def _loop_reference_affinities(paf: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                               valid: np.ndarray, graph, n_points: int = 10) -> np.ndarray:
    """Slow per-pair reference of DeepLabCut's cost: integer points on the segment, trapezoid
    integrals of the x / y channels over the column / row steps, norm / length."""
    num_edges, p = len(graph), rows.shape[1]
    out = np.zeros((num_edges, p, p))
    for e, (s, t) in enumerate(graph):
        for i in range(p):
            for j in range(p):
                if not (valid[s, i] and valid[t, j]):
                    continue
                a = np.array([rows[s, i], cols[s, i]], dtype=float)
                b = np.array([rows[t, j], cols[t, j]], dtype=float)
                pts = [np.floor(((n_points - 1 - k) * a + k * b) / (n_points - 1)).astype(int)
                       for k in range(n_points)]
                vx = [paf[2 * e, r, c] for r, c in pts]
                vy = [paf[2 * e + 1, r, c] for r, c in pts]
                ix = sum((pts[k + 1][1] - pts[k][1]) * (vx[k + 1] + vx[k]) / 2
                         for k in range(n_points - 1))
                iy = sum((pts[k + 1][0] - pts[k][0]) * (vy[k + 1] + vy[k]) / 2
                         for k in range(n_points - 1))
                length = np.hypot(*(b - a)) + np.spacing(np.float32(1))
                out[e, i, j] = np.hypot(ix, iy) / length
    return out


def test_edge_affinities_match_loop_reference():
    torch.manual_seed(0)
    graph = [[0, 1], [1, 2], [2, 0]]
    pred = _predictor(num_animals=3, num_parts=3, graph=graph)
    hm = torch.zeros(1, 3, 18, 22)
    for k in range(3):
        hm[0, k] = _blobs((18, 22), [(2 + 5 * k, 3, 0.9), (15 - k, 19 - 4 * k, 0.8),
                                     (9, 11 + k, 0.7)])
    paf = torch.randn(1, 6, 18, 22)
    out = pred.forward_tensors(4.0, {"heatmap": hm, "locref": torch.zeros(1, 6, 18, 22),
                                     "paf": paf})
    index = out["peak_index"][0].numpy()
    assert (index >= 0).all()
    ref = _loop_reference_affinities(paf[0].numpy(), index // 22, index % 22, index >= 0, graph)
    np.testing.assert_allclose(out["affinities"][0].numpy(), ref, atol=1.5e-3)


# ------------------------------------------------------------------------ assembly


def test_hungarian_matches_scipy():
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (3, 3), (2, 5), (5, 2), (6, 6), (4, 7)]:
        for _ in range(20):
            cost = rng.random(shape)
            for maximize in (False, True):
                rows, cols = linear_sum_assignment(cost, maximize=maximize)
                ref_rows, ref_cols = scipy.optimize.linear_sum_assignment(cost, maximize=maximize)
                assert rows.tolist() == ref_rows.tolist() and cols.tolist() == ref_cols.tolist()
    assert linear_sum_assignment(np.zeros((0, 3)))[0].size == 0


def _render_animals(animals: np.ndarray, graph, hw: tuple[int, int], stride: float = 4.0,
                    width: float = 6.0) -> dict[str, torch.Tensor]:
    """Head outputs for known keypoints: Gaussian-bump heatmaps (probabilities), zero locref and
    the PAF target field of the graph."""
    num_parts = animals.shape[1]
    hm = torch.zeros(1, num_parts, *hw)
    for k in range(num_parts):
        cells = [((y - stride / 2) / stride, (x - stride / 2) / stride, 0.95)
                 for x, y in animals[:, k]]
        hm[0, k] = _blobs(hw, cells)
    kpts = torch.tensor(np.concatenate([animals, np.ones((*animals.shape[:2], 1))], -1),
                        dtype=torch.float32)[None]
    paf = PartAffinityFieldGenerator(graph, width)(
        stride, {"paf": torch.zeros(1, 2 * len(graph), *hw)}, {"keypoints": kpts})
    return {"heatmap": hm, "locref": torch.zeros(1, 2 * num_parts, *hw),
            "paf": paf["paf"]["target"]}


def test_two_animals_assembled_not_swapped():
    # Two rectangles whose corners interleave: pairing bodyparts by distance would swap them
    # (animal 1's "a" is 23 px from animal 2's "b" but 96 px from its own).
    animals = np.array([[[14, 14], [110, 14], [110, 54], [14, 54]],
                        [[122, 34], [26, 34], [26, 74], [122, 74]]], dtype=np.float32)
    outputs = _render_animals(animals, KEY_GRAPH, (22, 34))
    pred = _predictor()
    poses = pred(4.0, outputs)["poses"][0].numpy()
    assert poses.shape == (2, 4, 3)
    assert np.all(poses[..., 2] > 0.5)
    got = sorted(map(tuple, poses[..., :2].reshape(2, -1).round(3)))
    assert got == sorted(map(tuple, animals.reshape(2, -1)))

    # Same heatmaps, PAFs of the swapped animals: the assembly follows the fields.
    swapped = animals.copy()
    swapped[:, [1, 2]] = swapped[::-1, [1, 2]]
    outputs["paf"] = _render_animals(swapped, KEY_GRAPH, (22, 34))["paf"]
    poses = pred(4.0, outputs)["poses"][0].numpy()
    got = sorted(map(tuple, poses[..., :2].reshape(2, -1).round(3)))
    assert got == sorted(map(tuple, swapped.reshape(2, -1)))


def _frame(peaks_per_part: list[list[tuple[float, float, float]]], p: int):
    k = len(peaks_per_part)
    peaks = np.full((1, k, p, 2), -1.0, np.float32)
    scores = np.zeros((1, k, p), np.float32)
    index = np.full((1, k, p), -1, np.int64)
    for part, plist in enumerate(peaks_per_part):
        for slot, (x, y, s) in enumerate(plist):
            peaks[0, part, slot] = x, y
            scores[0, part, slot] = s
            index[0, part, slot] = int(y) * 100 + int(x)
    return peaks, scores, index


def test_assembler_rules():
    graph = [[0, 1], [1, 2]]
    asm = PafAssembler(graph, [0, 1], num_animals=2, num_multibodyparts=3, min_affinity=0.3)
    peaks, scores, index = _frame([[(10, 10, 0.9), (50, 10, 0.8)],
                                   [(10, 20, 0.9), (50, 20, 0.7)],
                                   [(10, 30, 0.9), (50, 30, 0.05)]], p=2)
    aff = np.zeros((1, 2, 2, 2), np.float32)
    aff[0, 0] = [[0.9, 0.1], [0.2, 0.8]]  # a-b: diagonal
    aff[0, 1] = [[0.2, 0.95], [0.9, 0.1]]  # b-c: crossed, c1 below pcutoff
    out = asm(peaks, scores, index, aff)
    poses = out["poses"][0]
    # animal 1: a0-b0 (0.9), b0-c? -> c1 is below pcutoff, so only c0 is paired (with b1, 0.9)
    # -> animals: {a1, b1, c0} (0.8 + 0.9) first, then {a0, b0} with a single link: dropped
    assert np.allclose(poses[0], [[50, 10, 0.8], [50, 20, 0.7], [10, 30, 0.9]])
    assert np.isnan(poses[1, :, 0]).all() and (poses[1, :, 2] == 0).all()
    assert out["affinity"][0, 0] == pytest.approx(0.85)
    # min_affinity drops weak links: nothing reaches 2 links any more
    asm.min_affinity = 0.95
    poses = asm(peaks, scores, index, aff)["poses"]
    assert np.isnan(poses[..., :2]).all() and (poses[..., 2] == 0).all()


def test_assembler_single_animal_and_unique():
    asm = PafAssembler([[0, 1]], [0], num_animals=1, num_multibodyparts=2, num_uniquebodyparts=1)
    peaks, scores, index = _frame([[(1, 2, 0.6)], [(3, 4, 0.7)], [(5, 6, 0.9)]], p=1)
    out = asm(peaks, scores, index, np.zeros((1, 1, 1, 1), np.float32))
    assert np.allclose(out["poses"][0, 0], [[1, 2, 0.6], [3, 4, 0.7]])
    assert np.allclose(out["unique_poses"][0, 0], [[5, 6, 0.9]])


# ------------------------------------------------------------------------ ONNX


class _TensorHalf(torch.nn.Module):
    def __init__(self, predictor: PartAffinityFieldPredictor, stride: float):
        super().__init__()
        self.predictor, self.stride = predictor, stride

    def forward(self, heatmap, locref, paf):
        out = self.predictor.forward_tensors(self.stride, {"heatmap": heatmap, "locref": locref,
                                                           "paf": paf})
        return tuple(out[name] for name in ("peaks", "scores", "peak_index", "affinities"))


def test_tensor_half_exports_to_onnx(tmp_path):
    pred = _predictor(apply_sigmoid=True)
    module = _TensorHalf(pred, 4.0).eval()
    torch.manual_seed(0)

    def inputs(h, w, batch):
        hm = torch.full((batch, 4, h, w), -6.0)
        for b in range(batch):
            for k in range(1, 4):
                centres = [(2 + k, 3 + b, 5.0), (h - 4, w - 5 - k, 5.0), (h // 2, w // 2, 2.0)]
                hm[b, k] += 8 * _blobs((h, w), centres) / 5
        # channel 0: two identical peaks away from the border, an exact tie that ONNX TopK
        # must order like the eager stable sort (earlier cell first)
        hm[:, 0] += 8 * _blobs((h, w), [(5, 5, 1.0), (h - 6, w - 6, 1.0)])
        return hm, torch.randn(batch, 8, h, w) * 0.3, torch.randn(batch, 8, h, w)

    path = tmp_path / "paf_tensors.onnx"
    names = ["peaks", "scores", "peak_index", "affinities"]
    dyn = {"heatmap": {0: "b", 2: "h", 3: "w"}, "locref": {0: "b", 2: "h", 3: "w"},
           "paf": {0: "b", 2: "h", 3: "w"}}
    torch.onnx.export(module, inputs(20, 24, 1), str(path), dynamo=False, opset_version=17,
                      input_names=["heatmap", "locref", "paf"], output_names=names,
                      dynamic_axes=dyn)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for h, w, batch in [(20, 24, 1), (33, 41, 2)]:
        args = inputs(h, w, batch)
        with torch.no_grad():
            ref = dict(zip(names, module(*args)))
        got = dict(zip(names, session.run(None, {n: a.numpy() for n, a in
                                                 zip(["heatmap", "locref", "paf"], args)})))
        assert (ref["peak_index"].numpy() >= 0).sum() >= 3 * batch
        assert torch.all(ref["scores"][:, 0, 0] == ref["scores"][:, 0, 1])
        assert torch.all(ref["peak_index"][:, 0, 0] == 5 * w + 5)
        np.testing.assert_array_equal(got["peak_index"], ref["peak_index"].numpy())
        np.testing.assert_allclose(got["peaks"], ref["peaks"].numpy(), atol=2e-3)
        np.testing.assert_allclose(got["scores"], ref["scores"].numpy(), atol=1.5e-3)
        np.testing.assert_allclose(got["affinities"], ref["affinities"].numpy(), atol=1.5e-3)
        # the runtime's half (numpy only) gives the same animals from ORT's outputs
        np.testing.assert_allclose(pred.assembler(*got.values())["poses"],
                                   pred.assemble(ref)["poses"], atol=2e-3)


# ------------------------------------------------------------------------ targets and training


def test_paf_target_field_geometry():
    gen = PartAffinityFieldGenerator([[0, 1], [1, 0]], width=4.0)
    kpts = torch.tensor([[[[10.0, 10.0, 1], [30.0, 10.0, 1]],      # horizontal limb
                          [[0.0, 0.0, -1], [20.0, 30.0, 1]]]])     # a missing keypoint
    out = gen(2.0, {"paf": torch.zeros(1, 4, 20, 20)}, {"keypoints": kpts})["paf"]
    target = out["target"][0]
    assert out["weights"].shape == out["target"].shape and torch.all(out["weights"] == 1)
    x = torch.arange(20) * 2.0 + 1.0  # cell centres (stride 2)
    # on the limb's row (y = 11, 1 px off the line): (1 - 1/4) along +x between x = 10 and 30
    row = target[0, 5]
    inside = (x >= 10) & (x <= 30)
    assert torch.allclose(row[inside], torch.full_like(row[inside], 0.75))
    assert torch.all(row[~inside] == 0) and torch.all(target[1] == 0)
    # 5 px off the line is outside the band (width 4)
    assert torch.all(target[0, 7] == 0)
    # the reverse edge points the other way; the missing keypoint draws nothing
    assert torch.allclose(target[2, 5][inside], torch.full_like(row[inside], -0.75))


def test_paf_target_last_individual_wins():
    gen = PartAffinityFieldGenerator([[0, 1]], width=10.0)
    kpts = torch.tensor([[[[0.0, 8.0, 1], [40.0, 8.0, 1]],
                          [[20.0, -10.0, 1], [20.0, 40.0, 1]]]])
    target = gen(4.0, {"paf": torch.zeros(1, 2, 8, 10)}, {"keypoints": kpts})["paf"]["target"]
    # cell (row 2, col 5) centre (22, 10): inside both bands; the vertical (2nd) limb wins
    assert target[0, 0, 2, 5] == 0 and target[0, 1, 2, 5] > 0


def test_tiny_model_trains_with_paf_targets():
    torch.manual_seed(0)
    graph = [[0, 1], [1, 2], [2, 3]]
    pred_cfg = {"type": "PartAffinityFieldPredictor", "num_animals": 2, "num_multibodyparts": 4,
                "num_uniquebodyparts": 0, "graph": graph, "edges_to_keep": [0, 1, 2],
                "nms_radius": 5, "sigma": 1.0, "locref_stdev": 7.2801, "min_affinity": 0.05}
    head = {"type": "DLCRNetHead", "predictor": pred_cfg,
            "target_generator": {"type": "SequentialGenerator", "generators": [
                {"type": "HeatmapPlateauGenerator", "num_heatmaps": 4, "pos_dist_thresh": 8,
                 "heatmap_mode": "KEYPOINT", "generate_locref": True, "locref_std": 7.2801},
                {"type": "PartAffinityFieldGenerator", "graph": graph, "width": 6}]},
            "criterion": {"heatmap": {"type": "WeightedBCECriterion", "weight": 1.0},
                          "locref": {"type": "WeightedHuberCriterion", "weight": 0.05},
                          "paf": {"type": "WeightedHuberCriterion", "weight": 0.1}},
            "heatmap_config": {"channels": [384, 4], "kernel_size": [3], "strides": [2]},
            "locref_config": {"channels": [384, 8], "kernel_size": [3], "strides": [2]},
            "paf_config": {"channels": [384, 6], "kernel_size": [3], "strides": [2]},
            "num_stages": 2, "features_dim": 16}
    model = PoseModel.build({"backbone": {"type": "DLCRNet", "model_name": "resnet_tiny",
                                          "output_stride": 16, "pretrained": False},
                             "heads": {"bodypart": head}})
    assert model.backbone.num_features == 384
    images = torch.randn(2, 3, 64, 64)
    kpts = torch.tensor([[[[10, 10, 1], [20, 12, 1], [30, 14, 1], [40, 16, 1]],
                          [[50, 50, 1], [40, 52, 1], [30, 54, 1], [20, 56, 1]]],
                         [[[12, 40, 1], [12, 30, 1], [12, 20, 1], [12, 10, 1]],
                          [[0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]]]], dtype=torch.float32)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    model.train()
    for _ in range(8):
        outputs = model(images)
        targets = model.get_target(outputs, {"keypoints": kpts})
        assert set(targets["bodypart"]) == {"heatmap", "locref", "paf"}
        assert targets["bodypart"]["paf"]["target"].abs().sum() > 0
        loss = model.get_loss(outputs, targets)
        optimizer.zero_grad()
        loss["total_loss"].backward()
        optimizer.step()
        losses.append(loss["total_loss"].item())
    assert set(loss) >= {"total_loss", "bodypart_heatmap", "bodypart_locref", "bodypart_paf"}
    assert losses[-1] < 0.7 * losses[0], losses
    model.eval()
    with torch.no_grad():
        poses = model.get_predictions(model(images))["bodypart"]["poses"]
    assert poses.shape == (2, 2, 4, 3)


def test_sequential_generator_merges_outputs():
    gen = SequentialGenerator([
        {"type": "HeatmapPlateauGenerator", "num_heatmaps": 2, "pos_dist_thresh": 5,
         "generate_locref": True},
        {"type": "PartAffinityFieldGenerator", "graph": [[0, 1]], "width": 5}])
    assert len(gen.generators) == 2 and not list(gen.state_dict())
    outputs = {"heatmap": torch.zeros(1, 2, 8, 8), "locref": torch.zeros(1, 4, 8, 8),
               "paf": torch.zeros(1, 2, 8, 8)}
    kpts = torch.tensor([[[[6.0, 6.0, 1], [20.0, 20.0, 1]]]])
    targets = gen(4.0, outputs, {"keypoints": kpts})
    assert set(targets) == {"heatmap", "locref", "paf"}
    assert targets["paf"]["target"].shape == (1, 2, 8, 8)
