"""`dlc train` on top-down shuffles: the detector (snapshot-detector-XXX.pt), then the pose model
on crops; its refusals; and (slow) the whole way to a bundle and an analysed video.

Projects are small synthetic multi-animal ones (2 mice, 160x120 frames) with
``top_down_resnet_tiny``, 64-pixel crops and no ImageNet / COCO weights.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.cli import invoke, one_error_line
from dlc_train.synthetic import SyntheticSpec, generate_project

pytestmark = pytest.mark.usefixtures("one_thread")

CROP = [f"--set=data.{s}.top_down_crop.{k}=64" for s in ("train", "inference")
        for k in ("width", "height")]
FAST = ["--device", "cpu", "--batch-size", "4", "--no-progress", "--set=runner.eval_interval=1",
        "--set=runner.snapshots.save_epochs=1", "--set=data.train.affine=null",
        "--set=detector.model.pretrained=false", "--set=detector.train_settings.batch_size=2",
        "--set=detector.runner.eval_interval=1", *CROP]


def _project(root: Path, frames: int = 3, video_frames: int = 1) -> Path:
    spec = SyntheticSpec(seed=2, width=160, height=120, num_labeled_frames=frames,
                         num_video_frames=video_frames, num_animals=2, body_length=0.2,
                         net_type="top_down_resnet_tiny")
    return generate_project(root, spec).config_path


def _train_folder(config: Path) -> Path:
    return (config.parent / "dlc-models-pytorch" / "iteration-0"
            / "syntheticJan1-trainset95shuffle1" / "train")


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("snapshot-*.pt"))


def test_top_down_without_detector_section(tmp_path):
    """No detector section: one line, nothing trained; with --detector-epochs 0 the pose model
    trains alone, on crops."""
    from dlc_train.apis.train import read_or_make_pose_config
    from dlc_train.config import write_config
    from dlc_train.data.dlcloader import DLCLoader

    config = _project(tmp_path)
    loader = DLCLoader(config)
    cfg, _ = read_or_make_pose_config(loader)
    assert cfg["method"] == "td"
    cfg["detector"] = None
    write_config(loader.pose_config_path, cfg)
    folder = _train_folder(config)
    line = one_error_line(invoke(["train", config, "--epochs", "1", *FAST[:6], *CROP]),
                          "is a top-down config (method: td) without a 'detector' section")
    assert "--detector-epochs 0" in line
    assert _names(folder) == []

    res = invoke(["train", config, "--epochs", "1", "--detector-epochs", "0", *FAST[:6], *CROP])
    assert res.exit_code == 0, res.output
    assert _names(folder) == ["snapshot-001.pt", "snapshot-best-001.pt"]
    assert not (folder / "learning_stats_detector.csv").exists()
    state = torch.load(folder / "snapshot-001.pt", weights_only=True)
    assert any(k.startswith("heads.bodypart.") for k in state["model"])


def test_top_down_bad_values_are_one_line(tmp_path):
    config = _project(tmp_path)
    one_error_line(invoke(["train", config, "--detector-epochs", "-1"]),
                   "Invalid value for '--detector-epochs'")
    one_error_line(invoke(["train", config, "--epochs", "1", *FAST,
                           "--set=data.train.top_down_crop.width=4"]),
                   "top_down_crop 4x64 is too small (min 8x8)")
    one_error_line(invoke(["train", config, "--epochs", "1", *FAST,
                           "--set=data.gen_sampling.jiter_prob=0.1"]),
                   "--set data.gen_sampling.jiter_prob: no such key")
    assert _names(_train_folder(config)) == []
    assert not (_train_folder(config) / "pytorch_config.yaml").exists()


def test_resume_continues_what_each_model_has(tmp_path):
    """--resume with no snapshot at all is refused; with a finished detector (a snapshot at its
    epochs) the detector is skipped and the pose model starts from epoch 1."""
    import dlc_train.models  # noqa: F401
    from dlc_train.config.detectors import detector_config
    from dlc_train.models.detectors import DETECTORS

    config = _project(tmp_path)
    folder = _train_folder(config)
    args = ["train", config, "--epochs", "1", "--detector-epochs", "1", "--resume", *FAST]
    one_error_line(invoke(args), "--resume but no snapshot in", str(folder))
    folder.mkdir(parents=True)
    detector = DETECTORS.build(detector_config("ssdlite")["model"])
    torch.save({"metadata": {"epoch": 1}, "model": detector.state_dict()},
               folder / "snapshot-detector-001.pt")
    res = invoke(args)
    assert res.exit_code == 0, res.output
    assert _names(folder) == ["snapshot-001.pt", "snapshot-best-001.pt",
                              "snapshot-detector-001.pt"]
    assert not (folder / "learning_stats_detector.csv").exists()  # not trained again
    one_error_line(invoke(args), "nothing to train", "snapshot-001.pt is at epoch 1")


# -- slow: real detector training, export, analysis ------------------------------------------

def _loss_falls(detector, steps: int = 6) -> list[float]:
    from dlc_train.models.detectors import deeplabcut_detector_input

    torch.manual_seed(0)
    images = torch.zeros(2, 3, 96, 128)
    images[:, :, 20:60, 30:80] = 255.0  # one bright animal per image
    x = deeplabcut_detector_input(images)
    targets = [{"boxes": torch.tensor([[30.0, 20.0, 80.0, 60.0]]),
                "labels": torch.tensor([1])}] * 2
    optimizer = torch.optim.AdamW([p for p in detector.parameters() if p.requires_grad], lr=1e-3)
    detector.train()
    losses = []
    for _ in range(steps):
        parts, _ = detector(x, targets)
        total = sum(parts.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        losses.append(float(total.detach()))
    return losses


@pytest.mark.slow
@pytest.mark.parametrize("model", [
    {"type": "SSDLite"},
    {"type": "FasterRCNN", "variant": "fasterrcnn_mobilenet_v3_large_fpn", "min_size": 96,
     "max_size": 128},
])
def test_detector_loss_falls_on_a_fixed_batch(model):
    import dlc_train.models  # noqa: F401
    from dlc_train.models.detectors import DETECTORS

    losses = _loss_falls(DETECTORS.build({**model, "pretrained": False}))
    assert losses[-1] < losses[0], losses


@pytest.mark.slow
def test_top_down_train_export_analyze(tmp_path):
    """Detector, then pose model; resume skips the trained detector; the snapshots export to a
    bundle that analyses the project's video."""
    import pandas as pd

    from dlc_export.pipeline import export_bundle
    from dlc_runtime import analyze_video
    from dlc_runtime.bundle import Bundle

    config = _project(tmp_path, frames=4, video_frames=6)
    folder = _train_folder(config)
    res = invoke(["train", config, "--epochs", "1", "--detector-epochs", "1", *FAST])
    assert res.exit_code == 0, res.output
    assert _names(folder) == ["snapshot-001.pt", "snapshot-best-001.pt",
                              "snapshot-detector-001.pt", "snapshot-detector-best-001.pt"]
    assert (folder / "learning_stats_detector.csv").read_text().startswith("step,losses/train.bbox_regression,")
    detector = torch.load(folder / "snapshot-detector-001.pt", weights_only=True)
    assert detector["metadata"]["epoch"] == 1
    assert "metrics/test.mAP@50:95" in detector["metadata"]["metrics"]
    assert all(k.startswith("model.") for k in detector["model"])

    # --resume: the detector is at its 1 epoch (skipped), the pose model continues to 2.
    before = (folder / "snapshot-detector-001.pt").read_bytes()
    res = invoke(["train", config, "--epochs", "2", "--detector-epochs", "1", "--resume",
                  *FAST])
    assert res.exit_code == 0, res.output
    assert "snapshot-002.pt" in _names(folder)
    assert (folder / "snapshot-detector-001.pt").read_bytes() == before

    out = tmp_path / "td.bundle"
    result = export_bundle(folder / "pytorch_config.yaml", folder / "snapshot-002.pt", out,
                           allow_parity_failure=True)
    bundle = Bundle.load(result.bundle_dir)
    assert bundle.task == "top_down" and bundle.manifest.decoder["crop"] == {"width": 64,
                                                                            "height": 64}
    video = next((config.parent / "videos").glob("*.mp4"))
    analysis = analyze_video(bundle, video, tmp_path / "out", batch_size=2, progress=False)
    df = pd.read_hdf(analysis.h5_path)
    assert df.shape == (6, 2 * 5 * 3)
    assert list(df.columns.get_level_values("individuals").unique()) == ["mouse1", "mouse2"]
    lik = df.xs("likelihood", level="coords", axis=1).to_numpy()
    assert np.all((lik >= 0) & (lik <= 1))
