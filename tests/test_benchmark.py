"""``dlc benchmark`` on the CPU: what it measures adds up, and what it writes."""
from __future__ import annotations

import json

import pytest

from dlc_export import export_bundle
from dlc_runtime import Bundle
from dlc_runtime.benchmark import markdown_table, run_benchmark, write_outputs
from dlc_runtime.benchmark.runner import end_to_end
from dlc_runtime.benchmark.stages import STAGES
from dlc_runtime.benchmark.synthetic import write_synthetic_video
from helpers.cli import invoke, one_error_line
from helpers.frames import textured_frames
from helpers.shuffles import write_shuffle

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("benchmark")
    shuffle = write_shuffle(folder / "train")
    bundle = export_bundle(shuffle.config_path, shuffle.snapshot, folder / "tiny.bundle",
                           frames=textured_frames(2, 96, 128), simplify=False).bundle_dir
    video = write_synthetic_video(folder / "clip.mp4", n_frames=40, width=128, height=96)
    return bundle, video


def test_stages_account_for_the_whole_loop(tiny, tmp_path):
    """decode + inference + host + write of the counted batches is the loop's wall time, and
    the warm-up batches are not counted."""
    bundle, video = tiny
    fps, counted, clock, name = end_to_end(Bundle.load(bundle), video, "onnxruntime", "cpu",
                                           None, batch_size=4, warmup=2, max_frames=None,
                                           scratch=tmp_path)
    assert counted == 40 - 2 * 4 and name == "onnxruntime-cpu"
    assert set(clock.samples) == set(STAGES)
    assert all(len(v) == counted // 4 for v in clock.samples.values())
    total = sum(sum(v) for v in clock.samples.values())
    assert total == pytest.approx(counted / fps, rel=0.02)
    assert min(clock.samples["inference"]) > 0 and min(clock.samples["host"]) >= -1e-4


def test_run_benchmark_rows_and_outputs(tiny, tmp_path):
    bundle, video = tiny
    seen = []
    report = run_benchmark(bundle, video, batch_sizes=(1, 4), repeats=2, warmup=1,
                           engine_calls=3, on_row=seen.append)
    assert [(r.backend, r.batch_size) for r in report.rows] == [("onnxruntime", 1),
                                                                 ("onnxruntime", 4)]
    assert seen == report.rows and report.video_size == (96, 128)
    for row in report.rows:
        assert len(row.fps_runs) == 2 and row.fps_median > 0 and row.engine_fps > 0
        assert row.efficiency == pytest.approx(row.fps_median / row.engine_fps, abs=1e-3)
        assert row.frames == 40 - row.batch_size
        for stage in STAGES:
            ms = row.stages_ms[stage]
            assert ms["p50"] <= ms["p90"] <= ms["p99"]
        assert row.peak_rss_mb > 0
    written = write_outputs(report, tmp_path / "out")
    data = json.loads(written["json"].read_text())
    assert [r["batch_size"] for r in data["rows"]] == [1, 4]
    table = written["markdown"].read_text()
    assert table == markdown_table(report) and table.count("| onnxruntime-cpu |") == 2
    assert written["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_benchmark_on_a_synthetic_video(tiny, tmp_path):
    bundle, _ = tiny
    res = invoke(["benchmark", bundle, "--synthetic", "96x128", "--synthetic-frames", "20",
                  "--batch-size", "4", "--repeats", "1", "--warmup", "1", "--out",
                  tmp_path / "bench", "--no-plots", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "bench" / "synthetic.mp4").is_file()
    assert json.loads((tmp_path / "bench" / "benchmark.json").read_text())["rows"][0][
        "frames"] == 16
    assert not (tmp_path / "bench" / "benchmark.png").exists()
    assert "| onnxruntime-cpu | default | 4 |" in res.output


def test_cli_benchmark_bad_inputs_are_one_line(tiny, tmp_path):
    bundle, video = tiny
    res = invoke(["benchmark", tmp_path / "missing.bundle", "--out", tmp_path / "x"])
    assert res.exit_code == 1 and "missing.bundle" in one_error_line(res)
    assert not (tmp_path / "x").exists()  # refused before any work
    res = invoke(["benchmark", bundle, video, "--batch-size", "32", "--warmup", "2",
                  "--out", tmp_path / "y", "--no-plots", "--no-progress"])
    assert res.exit_code == 1 and "fewer than 3 batches of 32 frames" in one_error_line(res)


def test_baseline_agrees_with_the_bundle_and_reports_the_speedup(tiny, tmp_path):
    """--baseline: the DeepLabCut-style pipeline on the same weights gives the bundle's
    keypoints (within 0.5 px) and a speed-up figure computed from the rows."""
    bundle, video = tiny
    res = invoke(["benchmark", bundle, video, "--batch-size", "4", "--repeats", "1",
                  "--warmup", "1", "--out", tmp_path / "b", "--no-plots", "--no-progress",
                  "--baseline"])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "b" / "benchmark.json").read_text())
    base = data["baseline"]
    assert base["frames_compared"] == 40 and base["max_px_vs_bundle"] <= 0.5
    assert base["fps"] > 0 and base["speedup"] == pytest.approx(
        data["rows"][0]["fps_median"] / base["fps"], rel=0.01)
    assert "DeepLabCut-style baseline" in (tmp_path / "b" / "benchmark.md").read_text()


def test_baseline_refuses_what_it_does_not_cover(tmp_path):
    """Multi-animal bundles have no DeepLabCut-style baseline yet: one line, exit 2."""
    shuffle = write_shuffle(tmp_path / "train", {
        "multianimalproject": True, "multianimalbodyparts": ["a", "b"],
        "individuals": ["m1", "m2"], "uniquebodyparts": []})
    bundle = export_bundle(shuffle.config_path, shuffle.snapshot, tmp_path / "ma.bundle",
                           frames=textured_frames(2, 64, 64), simplify=False).bundle_dir
    video = write_synthetic_video(tmp_path / "v.mp4", n_frames=12, width=64, height=64)
    res = invoke(["benchmark", bundle, video, "--batch-size", "4", "--repeats", "1",
                  "--warmup", "1", "--out", tmp_path / "b", "--no-plots", "--no-progress",
                  "--baseline"])
    assert res.exit_code == 2 and "single-animal bottom-up" in res.output
