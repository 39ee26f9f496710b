"""Training runner: snapshots, resume, schedulers, on a tiny synthetic DeepLabCut project."""
from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from dlc_train.apis import train_network
from dlc_train.config import ConfigError
from dlc_train.data.dlcloader import DLCLoader
from dlc_train.runners.schedulers import LRListScheduler, build_optimizer, build_scheduler
from dlc_train.runners.snapshots import SnapshotError, SnapshotManager, load_snapshot

BODYPARTS = ["head", "tail"]


def make_project(root: Path, n_images: int = 6) -> Path:
    """A 64x64 single-animal DeepLabCut project: two white dots per image, labels in H5 + CSV."""
    rng = np.random.default_rng(0)
    folder = root / "labeled-data" / "vid"
    folder.mkdir(parents=True)
    rows, index = [], []
    for i in range(n_images):
        img = np.zeros((64, 64, 3), np.uint8)
        row = []
        for k in range(len(BODYPARTS)):
            x, y = rng.uniform(12, 52, size=2)
            cv2.circle(img, (int(x), int(y)), 3, (255, 255, 255 * k), -1)
            row += [x + 0.5, y + 0.5]
        if i == 0:
            row[2:4] = [np.nan, np.nan]  # an unlabeled keypoint
        cv2.imwrite(str(folder / f"img{i:03d}.png"), img)
        rows.append(row)
        index.append(f"labeled-data/vid/img{i:03d}.png")
    cols = pd.MultiIndex.from_product([["tester"], BODYPARTS, ["x", "y"]],
                                      names=["scorer", "bodyparts", "coords"])
    df = pd.DataFrame(rows, index=index, columns=cols)
    df.to_hdf(folder / "CollectedData_tester.h5", key="df_with_missing")
    df.to_csv(folder / "CollectedData_tester.csv")
    cfg = {"Task": "dots", "scorer": "tester", "date": "Jan1", "multianimalproject": False,
           "project_path": "WILL BE AUTOMATICALLY UPDATED BY DEMO CODE",
           "bodyparts": BODYPARTS, "TrainingFraction": [0.67], "iteration": 0,
           "default_net_type": "resnet_18"}
    (root / "config.yaml").write_text(yaml.safe_dump(cfg))
    return root / "config.yaml"


# Tiny and deterministic: no random augmentation, every epoch saved and evaluated.
OVERRIDES = {
    "data": {"train": {"affine": None, "crop_sampling": None, "motion_blur": False,
                       "gaussian_noise": None, "normalize_images": True},
             "inference": {"normalize_images": True}},
    "runner": {"eval_interval": 1,
               "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}},
               "scheduler": {"type": "LRListScheduler",
                             "params": {"milestones": [1], "lr_list": [["1e-4"]]}},
               "snapshots": {"max_snapshots": 5, "save_epochs": 1,
                             "save_optimizer_state": True}},
    "train_settings": {"batch_size": 2, "seed": 3, "display_iters": 1},
}


def _regular(folder: Path) -> set[str]:
    return {p.name for p in folder.glob("snapshot-[0-9]*.pt")}


def test_train_two_epochs_then_resume(tmp_path: Path):
    config = make_project(tmp_path / "proj")
    train_folder = train_network(config, epochs=1, device="cpu", net_type="resnet_18",
                                 pytorch_config_overrides=OVERRIDES)
    assert train_folder == DLCLoader(config).train_folder
    assert train_folder.name == "train" and train_folder.parent.name == "dotsJan1-trainset67shuffle1"
    pose_cfg = yaml.safe_load((train_folder / "pytorch_config.yaml").read_text())
    assert pose_cfg["model"]["backbone"]["model_name"] == "resnet18"
    assert _regular(train_folder) == {"snapshot-001.pt"}
    first = (train_folder / "snapshot-001.pt").read_bytes()

    snap = load_snapshot(train_folder / "snapshot-001.pt")
    assert set(snap) == {"metadata", "model", "scheduler", "optimizer"}
    assert snap["metadata"]["epoch"] == 1
    # DeepLabCut 3's runner's names (its SnapshotManager reads metrics/<key_metric>).
    assert {"metrics/test.rmse", "metrics/test.rmse_pcutoff", "metrics/test.mAP"} <= set(
        snap["metadata"]["metrics"])
    assert {"train.total_loss", "eval.total_loss"} <= set(snap["metadata"]["losses"])
    assert any(k.startswith("backbone.model.") for k in snap["model"])
    assert any(k.startswith("heads.bodypart.") for k in snap["model"])
    # The LR list moved to 1e-4 at milestone 1 (after the first epoch's scheduler step).
    assert snap["scheduler"]["last_epoch"] == 1
    step1 = max(s["step"] for s in snap["optimizer"]["state"].values())

    train_network(config, epochs=2, device="cpu", resume=True)
    assert _regular(train_folder) == {"snapshot-001.pt", "snapshot-002.pt"}
    assert (train_folder / "snapshot-001.pt").read_bytes() == first  # not rewritten
    snap2 = load_snapshot(train_folder / "snapshot-002.pt")
    assert snap2["metadata"]["epoch"] == 2
    assert snap2["scheduler"]["last_epoch"] == 2
    assert snap2["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-4)
    # Adam's step count continued from the restored state (2 batches per epoch).
    assert max(s["step"] for s in snap2["optimizer"]["state"].values()) == 2 * step1
    with open(train_folder / "learning_stats.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["step"] for r in rows] == ["1", "2"]
    assert rows[1]["metrics/test.rmse"] != ""
    # Nothing more to do at epoch 2 of 2: refused (it used to succeed silently), nothing changes.
    second = (train_folder / "snapshot-002.pt").read_bytes()
    with pytest.raises(ConfigError, match="snapshot-002.pt is at epoch 2"):
        train_network(config, epochs=2, device="cpu", resume=True)
    assert _regular(train_folder) == {"snapshot-001.pt", "snapshot-002.pt"}
    assert (train_folder / "snapshot-002.pt").read_bytes() == second


def test_truncated_snapshot_is_a_clear_error(tmp_path: Path):
    path = tmp_path / "snapshot-001.pt"
    torch.save({"metadata": {"epoch": 1}, "model": {"w": torch.zeros(1000)},
                "scheduler": None}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SnapshotError, match="truncated or corrupt") as info:
        load_snapshot(path)
    assert "\n" not in str(info.value)
    with pytest.raises(SnapshotError, match="not found"):
        load_snapshot(tmp_path / "missing.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(SnapshotError, match="not a DeepLabCut snapshot"):
        load_snapshot(tmp_path / "other.pt")


def test_resume_from_truncated_snapshot_fails_clearly(tmp_path: Path):
    config = make_project(tmp_path / "proj")
    loader = DLCLoader(config)
    loader.train_folder.mkdir(parents=True)
    (loader.train_folder / "snapshot-003.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(SnapshotError, match="snapshot-003.pt"):
        train_network(config, epochs=4, device="cpu", resume=True, net_type="resnet_18",
                      pytorch_config_overrides=OVERRIDES)


def test_snapshot_manager_policy(tmp_path: Path):
    manager = SnapshotManager(tmp_path, key_metric="test.rmse", key_metric_asc=False,
                              max_snapshots=2, save_epochs=2)
    rmse = {1: 5.0, 2: 4.0, 3: 6.0, 4: 3.0, 5: 3.5, 6: 4.0, 7: 9.0}
    for epoch, value in rmse.items():
        # DeepLabCut's metric name; the best (epoch 4) as our snapshots named it before.
        name = "test.rmse" if epoch == 4 else "metrics/test.rmse"
        state = {"metadata": {"epoch": epoch, "metrics": {name: value}, "losses": {}},
                 "model": {"w": torch.tensor([float(epoch)])}, "scheduler": None}
        manager.update(epoch, state, last=epoch == 7)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["snapshot-006.pt", "snapshot-007.pt", "snapshot-best-004.pt"]
    assert not list(tmp_path.glob("*.tmp"))
    fresh = SnapshotManager(tmp_path, key_metric="test.rmse", key_metric_asc=False)
    fresh.restore_best_metric()
    assert fresh.best_metric == 3.0
    assert fresh.latest().path.name == "snapshot-007.pt"


def test_lr_list_scheduler_and_resume_without_optimizer_state():
    model = torch.nn.Linear(2, 2)
    opt = build_optimizer({"type": "SGD", "params": {"lr": 0.1}}, model.parameters())
    sched = build_scheduler({"type": "LRListScheduler",
                             "params": {"milestones": [2, 4], "lr_list": [[0.01], ["1e-3"]]}},
                            opt)
    assert isinstance(sched, LRListScheduler)
    lrs = []
    for _ in range(5):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.01, 1e-3])
    # A fresh optimizer + restored scheduler state gives the scheduled LR, not the initial one.
    opt2 = build_optimizer({"type": "SGD", "params": {"lr": 0.1}}, model.parameters())
    sched2 = build_scheduler({"type": "StepLR", "params": {"step_size": 2, "gamma": 0.5}}, opt2)
    for _ in range(3):
        opt2.step()
        sched2.step()
    state = sched2.state_dict()
    opt3 = build_optimizer({"type": "SGD", "params": {"lr": 0.1}}, model.parameters())
    sched3 = build_scheduler({"type": "StepLR", "params": {"step_size": 2, "gamma": 0.5}}, opt3)
    sched3.load_state_dict(state)
    for group, lr in zip(opt3.param_groups, sched3.get_last_lr()):
        group["lr"] = lr
    opt3.step()
    sched3.step()
    assert opt3.param_groups[0]["lr"] == pytest.approx(0.025)
    with pytest.raises(ValueError, match="unknown optimizer"):
        build_optimizer({"type": "Nope"}, model.parameters())
