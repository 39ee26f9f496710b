"""auto_padding inside the graph: frames of any size run; the result equals the padded eager run."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dlc_export import export_bundle
from dlc_export.wrappers import BottomUpSingleAnimal
from dlc_runtime import Bundle
from dlc_runtime.backends import OnnxRuntimeBackend
from helpers.shuffles import write_shuffle

pytestmark = pytest.mark.usefixtures("one_thread")


def test_auto_padding_pads_bottom_right_inside_the_graph(tmp_path):
    model = write_shuffle(tmp_path, overrides={"data.inference.auto_padding": {
        "pad_height_divisor": 32, "pad_width_divisor": 32}}).model
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(2, 50, 70, 3), dtype=np.uint8)  # not multiples of 32

    result = export_bundle(tmp_path / "pytorch_config.yaml", tmp_path / "snapshot-001.pt",
                           tmp_path / "p.bundle", frames=frames)
    assert result.parity.passed
    backend = OnnxRuntimeBackend(Bundle.load(result.bundle_dir).graph_path("pose"))
    exported = backend.run(frames)["keypoints"]

    # Reference: the model run on frames padded by hand with black pixels to 64 x 96.
    padded = np.zeros((2, 64, 96, 3), np.uint8)
    padded[:, :50, :70] = frames
    with torch.no_grad():
        reference = BottomUpSingleAnimal(model)(torch.from_numpy(padded)).numpy()
    np.testing.assert_allclose(exported, reference, atol=1e-3)
    # Without padding the network sees another input, so the padding really happened.
    with torch.no_grad():
        unpadded = BottomUpSingleAnimal(model)(torch.from_numpy(frames)).numpy()
    assert not np.allclose(unpadded[..., 2], reference[..., 2], atol=1e-6)
    # Another frame size through the same graph.
    assert backend.run(rng.integers(0, 256, (1, 33, 45, 3), dtype=np.uint8))[
        "keypoints"].shape == (1, 1, 3, 3)
