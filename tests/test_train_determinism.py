"""Training is a function of its seed: resuming gives the uninterrupted run's weights; the
learning_stats.csv log as DeepLabCut 3 writes it; runner.amp / channels_last on the CPU."""
from __future__ import annotations

import csv
import logging
from pathlib import Path

import pytest
import torch

from dlc_train.apis import train_network
from dlc_train.synthetic import SyntheticSpec, generate_project

# No augmentation but shuffling (batch 1 of 3 training images: the order matters), Adam's state
# in every snapshot (without it a resumed Adam restarts its moments and cannot match).
OVERRIDES = {
    "data": {"train": {"affine": None, "crop_sampling": None, "motion_blur": False,
                       "gaussian_noise": None}},
    "runner": {"eval_interval": 100, "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}},
               "snapshots": {"save_epochs": 1, "max_snapshots": 10,
                             "save_optimizer_state": True}},
    "train_settings": {"batch_size": 1, "seed": 7},
}


def _project(root: Path) -> Path:
    spec = SyntheticSpec(seed=0, width=64, height=48, num_labeled_frames=4, num_video_frames=1,
                         body_length=0.3, net_type="resnet_tiny")
    return generate_project(root, spec).config_path


def _weights(folder: Path, epoch: int) -> dict[str, torch.Tensor]:
    return torch.load(folder / f"snapshot-{epoch:03d}.pt", weights_only=True)["model"]


def test_resuming_gives_the_uninterrupted_runs_weights(tmp_path, one_thread):
    """2 epochs + resume to 4 == 4 epochs, bit for bit (torch.equal): on one CPU thread the
    same operations on the same data in the same order give the same floats, so any difference
    is a draw (shuffling, augmentation, RNG) that the resumed run did not replay."""
    straight = train_network(_project(tmp_path / "a"), epochs=4, device="cpu",
                             pytorch_config_overrides=OVERRIDES, progress=False)
    config = _project(tmp_path / "b")
    resumed = train_network(config, epochs=2, device="cpu", pytorch_config_overrides=OVERRIDES,
                            progress=False)
    train_network(config, epochs=4, device="cpu", resume=True, progress=False)

    a, b = _weights(straight, 4), _weights(resumed, 4)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different
    first = _weights(straight, 1)
    assert any(not torch.equal(first[k], a[k]) for k in a)  # it did train

    with open(resumed / "learning_stats.csv", newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    # DeepLabCut 3's CSVLogger: "step", then the logged names sorted.
    assert header[0] == "step" and header[1:] == sorted(header[1:])
    assert {"losses/train.total_loss", "losses/eval.total_loss", "metrics/test.rmse",
            "metrics/test.mAP"} <= set(header)
    assert [r[0] for r in body] == ["1", "2", "3", "4"]
    evaluated = header.index("metrics/test.rmse")
    assert [r[evaluated] != "" for r in body] == [False, True, False, True]  # last of each run
    with open(straight / "learning_stats.csv", newline="") as f:
        straight_rows = list(csv.reader(f))
    loss = header.index("losses/train.total_loss")
    assert [r[loss] for r in body] == [r[loss] for r in straight_rows[1:]]


def test_precision_on_the_cpu_and_what_it_says(caplog, monkeypatch):
    """Unset: float32 NHWC on the CPU (faster there), silently. bfloat16 where the CPU has the
    units, else float32 with one warning; float16 is for CUDA (one warning)."""
    from dlc_train.config import ConfigError
    from dlc_train.runners import precision
    from dlc_train.runners.precision import Precision, parse_amp, precision_for

    cpu = torch.device("cpu")

    def said(amp, channels_last, has_bf16):
        monkeypatch.setattr(precision, "cpu_has_bf16", lambda: has_bf16)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="dlc_train.runners.precision"):
            got = precision_for(amp, channels_last, cpu)
        return got, [r.getMessage() for r in caplog.records]

    assert said(None, None, True) == (Precision(channels_last=True, device_type="cpu"), [])
    assert said(False, False, True) == (Precision(device_type="cpu"), [])
    assert said("bfloat16", None, True) == (
        Precision(torch.bfloat16, channels_last=True, device_type="cpu"),
        ["mixed precision on the CPU: bfloat16, channels_last: True"])
    got, lines = said(True, None, False)
    assert got == Precision(channels_last=True, device_type="cpu")
    assert lines == ["runner.amp bfloat16: this CPU has no bfloat16 units (AVX512-BF16, AMX): "
                     "training in float32"]
    got, lines = said("float16", False, True)
    assert got == Precision(device_type="cpu") and "float16 is for CUDA" in lines[0]
    assert precision_for(None, True, torch.device("meta"), announce=False) == \
        Precision(device_type="meta")
    assert parse_amp(True) == torch.bfloat16 and parse_amp("fp16") == torch.float16
    assert parse_amp(False) is None and parse_amp(None) is None
    with pytest.raises(ConfigError, match="runner.amp must be false, true, bfloat16 or float16"):
        parse_amp("int8")


def test_detectors_keep_nchw_pose_models_go_nhwc_on_the_cpu(tmp_path):
    import dlc_train.models  # noqa: F401
    from dlc_train.config import make_pytorch_pose_config
    from dlc_train.config.detectors import detector_config
    from dlc_train.models import build_model_from_config
    from dlc_train.models.detectors import DETECTORS
    from dlc_train.runners.detector import DetectorTrainingRunner
    from dlc_train.runners.train import PoseTrainingRunner
    from dlc_train.synthetic import BODYPARTS

    project = {"bodyparts": BODYPARTS, "multianimalproject": False, "individuals": ["a"],
               "uniquebodyparts": [], "project_path": str(tmp_path)}
    cfg = make_pytorch_pose_config(project, tmp_path / "pytorch_config.yaml",
                                   net_type="resnet_tiny")
    pose = PoseTrainingRunner.from_config(cfg, build_model_from_config(cfg), tmp_path,
                                          device="cpu")
    assert pose.precision.channels_last
    conv = next(m for m in pose.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    section = detector_config("ssdlite")
    detector = DetectorTrainingRunner.from_config(
        section, DETECTORS.build(dict(section["model"], pretrained=False)), tmp_path,
        device="cpu")
    assert not detector.precision.channels_last


def test_the_autocast_step_runs_in_bfloat16(tmp_path):
    """The runner's step under a bfloat16 Precision (what runner.amp gives on CUDA and on CPUs
    with bfloat16 units; set by hand here, whatever this CPU has): convolutions run in bfloat16, NHWC inputs, the weights
    stay float32 and change."""
    from dlc_train.config import update_config
    import dlc_train.models  # noqa: F401
    from dlc_train.models import build_model_from_config
    from dlc_train.runners.precision import Precision
    from dlc_train.runners.snapshots import SnapshotManager
    from dlc_train.runners.train import PoseTrainingRunner
    from dlc_train.config import make_pytorch_pose_config
    from dlc_train.synthetic import BODYPARTS

    project = {"bodyparts": BODYPARTS, "multianimalproject": False, "individuals": ["a"],
               "uniquebodyparts": [], "project_path": str(tmp_path)}
    cfg = make_pytorch_pose_config(project, tmp_path / "pytorch_config.yaml",
                                   net_type="resnet_tiny")
    cfg = update_config(cfg, {"runner.amp": "bfloat16", "runner.channels_last": True})
    model = build_model_from_config(cfg)
    runner = PoseTrainingRunner.from_config(cfg, model, tmp_path, device="cpu")
    assert runner.precision.channels_last  # bfloat16 too where the CPU has the units
    runner.precision = Precision(torch.bfloat16, channels_last=True, device_type="cpu")
    seen = []
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda m, i, o: seen.append(
        (o.dtype, i[0].is_contiguous(memory_format=torch.channels_last))))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    keypoints = torch.tensor([[[20.0, 20.0, 2.0]] * len(BODYPARTS)])
    batch = {"image": torch.randn(1, 3, 48, 64),
             "annotations": {"keypoints": keypoints, "individual_ids": torch.arange(1)[None]}}
    losses = runner.train_epoch([batch], epoch=1)
    assert seen == [(torch.bfloat16, True)]
    assert set(losses) >= {"total_loss"} and all(v == v for v in losses.values())
    assert all(v.dtype == before[k].dtype for k, v in model.state_dict().items())
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_loss_scale_is_in_the_snapshot_and_comes_back(tmp_path):
    """float16 runs keep their GradScaler's state in the snapshot (``scaler``) so a resumed
    run continues with the loss scale it had (CUDA's scaler; the CPU's stands in here)."""
    import dlc_train.models  # noqa: F401
    from dlc_train.config import make_pytorch_pose_config
    from dlc_train.models import build_model_from_config
    from dlc_train.runners.train import PoseTrainingRunner
    from dlc_train.synthetic import BODYPARTS

    project = {"bodyparts": BODYPARTS, "multianimalproject": False, "individuals": ["a"],
               "uniquebodyparts": [], "project_path": str(tmp_path)}
    cfg = make_pytorch_pose_config(project, tmp_path / "pytorch_config.yaml",
                                   net_type="resnet_tiny")

    def runner(scaler):
        made = PoseTrainingRunner.from_config(cfg, build_model_from_config(cfg), tmp_path,
                                              device="cpu")
        made._scaler = scaler
        return made

    first = runner(torch.amp.GradScaler("cpu", init_scale=1024.0))
    first._scaler.scale(torch.ones(()))  # the scale exists once used
    first._scaler.update(new_scale=256.0)
    state = first.state_dict(3, {"test.rmse": 2.0}, {"total_loss": 0.5})
    assert state["scaler"]["scale"] == 256.0
    assert "scaler" not in runner(None).state_dict(3, {}, {})  # float32 / bfloat16: none
    torch.save(state, tmp_path / "snapshot-003.pt")
    again = runner(torch.amp.GradScaler("cpu", init_scale=1024.0))
    assert again.resume(tmp_path / "snapshot-003.pt") == 3
    assert again._scaler.get_scale() == 256.0
