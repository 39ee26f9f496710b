"""The export's TensorRT parity gate, wired without TensorRT.

The real engine build and run need TensorRT and a GPU (tests/test_tensorrt.py, skipped here).
These tests replace only the two GPU steps -- the build (``TensorRTFormat.write``) and the
``tensorrt`` backend -- with an ONNX Runtime session whose keypoints can be shifted, and check
what the exporter does with the engine's answers: the report file, the per-precision gate, the
frame size the engine is checked at, and that a failing engine leaves no bundle behind.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from dlc_export import export_bundle
from dlc_export.formats.tensorrt import TensorRTFormat
from dlc_export.parity import REDUCED_PRECISION_TOLERANCE_PX, ParityError
from dlc_runtime.backends import OnnxRuntimeBackend
from helpers.shuffles import write_shuffle

BODYPARTS = ["snout", "tail", "leftear"]


class ShiftedEngine(OnnxRuntimeBackend):
    """Stands in for a TensorRT engine: the ONNX graph, keypoints moved by ``shift`` px."""

    shapes: list[tuple[int, ...]] = []

    def __init__(self, path, shift: float):
        super().__init__(path)
        self.name = "tensorrt-fake"
        self.shift = shift

    def run(self, images: np.ndarray, **extra: np.ndarray) -> dict[str, np.ndarray]:
        ShiftedEngine.shapes.append(images.shape)
        out = super().run(images)
        out["keypoints"] = out["keypoints"].copy()
        out["keypoints"][..., 0] += self.shift
        return out


@pytest.fixture()
def shuffle(tmp_path):
    made = write_shuffle(tmp_path / "train", {"bodyparts": BODYPARTS,
                                              "multianimalproject": False})
    return made.config_path, made.snapshot


@pytest.fixture()
def fake_tensorrt(monkeypatch):
    """Replaces the engine build with a no-op and the tensorrt backend with ShiftedEngine."""
    state = {"shift": 0.0, "built": []}

    def build(fmt, ctx):
        state["built"].append((fmt.precision, ctx.task.engine_frame_size(ctx)))

    from dlc_runtime.backends import make_backend as real

    def make_backend(bundle, backend="onnxruntime", device="cpu", **options):
        if backend != "tensorrt":  # the fp32 ONNX graph's own check
            return real(bundle, backend, device, **options)
        assert device == "cuda" and options["graph"] == "pose"
        return ShiftedEngine(bundle.graph_path("pose"), state["shift"])

    monkeypatch.setattr("dlc_export.options.import_tensorrt", lambda: None)
    monkeypatch.setattr(TensorRTFormat, "write", build)
    monkeypatch.setattr("dlc_export.formats.base.make_backend", make_backend)
    ShiftedEngine.shapes = []
    return state


def _frames(n=3, h=64, w=80):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_engine_parity_report_is_written_at_the_engine_frame_size(shuffle, fake_tensorrt,
                                                                 tmp_path):
    config_path, snapshot = shuffle
    fake_tensorrt["shift"] = 1.5  # within the fp16 gate (4 px), outside the fp32 one (0.5 px)
    result = export_bundle(config_path, snapshot, tmp_path / "b.bundle", frames=_frames(),
                           simplify=False, tensorrt_precision="fp16", frame_size=(96, 128))
    assert fake_tensorrt["built"] == [("fp16", (96, 128))]
    # The engine saw the parity frames resized to its profile's frame size.
    assert ShiftedEngine.shapes and all(s[1:3] == (96, 128) for s in ShiftedEngine.shapes)
    report = json.loads((result.bundle_dir / "parity.tensorrt_fp16.json").read_text())
    assert report["backend"] == "tensorrt-fp16"
    assert report["frame_size"] == [96, 128]
    assert report["max_px"] == pytest.approx(1.5, abs=1e-3)
    assert report["tolerance_px"] == REDUCED_PRECISION_TOLERANCE_PX["fp16"]
    assert report["passed"] is True
    # The ONNX report is untouched by the engine's.
    assert json.loads((result.bundle_dir / "parity.json").read_text())["max_px"] < 1e-3


def test_fp32_engine_outside_tolerance_fails_and_writes_nothing(shuffle, fake_tensorrt,
                                                               tmp_path):
    config_path, snapshot = shuffle
    fake_tensorrt["shift"] = 1.5
    out = tmp_path / "b.bundle"
    with pytest.raises(ParityError, match="TensorRT fp32 engine: .*max 1.5"):
        export_bundle(config_path, snapshot, out, frames=_frames(), simplify=False,
                      tensorrt_precision="fp32")
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".b.bundle")]


def test_engine_parity_failure_can_be_overridden(shuffle, fake_tensorrt, tmp_path):
    config_path, snapshot = shuffle
    fake_tensorrt["shift"] = 12.0  # past even the int8 gate
    result = export_bundle(config_path, snapshot, tmp_path / "b.bundle", frames=_frames(),
                           simplify=False, tensorrt_precision="int8",
                           allow_parity_failure=True)
    report = json.loads((result.bundle_dir / "parity.tensorrt_int8.json").read_text())
    assert report["passed"] is False and report["max_px"] == pytest.approx(12.0, abs=1e-3)
