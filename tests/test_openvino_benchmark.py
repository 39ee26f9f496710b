"""``dlc benchmark`` side by side: onnxruntime fp32 beside OpenVINO fp32/bf16/int8, with
frames/s ratios and each one's keypoints vs the fp32 graph (``dlc_runtime.benchmark.agreement``).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from dlc_export import export_bundle
from dlc_runtime import Bundle
from dlc_runtime.benchmark import markdown_table, run_benchmark
from dlc_runtime.benchmark.agreement import VersusFp32, keypoint_agreement
from dlc_runtime.benchmark.machine import CPU_FLAGS, machine_info
from helpers.cli import invoke, one_error_line
from helpers.frames import textured_frames
from helpers.openvino_models import frames_video, peaked_shuffle

pytestmark = pytest.mark.usefixtures("one_thread")


def test_agreement_counts_detected_keypoints_and_missing_ones():
    ref = np.array([[[10.0, 10.0, 0.9], [20.0, 20.0, 0.9], [30.0, 30.0, 0.1]],
                    [[10.0, 10.0, 0.9], [np.nan, np.nan, 0.0], [5.0, 5.0, 0.2]]])
    got = ref.copy()
    got[0, 0, :2] += (3.0, 4.0)  # 5 px on a detected keypoint
    got[0, 2, :2] += 100.0  # undetected: not counted
    agreement = keypoint_agreement(ref, got, 0.6)
    assert (agreement.keypoints, agreement.frames, agreement.min_likelihood) == (3, 2, 0.6)
    assert agreement.max_px == 5.0 and agreement.median_px == 0.0
    assert agreement.p95_px == pytest.approx(np.percentile([5.0, 0.0, 0.0], 95))
    got[1, 0, :2] = np.nan  # lost where fp32 detects it: an infinite distance
    assert keypoint_agreement(ref, got, 0.6).max_px == np.inf
    # Nothing detected: every keypoint is compared, and the report says so.
    everything = keypoint_agreement(ref, ref + [1.0, 0.0, 0.0], 0.95)
    assert everything.min_likelihood is None and everything.keypoints == 6
    assert "all keypoints" in everything.summary()
    with pytest.raises(ValueError, match="shapes differ"):
        keypoint_agreement(ref, ref[:1])


def test_machine_records_the_reduced_precision_units():
    info = machine_info()
    assert set(info["cpu_flags"]) <= set(CPU_FLAGS)
    flags = open("/proc/cpuinfo").read().split()
    assert ("avx512_bf16" in info["cpu_flags"]) == ("avx512_bf16" in flags)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ov-bench")
    frames = textured_frames(4, 64, 96)
    shuffle = peaked_shuffle(folder / "train", frames)
    bundle = export_bundle(shuffle.config_path, shuffle.snapshot, folder / "b.bundle",
                           frames=frames, simplify=False).bundle_dir
    video = frames_video(folder / "clip.avi", np.concatenate([frames] * 5))
    return bundle, video


def test_side_by_side_rows_with_keypoints_vs_fp32(bench):
    pytest.importorskip("openvino")
    bundle, video = bench
    report = run_benchmark(bundle, video, configs=(("onnxruntime", "fp32"),
                                                   ("openvino", "fp32")),
                           batch_sizes=(4,), repeats=1, warmup=1, engine_calls=2,
                           compare_frames=8)
    assert [(r.backend, r.precision, r.backend_name) for r in report.rows] == [
        ("onnxruntime", "fp32", "onnxruntime-cpu"), ("openvino", "fp32", "openvino-cpu-fp32")]
    ort, ov = (r.vs_fp32 for r in report.rows)
    # The reference against itself, then OpenVINO fp32 on the clip's detected keypoints.
    assert ort["max_px"] == 0.0 and ort["frames"] == 8 and ort["min_likelihood"] == 0.6
    assert ov["keypoints"] == ort["keypoints"] > 0 and ov["max_px"] <= 0.01
    table = markdown_table(report)
    assert "Side by side" in table and "| openvino-cpu-fp32 | fp32 | 4 |" in table
    ratio = report.rows[1].fps_median / report.rows[0].fps_median
    assert f"| {ratio:.2f} |" in table


def test_versus_fp32_measures_any_backend(bench):
    pytest.importorskip("openvino")
    bundle, video = bench
    versus = VersusFp32(Bundle.load(bundle), video, 4)
    assert versus.frames.shape == (4, 64, 96, 3)
    assert versus.measure("onnxruntime", None)["max_px"] == 0.0
    assert versus.measure("openvino", "fp32")["max_px"] <= 0.01


def test_cli_config_pairs(bench, tmp_path):
    pytest.importorskip("openvino")
    bundle, video = bench
    res = invoke(["benchmark", bundle, video, "--config", "onnxruntime:fp32", "--config",
                  "openvino:fp32", "--batch-size", "4", "--repeats", "1", "--warmup", "1",
                  "--compare-frames", "4", "--out", tmp_path / "b", "--no-plots",
                  "--no-progress"])
    assert res.exit_code == 0, res.output
    rows = json.loads((tmp_path / "b" / "benchmark.json").read_text())["rows"]
    assert [(r["backend"], r["precision"]) for r in rows] == [("onnxruntime", "fp32"),
                                                              ("openvino", "fp32")]
    assert rows[1]["vs_fp32"]["max_px"] <= 0.01
    res = invoke(["benchmark", bundle, video, "--config", "tflite:int8", "--out",
                  tmp_path / "c"])
    one_error_line(res, "unknown backend 'tflite'")
    res = invoke(["benchmark", bundle, video, "--config", "openvino:fp32", "--backend",
                  "onnxruntime", "--out", tmp_path / "c"])
    one_error_line(res, "either --config pairs or --backend/--precision")
    assert not (tmp_path / "c").exists()
