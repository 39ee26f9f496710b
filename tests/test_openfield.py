"""The real openfield project: train + resume, export parity, and analysis of its video."""
from __future__ import annotations

import pickle

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from dlc_cli.main import cli
from dlc_runtime import Bundle

# ResNet-50 on 160x160 crops keeps an epoch of the 110 training frames to seconds on 2 cores;
# evaluation still runs on the full 640x480 test frames.
SMALL_CROPS = "data.train.crop_sampling={width: 160, height: 160, max_shift: 0.1, method: hybrid}"

# Real data at full size (resnet_50 on 640x480 frames, the 2,330-frame video): the full tier.
pytestmark = pytest.mark.slow


def _invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def _train_folder(project, shuffle):
    return next(project.glob(f"dlc-models-pytorch/iteration-0/*shuffle{shuffle}/train"))


@pytest.fixture(scope="module")
def resnet50_trained(openfield_copy):
    """resnet_50 trained 1 epoch, then resumed to 2 epochs (shuffle 1)."""
    config = openfield_copy / "config.yaml"
    common = ["--net-type", "resnet_50", "--batch-size", "8", "--set", SMALL_CROPS,
              "--set", "runner.eval_interval=1", "--set", "runner.snapshots.save_epochs=1"]
    _invoke("train", config, "--epochs", "1", *common)
    train = _train_folder(openfield_copy, 1)
    first = {p.name: p.stat().st_mtime_ns for p in train.glob("snapshot-*.pt")}
    _invoke("train", config, "--epochs", "2", "--resume", *common)
    return train, first


def test_train_writes_deeplabcut_snapshots_and_resume_continues(resnet50_trained):
    train, first = resnet50_trained
    assert "snapshot-001.pt" in first
    snapshot = torch.load(train / "snapshot-002.pt", map_location="cpu", weights_only=True)
    assert {"metadata", "model", "scheduler"} <= set(snapshot)
    assert snapshot["metadata"]["epoch"] == 2
    assert any(k.startswith("backbone.model.layer4.") for k in snapshot["model"])
    assert any(k.startswith("heads.bodypart.heatmap_head.") for k in snapshot["model"])
    # The resumed run continued the count: epoch 1's snapshot is untouched, epoch 2 is new.
    assert (train / "snapshot-001.pt").stat().st_mtime_ns == first["snapshot-001.pt"]
    assert (train / "pytorch_config.yaml").is_file()


def test_onnx_export_matches_pytorch_on_openfield_frames(resnet50_trained, openfield_copy):
    train, _ = resnet50_trained
    bundle_dir = openfield_copy / "bundles" / "resnet50.bundle"
    _invoke("export", train / "snapshot-002.pt", "-o", bundle_dir)
    bundle = Bundle.load(bundle_dir)
    assert bundle.bodyparts == ["snout", "leftear", "rightear", "tailbase"]
    import json

    parity = json.loads((bundle_dir / "parity.json").read_text())
    assert parity["frames"] == 8 and parity["frame_size"] == [480, 640]
    assert "labeled-data" in parity["source"]
    assert parity["max_px"] <= 0.5 and parity["passed"]
    assert not list(bundle_dir.glob("*.data"))  # one self-contained graph file


def test_analyze_openfield_video_writes_one_row_per_frame(openfield_copy, tmp_path):
    config = openfield_copy / "config.yaml"
    _invoke("train", config, "--shuffle", "2", "--net-type", "resnet_tiny", "--epochs", "1",
            "--set", SMALL_CROPS, "--set", "runner.eval_interval=100")
    export = _invoke("export", config, "--shuffle", "2")
    bundle_dir = next((openfield_copy / "exported-models-pytorch").glob("*ResnetTiny*.bundle"))
    assert str(bundle_dir) in export.output
    video = openfield_copy / "videos" / "m3v1mp4.mp4"
    _invoke("analyze", bundle_dir, video, "--dest", tmp_path, "--no-progress")

    bundle = Bundle.load(bundle_dir)
    h5 = tmp_path / f"m3v1mp4{bundle.scorer}.h5"
    df = pd.read_hdf(h5, "df_with_missing")
    assert len(df) == 2330  # every frame of the video
    assert list(df.columns.names) == ["scorer", "bodyparts", "coords"]
    assert list(df.columns.get_level_values("bodyparts").unique()) == bundle.bodyparts
    assert df.notna().all().all()
    with open(tmp_path / f"m3v1mp4{bundle.scorer}_meta.pickle", "rb") as f:
        meta = pickle.load(f)
    assert meta["data"]["nframes"] == 2330
