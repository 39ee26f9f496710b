"""Detectors: DeepLabCut 3 detector snapshot layout, inference geometry, NMS, box coding,
RoIAlign and anchors (torchvision's behaviour, rebuilt in plain torch)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

from dlc_train.models.detectors import DETECTORS, FasterRCNN, SSDLite, pad_detections
from dlc_train.models.detectors.anchors import AnchorGenerator
from dlc_train.models.detectors.box_ops import BoxCoder, batched_nms, nms, nms_mask_fixed
from dlc_train.models.detectors.roi_align import MultiScaleRoIAlign, roi_align

from conftest import dlc3_file as _dlc3, reference_keys
_reference_keys = reference_keys

DLC3 = Path(__file__).resolve().parents[1].parent / "shared" / "dlc3"


def _randomize(model: torch.nn.Module, seed: int = 0) -> None:
    """Spread-out weights so scores and boxes vary (the default inits give near-constant
    scores); BatchNorm statistics stay sane."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim > 1:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))


pytestmark = pytest.mark.usefixtures("one_thread")

# Faster R-CNN at its two sizes: the MobileNet one in the fast tier, the ResNet-50 one slow.
FASTERRCNN_VARIANTS = ["fasterrcnn_mobilenet_v3_large_fpn",
                       pytest.param("fasterrcnn_resnet50_fpn_v2", marks=pytest.mark.slow)]


@torch.no_grad()
def calibrate_fasterrcnn_scores(model: FasterRCNN, images: torch.Tensor) -> None:
    """Rescales the box classifier so that, on ``images``' proposals, the foreground-minus-
    background logit has mean -1.5 and std 1.5: distinct scores, some above 0.1 (random
    weights otherwise give near-equal scores, or all ~0)."""
    seen = []
    predictor = model.model.roi_heads.box_predictor
    hook = predictor.register_forward_hook(lambda _m, args, _o: seen.append(args[0]))
    model.eval()(images)
    hook.remove()
    fc = predictor.cls_score
    direction = fc.weight[1] - fc.weight[0]
    diff = seen[0].flatten(1) @ direction
    gain = 1.5 / diff.std()
    fc.weight[1] = fc.weight[0] + gain * direction
    fc.bias[1] = fc.bias[0] - 1.5 - gain * diff.mean()


# --- DeepLabCut snapshot layout ---------------------------------------------------------------

@pytest.mark.parametrize("name, build", [
    ("detector_ssdlite", lambda: SSDLite()),
    ("detector_fasterrcnn_resnet50_fpn_v2",
     lambda: FasterRCNN(variant="fasterrcnn_resnet50_fpn_v2")),
])

def test_state_dict_matches_deeplabcut(name, build):
    reference = _reference_keys(name)
    model = build()
    ours = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert [k for k, _ in ours] == [k for k, _ in reference]  # same keys, same order
    assert ours == reference                                   # same shapes
    snapshot = {"model": {k: torch.zeros(s) for k, s in reference}}
    model.load_state_dict(snapshot["model"], strict=True)


def test_dlc_config_builds_ssdlite():
    cfg = yaml.safe_load(_dlc3("pytorch_configs/resnet_50_TD_ma.yaml").read_text())
    detector = DETECTORS.build(cfg["detector"]["model"])
    assert isinstance(detector, SSDLite)
    detector.train()
    bns = [m for m in detector.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)  # freeze_bn_stats: true


def test_mobilenet_fasterrcnn_layout():
    # No DeepLabCut key file for this variant: check torchvision's structure instead.
    sd = FasterRCNN(variant="fasterrcnn_mobilenet_v3_large_fpn").state_dict()
    assert sd["model.backbone.body.0.0.weight"].shape == (16, 3, 3, 3)
    assert "model.backbone.body.0.1.num_batches_tracked" not in sd   # FrozenBatchNorm2d
    assert sd["model.backbone.body.16.0.weight"].shape == (960, 160, 1, 1)  # full tail
    assert sd["model.backbone.fpn.inner_blocks.0.0.weight"].shape == (256, 160, 1, 1)
    assert sd["model.backbone.fpn.inner_blocks.1.0.bias"].shape == (256,)
    assert sd["model.rpn.head.conv.0.0.weight"].shape == (256, 256, 3, 3)
    assert "model.rpn.head.conv.1.0.weight" not in sd
    assert sd["model.rpn.head.cls_logits.weight"].shape == (15, 256, 1, 1)
    assert sd["model.roi_heads.box_head.fc6.weight"].shape == (1024, 256 * 7 * 7)
    assert sd["model.roi_heads.box_predictor.bbox_pred.weight"].shape == (8, 1024)


# --- inference geometry -----------------------------------------------------------------------

def _check_detections(detections, batch, height, width):
    assert len(detections) == batch
    for det in detections:
        n = det["boxes"].shape[0]
        assert n > 0
        assert det["boxes"].shape == (n, 4) and det["scores"].shape == (n,)
        assert det["labels"].shape == (n,) and bool((det["labels"] == 1).all())
        boxes = det["boxes"]
        assert bool((boxes[:, 0] >= 0).all() and (boxes[:, 2] <= width + 1e-3).all())
        assert bool((boxes[:, 1] >= 0).all() and (boxes[:, 3] <= height + 1e-3).all())
        assert bool((boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all())
        assert bool((det["scores"][:-1] >= det["scores"][1:]).all())  # best first


@pytest.mark.parametrize("size", [(96, 128), (200, 150)])
def test_ssdlite_forward_in_image_coordinates(size):
    torch.manual_seed(0)
    model = SSDLite(score_thresh=0.3, detections_per_img=50).eval()
    _randomize(model)
    images = torch.randn(2, 3, *size)
    with torch.no_grad():
        losses, detections = model(images)
    assert losses == {}
    _check_detections(detections, 2, *size)
    # Boxes come back in input pixels: the extreme ones reach the image borders, far past 320
    # when the input is larger and never past the input size.
    all_boxes = torch.cat([d["boxes"] for d in detections])
    assert all_boxes[:, 2].max() > 0.5 * size[1] and all_boxes[:, 3].max() > 0.5 * size[0]

    # The fixed-shape, tensor-only path gives the same detections, padded.
    fixed = model.predict_fixed(images, max_detections=60)
    assert fixed["boxes"].shape == (2, 60, 4) and fixed["scores"].shape == (2, 60)
    padded = pad_detections(detections, 60)
    torch.testing.assert_close(fixed["scores"], padded["scores"])
    torch.testing.assert_close(fixed["boxes"], padded["boxes"])
    assert torch.equal(fixed["labels"], padded["labels"])
    n0 = detections[0]["scores"].numel()
    assert n0 < 60 and bool((fixed["scores"][0, n0:] == 0).all())
    assert bool((fixed["labels"][0, n0:] == -1).all())


@pytest.mark.parametrize("variant", FASTERRCNN_VARIANTS)
def test_fasterrcnn_forward_in_image_coordinates(variant):
    torch.manual_seed(0)
    # Small resize target and few proposals keep this fast on CPU (the v2 box head runs four
    # 3x3 convs per proposal).
    model = FasterRCNN(variant=variant, min_size=96, max_size=160).eval()
    model.model.rpn._post_nms_top_n["testing"] = 32
    model.model.rpn._pre_nms_top_n["testing"] = 100
    _randomize(model)
    for size, expected_resize in [((60, 80), (96, 128)), ((130, 90), (138, 96))]:
        assert model.model.transform.resized_size(*size) == expected_resize
        with torch.no_grad():
            _, detections = model(torch.randn(1, 3, *size))
        _check_detections(detections, 1, *size)


@pytest.mark.parametrize("variant", FASTERRCNN_VARIANTS)
def test_fasterrcnn_fixed_path_matches_forward(variant):
    """The export path (fixed shapes, sizes from shape tensors) gives forward's detections."""
    torch.manual_seed(0)
    model = FasterRCNN(variant=variant, min_size=96, max_size=160, rpn_pre_nms_top_n_test=100,
                       rpn_post_nms_top_n_test=16).eval()
    _randomize(model)
    calibrate_fasterrcnn_scores(model, torch.randn(2, 3, 60, 80))
    for size in [(60, 80), (130, 90)]:
        images = torch.randn(2, 3, *size)
        with torch.no_grad():
            _, detections = model(images)
        fixed = model.predict_fixed(images, max_detections=40)
        padded = pad_detections(detections, 40)
        assert fixed["boxes"].shape == (2, 40, 4)
        assert bool((padded["scores"] > 0.1).any())
        torch.testing.assert_close(fixed["scores"], padded["scores"])
        torch.testing.assert_close(fixed["boxes"], padded["boxes"])
        assert torch.equal(fixed["labels"], padded["labels"])


def test_fixed_resize_size_matches_eager():
    """The graph's integer resize arithmetic equals the float32 scale + floor of eager mode."""
    from dlc_train.models.detectors.transform import DetectionTransform

    gen = torch.Generator().manual_seed(0)
    for min_size, max_size in [(800, 1333), (128, 213)]:
        transform = DetectionTransform((0.0,) * 3, (1.0,) * 3, min_size, max_size)
        sizes = torch.randint(16, 4000, (2000, 2), generator=gen).tolist() + [[96, 200]]
        for h, w in sizes:
            resized = transform.resized_size_fixed(torch.tensor([h, w]))
            assert tuple(resized.tolist()) == transform.resized_size(h, w), (h, w)
    _, resized = transform.forward_fixed(torch.zeros(1, 3, 96, 200))
    assert resized.tolist() == [102, 213]  # 213 / 200 in float32 is just above 1.065


def test_rpn_fixed_anchors_match():
    gen = AnchorGenerator(((32, 64), (128,)), ((0.5, 1.0, 2.0),) * 2)
    maps = [torch.zeros(1, 1, 6, 5), torch.zeros(1, 1, 3, 3)]
    fixed = gen.forward_fixed(torch.tensor([48, 40]), maps)
    torch.testing.assert_close(torch.cat(fixed), gen((48, 40), [(6, 5), (3, 3)]))


def test_roi_align_fixed_matches_roi_align():
    from dlc_train.models.detectors.roi_align import roi_align_fixed

    gen = torch.Generator().manual_seed(0)
    feat = torch.randn(2, 3, 9, 11, generator=gen)
    boxes = torch.tensor([[[1.0, 2.0, 15.0, 12.0], [-3.0, -2.0, 6.0, 30.0]],
                          [[20.0, 16.0, 21.0, 17.0], [0.0, 0.0, 22.0, 18.0]]])
    out = roi_align_fixed(feat, boxes, 3, torch.tensor(0.5), 2)
    rois = torch.cat((torch.tensor([0.0, 0, 1, 1])[:, None], boxes.reshape(-1, 4)), 1)
    torch.testing.assert_close(out.reshape(4, 3, 3, 3), roi_align(feat, rois, 3, 0.5, 2))


def test_ssdlite_anchor_count_at_320():
    model = SSDLite().eval()
    x = torch.zeros(1, 3, 320, 320)
    feats = model.model.backbone(x)
    grids = [tuple(f.shape[-2:]) for f in feats]
    assert grids == [(20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]
    anchors = model.model.anchor_generator((320, 320), grids)
    assert anchors.shape == (3234, 4)  # torchvision's ssdlite320: 6 * (400+100+25+9+4+1)
    # First default box: centre of cell (0, 0) of the 20x20 map = 8 px, scale 0.2 -> 64 px.
    torch.testing.assert_close(anchors[0], torch.tensor([-24.0, -24.0, 40.0, 40.0]))
    # Last one: the 1x1 map, aspect 1/3 at scale 0.95, clamped to [0, 1] before placing.
    w, h = 0.95 / math.sqrt(3), min(0.95 * math.sqrt(3), 1.0)
    torch.testing.assert_close(anchors[-1], torch.tensor(
        [160 - 160 * w, 160 - 160 * h, 160 + 160 * w, 160 + 160 * h]))


def test_rpn_base_anchors():
    gen = AnchorGenerator(((32,),), ((0.5, 1.0, 2.0),))
    # torchvision's rounded base anchors for size 32 (h/w = 0.5, 1, 2)
    expected = torch.tensor([[-23.0, -11.0, 23.0, 11.0], [-16.0, -16.0, 16.0, 16.0],
                             [-11.0, -23.0, 11.0, 23.0]])
    anchors = gen((64, 96), [(2, 3)])
    assert anchors.shape == (2 * 3 * 3, 4)
    torch.testing.assert_close(anchors[:3], expected)
    torch.testing.assert_close(anchors[3:6], expected + torch.tensor([32.0, 0, 32.0, 0]))
    torch.testing.assert_close(anchors[9:12], expected + torch.tensor([0, 32.0, 0, 32.0]))


# --- NMS ------------------------------------------------------------------------------------------

def test_nms_hand_made():
    boxes = torch.tensor([
        [0.0, 0.0, 10.0, 10.0],    # 0: score .9
        [1.0, 1.0, 11.0, 11.0],    # 1: IoU with 0 = 81 / 119 = 0.68 -> suppressed at 0.5
        [20.0, 20.0, 30.0, 30.0],  # 2: alone -> kept
        [0.0, 0.0, 10.0, 5.0],     # 3: IoU with 0 = 0.5 exactly -> kept (suppress only if >)
    ])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    assert nms(boxes, scores, 0.5).tolist() == [0, 2, 3]
    assert nms(boxes, scores, 0.7).tolist() == [0, 1, 2, 3]
    assert nms(boxes, scores, 0.49).tolist() == [0, 2]
    # Per class: box 1 in another class than box 0 survives.
    labels = torch.tensor([1, 2, 1, 1])
    assert batched_nms(boxes, scores, labels, 0.5).tolist() == [0, 1, 2, 3]
    assert batched_nms(boxes, scores, torch.tensor([1, 1, 1, 1]), 0.49).tolist() == [0, 2]


def test_nms_chain_and_fixed_variant():
    # A chain: 0 suppresses 1; 1 would suppress 2, but 1 is gone, so 2 survives (greedy).
    boxes = torch.tensor([[0.0, 0, 10, 10], [3.0, 0, 13, 10], [6.0, 0, 16, 10]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert nms(boxes, scores, 0.5).tolist() == [0, 2]
    keep = nms_mask_fixed(boxes[None], scores[None], 0.5)
    assert keep.tolist() == [[True, False, True]]

    # Random batches: the tensor-only variant equals greedy NMS per image and per class.
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        xy = torch.rand(2, 80, 2, generator=gen) * 50
        wh = torch.rand(2, 80, 2, generator=gen) * 20 + 1
        b = torch.cat((xy, xy + wh), dim=-1)
        s = torch.rand(2, 80, generator=gen)
        lab = torch.randint(1, 3, (2, 80), generator=gen)
        valid = s > 0.2
        mask = nms_mask_fixed(b, s, 0.4, valid=valid, idxs=lab)
        for i in range(2):
            idx = torch.where(valid[i])[0]
            expected = idx[batched_nms(b[i, idx], s[i, idx], lab[i, idx], 0.4)]
            assert sorted(torch.where(mask[i])[0].tolist()) == sorted(expected.tolist())


# --- box coding -------------------------------------------------------------------------------

def test_nms_ties_resolve_by_index_in_both_variants():
    # Equal scores: the lower index ranks first, in the greedy and the fixed-shape NMS alike
    # (the exported graph must not depend on a sort's tie order).
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.5], [30.0, 0, 40, 10],
                          [0.0, 0.0, 10.0, 9.5]])
    scores = torch.tensor([0.7, 0.7, 0.7, 0.2])
    for perm in ([0, 1, 2, 3], [1, 0, 3, 2], [2, 3, 1, 0]):
        b, sc = boxes[perm], scores[perm]
        first_of_pair = min(perm.index(0), perm.index(1))  # 0 and 1 overlap, equal scores
        kept = nms(b, sc, 0.5).tolist()
        assert sorted(kept) == sorted([first_of_pair, perm.index(2)])
        mask = nms_mask_fixed(b[None], sc[None], 0.5, max_iterations=3)[0]
        assert torch.where(mask)[0].tolist() == sorted(kept)


def test_box_coder_round_trip():
    gen = torch.Generator().manual_seed(0)
    ref_xy = torch.rand(50, 2, generator=gen) * 100
    ref = torch.cat((ref_xy, ref_xy + torch.rand(50, 2, generator=gen) * 40 + 1), dim=1)
    gt_xy = torch.rand(50, 2, generator=gen) * 100
    gt = torch.cat((gt_xy, gt_xy + torch.rand(50, 2, generator=gen) * 40 + 1), dim=1)
    for weights in [(10.0, 10.0, 5.0, 5.0), (1.0, 1.0, 1.0, 1.0)]:
        coder = BoxCoder(weights)
        deltas = coder.encode(gt, ref)
        torch.testing.assert_close(coder.decode(deltas, ref), gt, atol=1e-4, rtol=1e-5)
    # A hand-made case: gt shifted by half a width and twice as wide.
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    d = coder.encode(torch.tensor([[0.0, 0.0, 20.0, 10.0]]), torch.tensor([[0.0, 0.0, 10.0, 10.0]]))
    torch.testing.assert_close(d, torch.tensor([[10 * 0.5, 0.0, 5 * math.log(2), 0.0]]))
    # Huge width deltas are clamped before exp (no inf).
    big = coder.decode(torch.tensor([[0.0, 0.0, 1e4, 0.0]]), torch.tensor([[0.0, 0.0, 10, 10]]))
    assert torch.isfinite(big).all()


# --- RoIAlign ---------------------------------------------------------------------------------

def _roi_align_reference(feat, roi, out, scale, sr):
    """torchvision's RoIAlign (aligned=False), one region, written out with loops."""
    c, h, w = feat.shape
    x1, y1, x2, y2 = [float(v) * scale for v in roi]
    rw, rh = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
    bw, bh = rw / out, rh / out
    result = torch.zeros(c, out, out)

    def bilinear(y, x):
        if y < -1.0 or y > h or x < -1.0 or x > w:
            return torch.zeros(c)
        y, x = max(y, 0.0), max(x, 0.0)
        y0, x0 = int(y), int(x)
        if y0 >= h - 1:
            y0 = y1_ = h - 1
            y = float(y0)
        else:
            y1_ = y0 + 1
        if x0 >= w - 1:
            x0 = x1_ = w - 1
            x = float(x0)
        else:
            x1_ = x0 + 1
        ly, lx = y - y0, x - x0
        return ((1 - ly) * (1 - lx) * feat[:, y0, x0] + (1 - ly) * lx * feat[:, y0, x1_]
                + ly * (1 - lx) * feat[:, y1_, x0] + ly * lx * feat[:, y1_, x1_])

    for ph in range(out):
        for pw in range(out):
            acc = torch.zeros(c)
            for iy in range(sr):
                for ix in range(sr):
                    acc += bilinear(y1 + ph * bh + (iy + 0.5) * bh / sr,
                                    x1 + pw * bw + (ix + 0.5) * bw / sr)
            result[:, ph, pw] = acc / (sr * sr)
    return result


def test_roi_align_hand_computed():
    feat = torch.zeros(1, 1, 4, 4)
    feat[0, 0, 1, 2] = 1.0
    # One bin, one sample at the centre of the region: (x, y) = (1.5, 1.25).
    # Bilinear weight of pixel (y=1, x=2): (1 - 0.25) * 0.5 = 0.375.
    rois = torch.tensor([[0.0, 0.5, 0.5, 2.5, 2.0]])
    out = roi_align(feat, rois, 1, spatial_scale=1.0, sampling_ratio=1)
    torch.testing.assert_close(out, torch.tensor([[[[0.375]]]]))
    # A linear map is reproduced exactly: value 10 y + x at the same centre = 14.
    ramp = (10 * torch.arange(4.0)[:, None] + torch.arange(4.0)[None]).view(1, 1, 4, 4)
    torch.testing.assert_close(roi_align(ramp, rois, 1, 1.0, 1), torch.tensor([[[[14.0]]]]))
    # Samples within one pixel outside read the border; further out they are zero.
    near = torch.tensor([[0.0, -0.9, -0.9, -0.1, -0.1]])   # centre (-0.5, -0.5) -> pixel (0, 0)
    far = torch.tensor([[0.0, -3.0, -3.0, -2.0, -2.0]])    # centre (-2.5, -2.5) -> 0
    assert roi_align(ramp + 1, near, 1, 1.0, 1).item() == pytest.approx(1.0)
    assert roi_align(ramp + 1, far, 1, 1.0, 1).item() == 0.0
    # spatial_scale: the same region in input pixels of a stride-2 map.
    torch.testing.assert_close(roi_align(ramp, rois * torch.tensor([1.0, 2, 2, 2, 2]), 1, 0.5, 1),
                               torch.tensor([[[[14.0]]]]))


def test_roi_align_matches_loop_reference():
    gen = torch.Generator().manual_seed(0)
    feat = torch.randn(2, 3, 9, 11, generator=gen)
    rois = torch.tensor([[0, 1.0, 2.0, 15.0, 12.0], [1, -3.0, -2.0, 6.0, 30.0],
                         [0, 20.0, 16.0, 21.0, 17.0], [1, 0.0, 0.0, 22.0, 18.0]])
    out = roi_align(feat, rois, 3, spatial_scale=0.5, sampling_ratio=2)
    for r, roi in enumerate(rois):
        expected = _roi_align_reference(feat[int(roi[0])], roi[1:], 3, 0.5, 2)
        torch.testing.assert_close(out[r], expected, atol=1e-5, rtol=1e-4)


def test_multiscale_roi_align_levels():
    # Levels "0" (stride 4) and "1" (stride 8): a 224 px box maps to level 4 -> clamped to 3
    # ("1"), a 20 px box to level 2 (clamped to "0").
    pooler = MultiScaleRoIAlign(["0", "1"], output_size=2, sampling_ratio=2)
    f0 = torch.full((1, 1, 64, 64), 1.0)
    f1 = torch.full((1, 1, 32, 32), 2.0)
    boxes = [torch.tensor([[0.0, 0.0, 20.0, 20.0], [0.0, 0.0, 224.0, 224.0]])]
    out = pooler({"0": f0, "1": f1, "pool": f1}, boxes, [(256, 256)])
    assert out.shape == (2, 1, 2, 2)
    assert out[0].unique().tolist() == [1.0] and out[1].unique().tolist() == [2.0]
    # The fixed-shape path pools the same levels (scales from the shapes).
    fixed = pooler.forward_fixed({"0": f0, "1": f1, "pool": f1}, boxes[0][None],
                                 torch.tensor([256, 256]))
    torch.testing.assert_close(fixed, out)


# --- training ---------------------------------------------------------------------------------

def _toy_batch(size=(96, 96)):
    # Two images: SSDLite's last map is 1x1, and BatchNorm cannot train on a single value per
    # channel (torchvision's SSDLite has the same limit).
    img = torch.zeros(2, 3, *size)
    img[0, :, 30:70, 20:60] = 2.0
    img[1, :, 10:50, 40:90] = 2.0
    targets = [{"boxes": torch.tensor([[20.0, 30.0, 60.0, 70.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[40.0, 10.0, 90.0, 50.0]]), "labels": torch.tensor([1])}]
    return img, targets


def test_ssdlite_loss_falls():
    torch.manual_seed(0)
    model = SSDLite()
    # A 128x128 network input instead of 320 (maps 8, 4, 2, 1, 1, 1) keeps this fast on CPU;
    # the loss code does not depend on the size.
    model.model.transform.fixed_size = (128, 128)
    model.train()
    img, targets = _toy_batch()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    totals = []
    for _ in range(6):
        losses, detections = model(img, targets)
        assert set(losses) == {"bbox_regression", "classification"} and detections == []
        total = sum(losses.values())
        opt.zero_grad()
        total.backward()
        opt.step()
        totals.append(total.item())
    assert all(math.isfinite(t) for t in totals)
    assert totals[-1] < 0.7 * totals[0], totals


# slow: detector training losses stay in the fast tier through SSDLite's above.
@pytest.mark.slow
def test_fasterrcnn_loss_falls():
    torch.manual_seed(0)
    model = FasterRCNN(variant="fasterrcnn_mobilenet_v3_large_fpn", min_size=96, max_size=96)
    model.model.roi_heads.batch_size_per_image = 64
    model.model.rpn._pre_nms_top_n["training"] = 300
    model.model.rpn._post_nms_top_n["training"] = 100
    model.train()
    img, targets = _toy_batch()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    totals = []
    for _ in range(8):
        losses, _ = model(img, targets)
        assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness",
                               "loss_rpn_box_reg"}
        total = sum(losses.values())
        opt.zero_grad()
        total.backward()
        opt.step()
        totals.append(total.item())
    assert all(math.isfinite(t) for t in totals)
    # Proposals and sampled RoIs are random: compare the mean of the last two steps.
    assert sum(totals[-2:]) / 2 < 0.8 * totals[0], totals


def test_get_target_converts_xywh():
    det = SSDLite()
    labels = {"boxes": torch.tensor([[[10.0, 20.0, 30.0, 40.0], [0.0, 0.0, 0.0, 0.0]]]),
              "labels": torch.tensor([[1, 0]]), "area": torch.tensor([[1200.0, 0.0]]),
              "is_crowd": torch.tensor([[0, 0]])}
    target = det.get_target(labels)
    assert target[0]["boxes"].tolist() == [[10.0, 20.0, 40.0, 60.0]]
    assert labels["boxes"][0, 0].tolist() == [10.0, 20.0, 30.0, 40.0]  # input untouched
