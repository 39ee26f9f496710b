"""Unique-bodypart and identity heads (DeepLabCut 3's ``heads.unique_bodypart`` /
``heads.identity``): IdentityPredictor on hand-made maps, identity assignment, identity and
unique-bodypart targets, and the heads as make_pytorch_pose_config builds them."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from dlc_train.config import make_pytorch_pose_config
from dlc_train.models import PREDICTORS, TARGET_GENERATORS, PoseModel
from dlc_train.models.predictors.identity import IdentityPredictor, assign_identity

STRIDE = 8.0


def logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def dlc_keypoint_scores(predictor: IdentityPredictor, stride: float, heatmap: torch.Tensor,
                        poses: np.ndarray) -> np.ndarray:
    """DeepLabCut's route, step by step: full-resolution maps, then np.rint + clip + read."""
    maps = predictor(stride, {"heatmap": heatmap})["heatmap"].numpy()   # (B, H, W, ids)
    batch, h, w, ids = maps.shape
    out = np.zeros((*poses.shape[:3], ids))
    for b in range(batch):
        idx = np.rint(poses[b, ..., :2]).astype(int)
        xs, ys = np.clip(idx[..., 0], 0, w - 1), np.clip(idx[..., 1], 0, h - 1)
        out[b] = maps[b, ys, xs]
    return out


# ------------------------------------------------------------------------ IdentityPredictor


def test_identity_predictor_is_registered():
    assert isinstance(PREDICTORS.build({"type": "IdentityPredictor", "apply_sigmoid": True}),
                      IdentityPredictor)


def test_forward_resizes_applies_sigmoid_and_puts_identities_last():
    # channel c is a constant map of probability p_c: every pixel of the output must hold it.
    probs = [0.2, 0.7, 0.9]
    heatmap = torch.stack([torch.full((5, 6), logit(p)) for p in probs])[None]
    out = IdentityPredictor()(STRIDE, {"heatmap": heatmap})["heatmap"]
    assert out.shape == (1, 40, 48, 3)
    np.testing.assert_allclose(out[0, 17, 30].numpy(), probs, atol=1e-6)
    np.testing.assert_allclose(out.amin(dim=(0, 1, 2)).numpy(), probs, atol=1e-6)
    raw = IdentityPredictor(apply_sigmoid=False)(STRIDE, {"heatmap": heatmap})["heatmap"]
    np.testing.assert_allclose(raw[0, 0, 0].numpy(), [logit(p) for p in probs], atol=1e-5)


def test_keypoint_scores_on_a_ramp_known_answer():
    # Logits rise by 1 per cell along x (identity 0) and fall along x (identity 1). Bilinear
    # upsampling (align_corners=False) reads pixel x at cell (x + 0.5) / stride - 0.5, so an
    # interior keypoint at (x, y) scores sigmoid(+-((round(x) + 0.5) / 8 - 0.5)).
    h, w = 4, 8
    ramp = torch.arange(w, dtype=torch.float32).expand(h, w)
    heatmap = torch.stack((ramp - 3.0, 3.0 - ramp))[None]              # (1, 2, 4, 8)
    poses = torch.tensor([[[[20.0, 9.0, 0.9], [35.4, 20.0, 0.8]],
                           [[44.6, 3.0, 0.7], [12.5, 30.0, 0.6]]]])   # (1, N=2, K=2, 3)
    scores = IdentityPredictor().keypoint_scores(STRIDE, {"heatmap": heatmap}, poses)
    assert scores.shape == (1, 2, 2, 2)
    for n in range(2):
        for k in range(2):
            cell = (np.rint(poses[0, n, k, 0].item()) + 0.5) / STRIDE - 0.5
            want = 1 / (1 + np.exp(-np.array([cell - 3.0, 3.0 - cell])))
            np.testing.assert_allclose(scores[0, n, k].numpy(), want, atol=1e-6)
    # 12.5 rounds half to even (12), as np.rint: cell 1.0625, not 1.1875.
    np.testing.assert_allclose(scores[0, 1, 1, 0].item(), 1 / (1 + np.exp(3.0 - 1.0625)),
                               atol=1e-6)


def test_keypoint_scores_clip_to_the_map_border():
    # Identity 0 is sure left (cell column 0), identity 1 sure right (last column).
    heatmap = torch.full((1, 2, 3, 4), -8.0)
    heatmap[0, 0, :, 0] = 8.0
    heatmap[0, 1, :, -1] = 8.0
    poses = torch.tensor([[[[-50.0, 5.0, 1.0], [float("nan"), float("nan"), 0.0],
                            [500.0, 11.0, 1.0]]]])                    # (1, 1, 3, 3)
    scores = IdentityPredictor().keypoint_scores(STRIDE, {"heatmap": heatmap}, poses)[0, 0]
    sure, unsure = 1 / (1 + np.exp(-8.0)), 1 / (1 + np.exp(8.0))
    np.testing.assert_allclose(scores[0].numpy(), [sure, unsure], atol=1e-6)   # clipped to x=0
    np.testing.assert_allclose(scores[1].numpy(), [sure, unsure], atol=1e-6)   # NaN -> border
    np.testing.assert_allclose(scores[2].numpy(), [unsure, sure], atol=1e-6)   # x = W - 1


@pytest.mark.parametrize("stride", [8.0, 4.0, 2.0])
def test_keypoint_scores_match_deeplabcut_route(stride):
    torch.manual_seed(0)
    heatmap = torch.randn(2, 3, 7, 9) * 3
    size_h, size_w = 7 * stride, 9 * stride
    xy = torch.rand(2, 3, 5, 2) * torch.tensor([size_w + 20, size_h + 20]) - 10
    poses = torch.cat((xy, torch.rand(2, 3, 5, 1)), dim=-1)
    predictor = IdentityPredictor()
    ours = predictor.keypoint_scores(stride, {"heatmap": heatmap}, poses).numpy()
    theirs = dlc_keypoint_scores(predictor, stride, heatmap, poses.numpy())
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_keypoint_scores_trace_to_onnx_shapes(tmp_path):
    """Tensor ops only: the sampling exports and keeps dynamic batch / H / W."""
    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.predictor = IdentityPredictor()

        def forward(self, heatmap, poses):
            return self.predictor.keypoint_scores(STRIDE, {"heatmap": heatmap}, poses)

    path = tmp_path / "identity.onnx"
    heatmap, poses = torch.randn(1, 2, 5, 6), torch.rand(1, 2, 4, 3) * 40
    torch.onnx.export(Wrap(), (heatmap, poses), str(path), input_names=["heatmap", "poses"],
                      output_names=["scores"], dynamo=False,
                      dynamic_axes={"heatmap": {0: "b", 2: "h", 3: "w"}, "poses": {0: "b"}})
    onnx.checker.check_model(onnx.load(str(path)))
    heatmap, poses = torch.randn(3, 2, 7, 4), torch.rand(3, 2, 4, 3) * 50
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"heatmap": heatmap.numpy(), "poses": poses.numpy()})[0]
    np.testing.assert_allclose(got, Wrap()(heatmap, poses).numpy(), atol=1e-5)


# -------------------------------------------------------------------------- assignment


def test_assign_identity_known_permutation():
    poses = np.ones((3, 2, 3))
    scores = np.zeros((3, 2, 3))
    scores[0, :, 2] = 0.9   # animal 0 looks like individual 2
    scores[1, :, 0] = 0.8   # animal 1 like individual 0
    scores[2, :, 1] = 0.7   # animal 2 like individual 1
    order = assign_identity(poses, scores)
    assert order.tolist() == [1, 2, 0]
    # Keypoint confidence weighs the scores: a confident keypoint outvotes two unsure ones.
    poses = np.ones((2, 3, 3))
    poses[0, :, 2] = [1.0, 0.1, 0.1]
    scores = np.zeros((2, 3, 2))
    scores[0] = [[0.9, 0.1], [0.1, 0.9], [0.1, 0.9]]   # confident kpt says id 0
    scores[1] = [[0.5, 0.5]] * 3
    assert assign_identity(poses, scores).tolist() == [0, 1]


def test_assign_identity_needs_one_prediction_per_individual():
    with pytest.raises(ValueError):
        assign_identity(np.ones((2, 4, 3)), np.ones((2, 4, 3)))
    with pytest.raises(ValueError):
        assign_identity(np.ones((3, 4, 3)), np.ones((2, 4, 2)))


# ---------------------------------------------------------------------------- targets


def identity_generator(num_individuals: int = 2):
    return TARGET_GENERATORS.build({"type": "HeatmapPlateauGenerator",
                                    "num_heatmaps": num_individuals, "pos_dist_thresh": 17,
                                    "heatmap_mode": "INDIVIDUAL", "generate_locref": False})


def test_identity_targets_one_plateau_per_individual():
    gen = identity_generator()
    # individual 0 has keypoints near (20, 20) and (60, 20); individual 1 one at (100, 60).
    kpts = torch.full((1, 2, 3, 3), -1.0)
    kpts[0, 0, 0] = torch.tensor([20.0, 20.0, 2.0])
    kpts[0, 0, 1] = torch.tensor([60.0, 20.0, 2.0])
    kpts[0, 1, 2] = torch.tensor([100.0, 60.0, 2.0])
    outputs = {"heatmap": torch.zeros(1, 2, 10, 16)}                   # stride 8: 80 x 128 px
    labels = {"keypoints": kpts, "individual_ids": torch.tensor([[0, 1]])}
    targets = gen(STRIDE, outputs, labels)
    assert set(targets) == {"heatmap"}
    target = targets["heatmap"]["target"][0]
    cx = torch.arange(16) * STRIDE + STRIDE / 2
    cy = torch.arange(10) * STRIDE + STRIDE / 2

    def plateau(points):
        d2 = torch.stack([(cx - x) ** 2 + (cy[:, None] - y) ** 2 for x, y in points]).amin(0)
        return (d2 <= 17 ** 2).float()

    torch.testing.assert_close(target[0], plateau([(20, 20), (60, 20)]))
    torch.testing.assert_close(target[1], plateau([(100, 60)]))
    # Individual ids, not the row order, pick the channel.
    swapped = gen(STRIDE, outputs, {"keypoints": kpts, "individual_ids": torch.tensor([[1, 0]])})
    torch.testing.assert_close(swapped["heatmap"]["target"][0, [1, 0]], target)


def test_unique_bodypart_targets_read_their_own_labels():
    proj = project(unique=["u0", "u1"], identity=False)
    cfg = make_pytorch_pose_config(proj, "pytorch_config.yaml", "resnet_tiny")
    gen = TARGET_GENERATORS.build(cfg["model"]["heads"]["unique_bodypart"]["target_generator"])
    unique = torch.tensor([[[26.0, 42.0, 2.0], [-1.0, -1.0, 0.0]]])    # (B, U, 3)
    outputs = {"heatmap": torch.zeros(1, 2, 9, 9), "locref": torch.zeros(1, 4, 9, 9)}
    targets = gen(STRIDE, outputs, {"keypoints": torch.zeros(1, 2, 4, 3),
                                    "keypoints_unique": unique})
    heatmap = targets["heatmap"]["target"][0]
    # peak at the cell whose centre (28, 44) lies nearest (26, 42); nothing for u1
    assert torch.argmax(heatmap[0]).item() == 5 * 9 + 3
    assert heatmap[1].abs().max() == 0


# ------------------------------------------------------------------- heads in a PoseModel


def project(unique: list[str], identity: bool) -> dict:
    return {"multianimalproject": True, "bodyparts": "MULTI!",
            "multianimalbodyparts": ["a", "b", "c", "d"], "individuals": ["i0", "i1"],
            "uniquebodyparts": unique, "identity": identity}


def test_unique_and_identity_heads_keys_shapes_and_predictions():
    torch.manual_seed(0)
    cfg = make_pytorch_pose_config(project(["u0", "u1", "u2"], True), "pytorch_config.yaml",
                                   "resnet_tiny")
    model = PoseModel.build(cfg["model"]).eval()
    channels = cfg["model"]["backbone_output_channels"]
    keys = {k: tuple(v.shape) for k, v in model.state_dict().items()
            if k.startswith(("heads.unique_bodypart.", "heads.identity."))}
    # DeepLabCut 3's key layout: unique bodyparts like the bodypart heatmap head (with
    # locref), identity a single deconv with one channel per individual and no locref.
    assert keys == {
        "heads.unique_bodypart.heatmap_head.deconv_layers.0.weight": (channels, 3, 3, 3),
        "heads.unique_bodypart.heatmap_head.deconv_layers.0.bias": (3,),
        "heads.unique_bodypart.locref_head.deconv_layers.0.weight": (channels, 6, 3, 3),
        "heads.unique_bodypart.locref_head.deconv_layers.0.bias": (6,),
        "heads.identity.heatmap_head.deconv_layers.0.weight": (channels, 2, 3, 3),
        "heads.identity.heatmap_head.deconv_layers.0.bias": (2,),
    }
    with torch.no_grad():
        outputs = model(torch.randn(2, 3, 64, 96))
        preds = model.get_predictions(outputs)
    assert preds["bodypart"]["poses"].shape == (2, 2, 4, 3)
    assert preds["unique_bodypart"]["poses"].shape == (2, 1, 3, 3)
    stride = model.get_stride("identity")
    h, w = outputs["identity"]["heatmap"].shape[2:]
    id_maps = preds["identity"]["heatmap"]
    assert id_maps.shape == (2, int(h * stride), int(w * stride), 2)
    assert 0 <= id_maps.min() and id_maps.max() <= 1
    predictor = model.heads["identity"].predictor
    scores = predictor.keypoint_scores(stride, outputs["identity"], preds["bodypart"]["poses"])
    assert scores.shape == (2, 2, 4, 2)
    np.testing.assert_allclose(
        scores.numpy(),
        dlc_keypoint_scores(predictor, stride, outputs["identity"]["heatmap"],
                            preds["bodypart"]["poses"].numpy()), atol=1e-5)
