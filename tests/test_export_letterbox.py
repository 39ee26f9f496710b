"""A fixed network input size (``input_size``): the graph letterboxes frames of any size inside
itself and returns keypoints in frame pixels; ``batch`` sets the manifest's batch range."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from click.testing import CliRunner

from dlc_cli.main import cli
from dlc_export import export_bundle
from dlc_export.tensorrt_profiles import default_profiles
from dlc_export.wrappers import BottomUpSingleAnimal
from dlc_runtime import Bundle
from dlc_runtime.backends import OnnxRuntimeBackend
from dlc_runtime.bundle import Manifest
from dlc_train.models import PoseModel
from helpers.shuffles import write_shuffle

pytestmark = pytest.mark.usefixtures("one_thread")


def _snapshot(tmp_path) -> PoseModel:
    return write_shuffle(tmp_path).model


def _reference(model: PoseModel, frames: np.ndarray, resized: tuple[int, int]) -> np.ndarray:
    """By hand: bilinear resize to ``resized``, black pad to 64 x 64, run, divide by the scale."""
    x = torch.from_numpy(frames).float().permute(0, 3, 1, 2)
    x = F.interpolate(x, size=resized, mode="bilinear", align_corners=False)
    x = F.pad(x, (0, 64 - resized[1], 0, 64 - resized[0]))
    with torch.no_grad():
        # Float NHWC frames go through the plain wrapper's cast unchanged.
        keypoints = BottomUpSingleAnimal(model)(x.permute(0, 2, 3, 1)).numpy()
    keypoints[..., 0] /= resized[1] / frames.shape[2]
    keypoints[..., 1] /= resized[0] / frames.shape[1]
    return keypoints


def test_one_graph_letterboxes_frames_of_any_size_to_the_network_size(tmp_path):
    model = _snapshot(tmp_path)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(2, 120, 160, 3), dtype=np.uint8)

    result = export_bundle(tmp_path / "pytorch_config.yaml", tmp_path / "snapshot-001.pt",
                           tmp_path / "l.bundle", frames=frames, input_size=(64, 64), batch=4)
    assert result.parity.passed
    bundle = Bundle.load(result.bundle_dir)
    assert bundle.manifest.input.network_size == (64, 64)
    assert bundle.manifest.input.resize == "letterbox"
    assert bundle.manifest.input.dynamic_size  # frames of any size still go in
    batch = bundle.manifest.input.batch
    assert (batch.min, batch.opt, batch.max) == (1, 4, 4)
    # The TensorRT profile builder reads the batch range from the manifest.
    profile = default_profiles(bundle.manifest, (120, 160))[0]
    assert profile["max"] == (4, 120, 160, 3) and profile["opt"][0] == 4

    backend = OnnxRuntimeBackend(bundle.graph_path("pose"))
    try:
        # 120x160 fits at scale 0.4 -> 48x64; 90x200 at 0.32 -> 28.8 rounds to 29 x 64.
        other = rng.integers(0, 256, size=(1, 90, 200, 3), dtype=np.uint8)
        for batch_frames, resized in ((frames, (48, 64)), (other, (29, 64))):
            exported = backend.run(batch_frames)["keypoints"]
            reference = _reference(model, batch_frames, resized)
            np.testing.assert_allclose(exported[..., :2], reference[..., :2], atol=0.5)
            np.testing.assert_allclose(exported[..., 2], reference[..., 2], atol=1e-3)
        # Without the letterbox the network sees another input, so the resize really happened.
        with torch.no_grad():
            plain = BottomUpSingleAnimal(model)(torch.from_numpy(frames)).numpy()
        assert not np.allclose(plain[..., 2], backend.run(frames)["keypoints"][..., 2], atol=1e-6)
    finally:
        backend.close()


def test_manifest_network_size_round_trips_and_is_absent_by_default(tmp_path):
    _snapshot(tmp_path)
    frames = np.random.default_rng(1).integers(0, 256, size=(2, 40, 56, 3), dtype=np.uint8)
    plain = export_bundle(tmp_path / "pytorch_config.yaml", tmp_path / "snapshot-001.pt",
                          tmp_path / "p.bundle", frames=frames)
    written = yaml.safe_load((plain.bundle_dir / "manifest.yaml").read_text())
    assert "network_size" not in written["input"] and "resize" not in written["input"]
    assert plain.manifest.input.network_size is None

    data = plain.manifest.to_dict()
    data["input"].update(network_size=[64, 96], resize="letterbox")
    parsed = Manifest.from_dict(data)
    assert parsed.input.network_size == (64, 96) and parsed.input.resize == "letterbox"
    assert parsed.to_dict()["input"] == data["input"]


def test_cli_passes_input_size_and_batch(tmp_path, monkeypatch):
    _snapshot(tmp_path)
    runner = CliRunner()
    res = runner.invoke(cli, ["export", str(tmp_path / "snapshot-001.pt"), "-o",
                              str(tmp_path / "c.bundle"), "--input-size", "64x64",
                              "--batch", "4"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    manifest = Bundle.load(tmp_path / "c.bundle").manifest
    assert manifest.input.network_size == (64, 64) and manifest.input.batch.max == 4

    # --format tensorrt: the same HxW is also the engine's frame size (no GPU needed to see it).
    seen = {}

    def fake_export(*args, **kwargs):
        seen.update(kwargs)
        return SimpleNamespace(parity=SimpleNamespace(summary=lambda: "ok"), bundle_dir=tmp_path)

    monkeypatch.setattr("dlc_export.export_bundle", fake_export)
    res = runner.invoke(cli, ["export", str(tmp_path / "snapshot-001.pt"), "--format",
                              "tensorrt", "--input-size", "480x640", "--batch", "2"],
                        catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert (seen["input_size"], seen["frame_size"], seen["batch"]) == ((480, 640), (480, 640), 2)
    res = runner.invoke(cli, ["export", str(tmp_path / "snapshot-001.pt"), "--batch", "0"])
    assert res.exit_code == 1 and "Invalid value for '--batch'" in res.output
