"""The onnxruntime backend's session settings."""
from __future__ import annotations

import numpy as np
import pytest

from dlc_export import export_bundle
from dlc_runtime import Bundle, make_backend
from helpers.frames import textured_frames
from helpers.shuffles import write_shuffle

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("cpu_arena", [True, False])
def test_session_memory_settings(tmp_path, cpu_arena):
    """The onnxruntime backend's memory settings (benchmarks/results/memory_cpu.json): with the
    arena, no memory patterns (they kept a second copy of the activations); without it,
    patterns on (without both, allocation halved the speed). Same keypoints either way."""
    shuffle = write_shuffle(tmp_path / "train")
    frames = textured_frames(2, 64, 96)
    bundle = Bundle.load(export_bundle(shuffle.config_path, shuffle.snapshot,
                                       tmp_path / "b.bundle", frames=frames,
                                       simplify=False).bundle_dir)
    with make_backend(bundle, "onnxruntime", cpu_arena=cpu_arena) as backend, \
            make_backend(bundle, "onnxruntime") as default:
        options = backend.session.get_session_options()
        assert options.enable_cpu_mem_arena is cpu_arena
        assert options.enable_mem_pattern is (not cpu_arena)
        np.testing.assert_array_equal(backend.run(frames)["keypoints"],
                                      default.run(frames)["keypoints"])
