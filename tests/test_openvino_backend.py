"""The OpenVINO runtime backend in fp32: the same keypoints as onnxruntime (within 0.01 px) for
one model of each task through the runtime's pipelines, batches split over streams, and one
clear line for what it cannot do (no OpenVINO installed, another device, unknown options).

Reduced precisions (bf16, int8) and their gates: ``test_openvino_export.py``.
"""
from __future__ import annotations

import sys

import numpy as np
import pytest

from dlc_export import export_bundle
from dlc_runtime import BackendError, Bundle, make_backend
from dlc_runtime.backends.openvino_backend import OPENVINO_MISSING, OpenVinoBackend
from dlc_runtime.pipelines import make_pipeline
from dlc_runtime.pipelines.base import pipeline_class
from helpers.cli import invoke, one_error_line
from helpers.frames import textured_frames
from helpers.openvino_models import frames_video, peaked_shuffle
from helpers.shuffles import write_shuffle
# One model of each task: the top-down and CTD projects as their own export tests build them.
from test_export_ctd import ctd_bundle, ctd_project  # noqa: F401 (fixtures)
from test_export_top_down import td_project  # noqa: F401 (fixture)

pytest.importorskip("openvino", reason="the openvino extra is not installed")
pytestmark = pytest.mark.usefixtures("one_thread")

#: The issue's bound on fp32 OpenVINO vs onnxruntime keypoints.
FP32_PX = 0.01
TASKS = {"bottom_up_heatmap": "bottom_up", "bottom_up_paf": "bottom_up", "top_down": "top_down",
         "cond_top_down": "cond_top_down"}
PAF_PROJECT = {"multianimalproject": True, "multianimalbodyparts": ["a", "b", "c"],
               "individuals": ["m1", "m2"], "uniquebodyparts": []}


@pytest.fixture(scope="module")
def heatmap_bundle(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ov-heatmap")
    frames = textured_frames(4, 64, 96)
    shuffle = peaked_shuffle(folder / "train", frames)
    result = export_bundle(shuffle.config_path, shuffle.snapshot, folder / "b.bundle",
                           frames=frames, simplify=False)
    return Bundle.load(result.bundle_dir), frames


@pytest.fixture(scope="module")
def td_bundle(td_project, tmp_path_factory):  # noqa: F811 (the imported fixture)
    _, train = td_project
    result = export_bundle(train / "pytorch_config.yaml", train / "snapshot-005.pt",
                           tmp_path_factory.mktemp("ov-td") / "td.bundle",
                           frames=textured_frames(2, 120, 160), simplify=False)
    return Bundle.load(result.bundle_dir)


def _paf_bundle(folder):
    shuffle = write_shuffle(folder / "train", PAF_PROJECT)
    frames = textured_frames(4, 64, 96)
    result = export_bundle(shuffle.config_path, shuffle.snapshot, folder / "b.bundle",
                           frames=frames, simplify=False)
    return Bundle.load(result.bundle_dir), frames


def _keypoints(bundle: Bundle, backend: str, frames: np.ndarray, **options) -> np.ndarray:
    graph = pipeline_class(bundle).backend_graph
    with make_backend(bundle, backend, graph=graph, **options) as engine:
        pipeline = make_pipeline(bundle, engine)
        try:
            return pipeline(frames).keypoints
        finally:
            pipeline.close()


def _assert_same(got: np.ndarray, ref: np.ndarray) -> None:
    found = ~np.isnan(ref[..., 0])
    assert found.any(), "no keypoint found: the comparison would be empty"
    assert np.array_equal(np.isnan(got[..., 0]), ~found)
    assert np.abs(got[found][:, :2] - ref[found][:, :2]).max() <= FP32_PX
    assert np.abs(np.nan_to_num(got[..., 2]) - np.nan_to_num(ref[..., 2])).max() <= 1e-4


@pytest.mark.parametrize("task", list(TASKS))
def test_fp32_keypoints_equal_onnxruntime(task, request, heatmap_bundle, tmp_path):
    if task == "bottom_up_heatmap":
        bundle, frames = heatmap_bundle
    elif task == "bottom_up_paf":
        bundle, frames = _paf_bundle(tmp_path)
    elif task == "top_down":
        bundle, frames = request.getfixturevalue("td_bundle"), textured_frames(3, 120, 160)
    else:
        bundle = Bundle.load(request.getfixturevalue("ctd_bundle").bundle_dir)
        frames = textured_frames(3, 120, 160, seed=3)
    got = _keypoints(bundle, "openvino", frames)
    _assert_same(got, _keypoints(bundle, "onnxruntime", frames))
    assert bundle.task == TASKS[task]


def test_every_graph_of_a_pipeline_runs_on_openvino(td_bundle):
    with make_backend(td_bundle, "openvino", graph="detector") as detector:
        pipeline = make_pipeline(td_bundle, detector)
        # The pose graph's backend is opened from the detector's: same kind and options.
        assert isinstance(pipeline.pose, OpenVinoBackend) and pipeline.pose is not detector
        assert pipeline.backend_name == "openvino-cpu-fp32"
        pipeline.close()


def test_batches_are_split_over_the_streams(heatmap_bundle):
    """Throughput mode runs a batch as one request per stream; any batch size gives what one
    request (latency mode) and onnxruntime give."""
    bundle, frames = heatmap_bundle
    frames = np.concatenate([frames, textured_frames(1, 64, 96, seed=7)])  # 5: uneven split
    with make_backend(bundle, "openvino", streams=2) as many, \
            make_backend(bundle, "openvino", mode="latency") as one, \
            make_backend(bundle, "onnxruntime") as ort:
        assert many.streams == 2 and one.streams == 1 and many.name == "openvino-cpu-fp32"
        pending = many.submit(frames)
        split = pending.result()["keypoints"]
        whole = one.run(frames)["keypoints"]
        ref = ort.run(frames)["keypoints"]
        assert split.shape == ref.shape == (5, 1, 4, 3)
        np.testing.assert_allclose(split, whole, atol=1e-4)
        np.testing.assert_allclose(split[..., :2], ref[..., :2], atol=FP32_PX)
        assert many.run(frames[:1])["keypoints"].shape == (1, 1, 4, 3)
        # Batches submitted before the earlier ones are collected keep their own outputs (two
        # run at once; a third waits for the first's requests).
        parts = [many.submit(frames[i:i + 2]) for i in range(0, 5, 2)]
        assert not parts[1].done
        np.testing.assert_allclose(np.concatenate([p.result()["keypoints"] for p in parts]),
                                   split, atol=1e-5)


def test_analyze_cli_with_openvino(heatmap_bundle, tmp_path):
    import pandas as pd

    bundle, frames = heatmap_bundle
    video = frames_video(tmp_path / "v.avi", np.concatenate([frames] * 3))
    res = invoke(["analyze", bundle.path, video, "--backend", "openvino", "--dest", tmp_path,
                  "--no-progress"])
    assert res.exit_code == 0, res.output
    meta = pd.read_pickle(next(tmp_path.glob("*_meta.pickle")))
    assert meta["data"]["dlc-deploy"]["backend"] == "openvino-cpu-fp32"
    assert len(pd.read_hdf(next(tmp_path.glob("*.h5")))) == 12


def test_one_line_errors(heatmap_bundle):
    bundle, _ = heatmap_bundle
    with pytest.raises(BackendError, match="runs on the CPU: device must be 'cpu'"):
        make_backend(bundle, "openvino", device="cuda")
    with pytest.raises(BackendError, match="unknown OpenVINO mode 'fast'"):
        make_backend(bundle, "openvino", mode="fast")
    with pytest.raises(BackendError, match="unknown OpenVINO precision 'fp16'"):
        make_backend(bundle, "openvino", precision="fp16")
    with pytest.raises(BackendError, match="no OpenVINO int8 graph; export it with `dlc export "
                                           "--format openvino --precision int8`"):
        make_backend(bundle, "openvino", precision="int8")
    with pytest.raises(BackendError, match="no OpenVINO bf16 graph"):
        make_backend(bundle, "openvino", precision="bf16")
    with pytest.raises(BackendError, match="cannot read"):
        OpenVinoBackend(bundle.path / "manifest.yaml")


def test_missing_openvino_is_one_line_naming_the_extra(heatmap_bundle, monkeypatch, tmp_path):
    bundle, frames = heatmap_bundle
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` -> ImportError
    with pytest.raises(BackendError) as info:
        make_backend(bundle, "openvino")
    assert str(info.value) == OPENVINO_MISSING and "dlc-deploy[openvino]" in OPENVINO_MISSING
    video = frames_video(tmp_path / "v.avi", frames)
    res = invoke(["analyze", bundle.path, video, "--backend", "openvino", "--dest", tmp_path])
    one_error_line(res, "pip install 'dlc-deploy[openvino]'")
    assert not list(tmp_path.glob("*.h5"))


def test_runtime_import_does_not_import_openvino():
    import subprocess

    code = ("import sys, dlc_runtime, dlc_runtime.benchmark; "
            "assert 'openvino' not in sys.modules, 'imported'; print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
