"""``dlc benchmark`` on the CPU: what it measures adds up, and what it writes."""
from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest

from dlc_export import export_bundle
from dlc_runtime import Bundle
from dlc_runtime.benchmark import markdown_table, run_benchmark, write_outputs
from dlc_runtime.benchmark.live import MEASURES, add_live, run_live
from dlc_runtime.benchmark.runner import end_to_end
from dlc_runtime.benchmark.stages import STAGES
from dlc_runtime.benchmark.synthetic import write_synthetic_video
from dlc_runtime.errors import VideoError
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
    run = end_to_end(Bundle.load(bundle), video, "onnxruntime", "cpu", None, batch_size=4,
                     warmup=2, max_frames=None, scratch=tmp_path)
    fps, counted, clock = run.fps, run.counted, run.clock
    assert counted == 40 - 2 * 4 and run.name == "onnxruntime-cpu"
    assert run.decoder.startswith("cpu (")
    # A synchronous backend has no upload stage: its graph runs while it is handed the batch.
    assert set(clock.samples) == set(STAGES) - {"upload"}
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
        assert set(row.stages_ms) == set(STAGES) - {"upload"}  # onnxruntime is synchronous
        for ms in row.stages_ms.values():
            assert ms["p50"] <= ms["p90"] <= ms["p99"]
        assert row.decoder.startswith("cpu (")
        assert row.peak_rss_mb > 0 and row.peak_device_mb is None  # no GPU, no figure
        assert row.device_memory_source is None
    written = write_outputs(report, tmp_path / "out")
    data = json.loads(written["json"].read_text())
    assert [r["batch_size"] for r in data["rows"]] == [1, 4]
    table = written["markdown"].read_text()
    assert table == markdown_table(report) and table.count("| onnxruntime-cpu |") == 2
    assert "| peak RSS MiB | peak device MiB |" in table and "Live:" not in table
    assert data["rows"][0]["peak_device_mb"] is None and data["live"] == []
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
    assert base["peak_rss_mb"] > 0 and base["peak_device_mb"] is None
    table = (tmp_path / "b" / "benchmark.md").read_text()
    assert "DeepLabCut-style baseline" in table
    assert f"Its peak RSS in its own process: {base['peak_rss_mb']:.0f} MiB" in table


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
    one_error_line(res, "single-animal bottom-up")


def test_live_times_each_frame_alone(tiny):
    """--live: each frame runs alone; inference is part of the pipeline's time, which is part
    of the loop's; the warm-up frames are not counted."""
    bundle, video = tiny
    row = run_live(Bundle.load(bundle), video, frames=30, warmup=5)
    assert row.frames == 25 and row.backend_name == "onnxruntime-cpu"
    inference, pipeline, loop = (np.asarray(row.samples_ms[m])
                                 for m in ("inference", "pipeline", "loop"))
    assert all(len(v) == 25 for v in (inference, pipeline, loop))
    assert inference.min() > 0 and np.all(inference <= pipeline + 1e-3)
    assert np.all(pipeline <= loop + 1e-3)
    for measure in MEASURES:
        ms = row.latency_ms[measure]
        assert 0 < ms["p50"] <= ms["p90"] <= ms["p99"] <= ms["max"]
        assert ms["mean"] == pytest.approx(np.mean(row.samples_ms[measure]), rel=1e-3)
    assert row.fps == pytest.approx(25 / (loop.sum() / 1e3), rel=0.01)


def test_live_on_a_short_video_counts_the_frames_it_has(tiny):
    bundle, video = tiny
    row = run_live(Bundle.load(bundle), video, frames=300, warmup=4)
    assert row.frames == 40 - 4
    with pytest.raises(VideoError, match="not more than the 40 live warm-up frames"):
        run_live(Bundle.load(bundle), video, frames=300, warmup=40)
    with pytest.raises(VideoError, match="leave none counted"):
        run_live(Bundle.load(bundle), video, frames=5, warmup=5)


def test_live_section_in_markdown_and_json(tiny, tmp_path):
    bundle, video = tiny
    report = run_benchmark(bundle, video, batch_sizes=(4,), repeats=1, warmup=1,
                           engine_calls=2)
    add_live(report, Bundle.load(bundle), video, frames=12, warmup=2)
    written = write_outputs(report, tmp_path / "out", plots=False)
    table = written["markdown"].read_text()
    assert "Live: batch 1, one frame at a time" in table and "2 warm-up frames" in table
    live = report.live[0]
    pipe = live.latency_ms["pipeline"]
    assert (f"| onnxruntime-cpu | default | 10 | {live.fps:.1f} | {pipe['p50']:.2f} / "
            f"{pipe['p90']:.2f} / {pipe['p99']:.2f} / {pipe['max']:.2f} |") in table
    data = json.loads(written["json"].read_text())
    assert data["live"] == [json.loads(json.dumps(asdict(live)))]
    assert data["machine"]["memory_mib"] > 0
    assert "live_plot" not in written


def test_cli_benchmark_live(tiny, tmp_path):
    """`dlc benchmark --live` on a synthetic video made long enough for it: the live table and
    JSON section, and its latency plot beside the throughput plot."""
    bundle, _ = tiny
    res = invoke(["benchmark", bundle, "--synthetic", "96x128", "--synthetic-frames", "8",
                  "--batch-size", "4", "--repeats", "1", "--warmup", "1", "--live",
                  "--live-frames", "24", "--live-warmup", "4", "--out", tmp_path / "bench",
                  "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "synthetic video 128x96, 24 frames" in res.output
    data = json.loads((tmp_path / "bench" / "benchmark.json").read_text())
    assert [(r["backend_name"], r["frames"], r["warmup"]) for r in data["live"]] == [
        ("onnxruntime-cpu", 20, 4)]
    assert "| onnxruntime-cpu | default | 20 |" in res.output
    for png in ("benchmark.png", "benchmark_live.png"):
        assert (tmp_path / "bench" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = invoke(["benchmark", bundle, "--synthetic", "96x128", "--batch-size", "4",
                  "--repeats", "1", "--live", "--live-frames", "4", "--live-warmup", "4",
                  "--out", tmp_path / "none", "--no-plots", "--no-progress"])
    one_error_line(res, "4 frames leave none after 4 warm-up frames")
    assert not (tmp_path / "none").exists()  # refused before any work
