"""The fp16 ONNX variant of bottom-up graphs: the network in half, uint8 frames in and fp32
outputs out, checked on the CPU through ONNX Runtime (top-down and CTD variants are tested
beside their own exports)."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from dlc_export import export_bundle
from dlc_runtime import BackendError, Bundle, make_backend
from dlc_runtime.pipelines import make_pipeline
from helpers.frames import textured_frames
from helpers.shuffles import write_shuffle

pytestmark = pytest.mark.usefixtures("one_thread")

FLOAT16 = onnx.TensorProto.FLOAT16


def graph_types(path) -> tuple[dict, dict, int]:
    """(input dtypes, output dtypes, number of fp16 initializers) of an ONNX file."""
    graph = onnx.load(str(path)).graph
    return ({t.name: t.type.tensor_type.elem_type for t in graph.input},
            {t.name: t.type.tensor_type.elem_type for t in graph.output},
            sum(1 for t in graph.initializer if t.data_type == FLOAT16))


@pytest.mark.parametrize("multi_animal", [False, True], ids=["heatmap", "paf"])
def test_bottom_up_fp16_onnx_graph(tmp_path, multi_animal):
    project = {"multianimalproject": True, "multianimalbodyparts": ["a", "b", "c"],
               "individuals": ["m1", "m2"], "uniquebodyparts": []} if multi_animal \
        else {"bodyparts": ["a", "b", "c"], "multianimalproject": False}
    shuffle = write_shuffle(tmp_path / "train", project)
    config_path, snapshot = shuffle.config_path, shuffle.snapshot
    frames = textured_frames(4, 64, 96)
    result = export_bundle(config_path, snapshot, tmp_path / "b.bundle", frames=frames,
                           simplify=False, onnx_precisions=("fp16",))
    report = result.reports["onnx_fp16"]
    assert report.passed and report.backend == "onnxruntime-cpu-fp16", report.summary()
    assert json.loads((result.bundle_dir / "parity.onnx_fp16.json").read_text())["passed"]
    bundle = Bundle.load(result.bundle_dir)
    fp16 = bundle.graph("pose_onnx_fp16")
    assert fp16.file == "pose.fp16.onnx" and fp16.outputs == bundle.graph("pose").outputs
    inputs, outputs, halves = graph_types(result.bundle_dir / fp16.file)
    assert inputs == {"images": onnx.TensorProto.UINT8} and halves > 0
    assert set(outputs.values()) - {onnx.TensorProto.INT64} == {onnx.TensorProto.FLOAT}
    assert graph_types(result.bundle_dir / "pose.onnx")[2] == 0  # the fp32 graph stays fp32
    # The runtime runs it by precision, through the same pipeline as the fp32 graph.
    with make_backend(bundle, "onnxruntime", precision="fp16") as half, \
            make_backend(bundle, "onnxruntime") as full:
        a = make_pipeline(bundle, half)(frames).keypoints
        b = make_pipeline(bundle, full)(frames).keypoints
    found = ~np.isnan(b[..., 0])
    assert found.any() and np.array_equal(np.isnan(a[..., 0]), ~found)
    assert np.abs(a[found][:, :2] - b[found][:, :2]).max() <= 0.5


def test_fp16_graph_is_asked_for_by_name(tmp_path):
    shuffle = write_shuffle(tmp_path / "train")
    result = export_bundle(shuffle.config_path, shuffle.snapshot, tmp_path / "b.bundle", simplify=False,
                           frames=textured_frames(2, 64, 64))
    with pytest.raises(BackendError, match="no fp16 ONNX graph; re-export with --format onnx "
                                           "--precision fp16"):
        make_backend(Bundle.load(result.bundle_dir), "onnxruntime", precision="fp16")
    with pytest.raises(BackendError, match="unknown ONNX precision 'int8'"):
        make_backend(Bundle.load(result.bundle_dir), "onnxruntime", precision="int8")

