"""The model zoo on CPU: every net_type make_pytorch_pose_config supports runs forward and
decodes keypoints of the right shape at two input sizes, and every target generator + loss
combination trains a few steps with a clearly falling loss.

Projects as in ../shared/dlc3: 4 bodyparts; multi-animal with 2 individuals. Plain backbones
are tried on both project kinds, every other architecture (DEKR, DLCRNet, top-down, RTMPose,
CTD) on the multi-animal project it is made for. Top-down models get crop-sized inputs.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import pytest
import torch

from dlc_train.config import available_net_types, make_pytorch_pose_config
from dlc_train.config.architectures import ARCHITECTURES
from dlc_train.models import PoseModel
from dlc_train.models.heads.rtmcc import RTMCCHead
from helpers.variants import tiered

BODYPARTS = ["a", "b", "c", "d"]
INDIVIDUALS = ["i0", "i1"]
BATCH = 2
# (height, width): square and not, both multiples of 32 (HRNet / CSPNeXt strides).
BU_SIZES = [(64, 64), (64, 96)]


def project(kind: str, unique: list[str] | None = None, identity: bool = False) -> dict:
    if kind == "sa":
        return {"multianimalproject": False, "bodyparts": list(BODYPARTS)}
    return {"multianimalproject": True, "bodyparts": "MULTI!",
            "multianimalbodyparts": list(BODYPARTS), "individuals": list(INDIVIDUALS),
            "uniquebodyparts": list(unique or []), "identity": identity}


def zoo_cases() -> list:
    cases = []
    for net_type in available_net_types():
        arch = ARCHITECTURES.get(net_type)
        kinds = ["sa", "ma"] if arch is not None and arch.is_backbone else ["ma"]
        cases += [(net_type, kind) for kind in kinds]
    return tiered(cases, net_type=lambda case: case[0], ids=lambda case: "-".join(case))


@pytest.fixture(autouse=True)
def one_thread():
    """The shared cores are faster with one thread per test process than with contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def with_crop(cfg: dict, width: int, height: int) -> dict:
    """A top-down config for another crop size (RTMPose's head is built for its crop)."""
    cfg = copy.deepcopy(cfg)
    if cfg["model"]["heads"]["bodypart"]["type"] == "RTMCCHead":
        RTMCCHead.update_input_size(cfg, (width, height))
    for split in ("inference", "train"):
        cfg["data"][split]["top_down_crop"].update(width=width, height=height)
    if "img_size" in cfg["model"]["backbone"]:
        # CTD backbones are built for their crop (height, width), as in DeepLabCut's configs.
        cfg["model"]["backbone"]["img_size"] = [height, width]
    return cfg


def input_sizes(cfg: dict) -> list[tuple[dict, tuple[int, int]]]:
    """[(config, (height, width))]: two sizes per model."""
    if cfg["method"] == "bu":
        return [(cfg, size) for size in BU_SIZES]
    crop = cfg["data"]["inference"]["top_down_crop"]
    w, h = crop["width"], crop["height"]
    # the config's crop, and a smaller, non-square one (the config rewritten for it)
    return [(cfg, (h, w)), (with_crop(cfg, 192, 256), (256, 192))]


def expected_individuals(cfg: dict, kind: str) -> int:
    # bottom-up multi-animal models output every animal; single-animal and (C)TD one per crop
    return len(INDIVIDUALS) if cfg["method"] == "bu" and kind == "ma" else 1


def forward(model: PoseModel, cfg: dict, images: torch.Tensor) -> dict:
    if cfg["method"] == "ctd":
        # CTD models take the conditioning pose of each crop (DeepLabCut's ``cond_kpts``).
        h, w = images.shape[2:]
        cond = torch.rand(images.shape[0], 1, len(BODYPARTS), 3) * torch.tensor([w, h, 1.0])
        return model(images, cond_kpts=cond)
    return model(images)


@pytest.mark.parametrize("net_type, kind", zoo_cases())
def test_forward_and_predictions_at_two_sizes(net_type: str, kind: str):
    torch.manual_seed(0)
    cfg = make_pytorch_pose_config(project(kind), "pytorch_config.yaml", net_type)
    num_individuals = expected_individuals(cfg, kind)
    for size_cfg, (h, w) in input_sizes(cfg):
        model = PoseModel.build(size_cfg["model"]).eval()
        with torch.no_grad():
            outputs = forward(model, size_cfg, torch.randn(BATCH, 3, h, w))
            predictions = model.get_predictions(outputs)
        assert set(predictions) == set(size_cfg["model"]["heads"])
        poses = predictions["bodypart"]["poses"]
        assert poses.shape == (BATCH, num_individuals, len(BODYPARTS), 3), (h, w)
        assert poses.dtype.is_floating_point
        check_missing_convention(poses)


def check_missing_convention(poses: torch.Tensor) -> None:
    """Scores are finite; a keypoint is either finite or missing as (NaN, NaN, 0), which the
    PAF assembly writes for animals and bodyparts it did not find (DeepLabCut's NaN rows)."""
    xy, scores = poses[..., :2], poses[..., 2]
    assert torch.isfinite(scores).all()
    missing = torch.isnan(xy).any(dim=-1)
    assert torch.isnan(xy[missing]).all()
    assert (scores[missing] == 0).all()
    assert torch.isfinite(xy[~missing]).all()


# ------------------------------------------------------------------------------- training


def td_config(net_type: str, size: int) -> dict:
    cfg = make_pytorch_pose_config(project("ma"), "pytorch_config.yaml", net_type)
    return with_crop(cfg, size, size)


@dataclass(frozen=True)
class TrainCase:
    """A target generator + loss combination, on the smallest real model that carries it.

    Args:
        make_config: builds the pytorch_config.
        individuals: animals per image in the labels.
        must_fall: the losses ("<head>_<output>") that must fall.
        steps, lr, batch: the optimisation (Adam on a fixed synthetic batch).
    """

    make_config: Callable[[], dict]
    individuals: int
    must_fall: tuple[str, ...]
    steps: int = 30
    lr: float = 3e-3
    batch: int = 2


TRAIN_CASES = {
    # HeatmapGaussianGenerator + WeightedMSE (heatmap) / WeightedHuber (locref), bottom-up
    "heatmap_gaussian-mse_huber": TrainCase(
        lambda: make_pytorch_pose_config(project("sa"), "p.yaml", "resnet_tiny"), 1,
        ("bodypart_heatmap", "bodypart_locref")),
    # the same with gradient masking and a 1x1 head (top-down crops)
    "heatmap_gaussian_masked-mse_huber-top_down": TrainCase(
        lambda: td_config("top_down_resnet_tiny", 64), 1,
        ("bodypart_heatmap", "bodypart_locref")),
    # SequentialGenerator(HeatmapPlateau + PartAffinityField) + BCE / Huber / Huber
    "heatmap_plateau_paf-bce_huber_huber": TrainCase(
        lambda: make_pytorch_pose_config(project("ma"), "p.yaml", "resnet_tiny"), 2,
        ("bodypart_heatmap", "bodypart_locref", "bodypart_paf")),
    # DEKRGenerator + DEKRHeatmapLoss / DEKROffsetLoss. HRNet-w18 is the smallest DEKR; its
    # offsets start near 0 and move slowly, hence the larger step on a single image.
    "dekr-heatmap_offset": TrainCase(
        lambda: make_pytorch_pose_config(project("ma"), "p.yaml", "dekr_w18"), 2,
        ("bodypart_heatmap", "bodypart_offset"), steps=20, lr=1e-2, batch=1),
    # SimCCGenerator + KLDiscreteLoss (RTMPose-s on 64x64 crops)
    "simcc-kl": TrainCase(lambda: td_config("rtmpose_s", 64), 1, ("bodypart_x", "bodypart_y"),
                          steps=20),
    # unique bodyparts (HeatmapGaussianGenerator on keypoints_unique) and identity
    # (HeatmapPlateauGenerator in INDIVIDUAL mode + WeightedBCE)
    "unique_heatmap-identity_plateau_bce": TrainCase(
        lambda: make_pytorch_pose_config(project("ma", unique=["u0"], identity=True), "p.yaml",
                                         "resnet_tiny"), 2,
        ("unique_bodypart_heatmap", "unique_bodypart_locref", "identity_heatmap")),
}


def synthetic_labels(batch: int, num_individuals: int, size: int,
                     generator: torch.Generator) -> dict:
    """Keypoints away from the border, all visible; individuals in row order."""
    xy = 8 + torch.rand(batch, num_individuals, len(BODYPARTS), 2, generator=generator) * (
        size - 16)
    unique_xy = 8 + torch.rand(batch, 1, 2, generator=generator) * (size - 16)
    return {"keypoints": torch.cat((xy, torch.full((*xy.shape[:3], 1), 2.0)), dim=-1),
            "keypoints_unique": torch.cat((unique_xy, torch.full((batch, 1, 1), 2.0)), dim=-1),
            # DeepLabCut's datasets give each row's individual index (identity targets).
            "individual_ids": torch.arange(num_individuals).expand(batch, -1).clone()}


@pytest.mark.parametrize("name", list(TRAIN_CASES))
def test_target_generator_and_loss_train(name: str):
    case = TRAIN_CASES[name]
    torch.manual_seed(0)
    model = PoseModel.build(case.make_config()["model"]).train()
    size = 64
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(case.batch, 3, size, size, generator=generator)
    labels = synthetic_labels(case.batch, case.individuals, size, generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=case.lr)
    history = []
    for _ in range(case.steps):
        outputs = model(images)
        losses = model.get_loss(outputs, model.get_target(outputs, labels))
        # The unweighted sum, not DeepLabCut's weighted total: with weights of 0.03-0.1 the
        # locref / offset / PAF terms would barely move in a few steps, and each generator +
        # criterion pair is under test here, not the weighting.
        objective = sum(v for k, v in losses.items() if k != "total_loss")
        optimizer.zero_grad()
        objective.backward()
        optimizer.step()
        history.append({k: float(v.detach()) for k, v in losses.items()})
    first, last = history[0], history[-1]
    for key in case.must_fall:
        assert key in first, (key, sorted(first))
        assert last[key] < 0.7 * first[key], (key, [round(h[key], 4) for h in history])
