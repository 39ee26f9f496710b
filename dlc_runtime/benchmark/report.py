"""``dlc benchmark``'s outputs: JSON, markdown tables and PNG plots (matplotlib, imported only
here: ``pip install "dlc-deploy[benchmark]"``).

The JSON is :meth:`BenchmarkReport.to_dict`: ``rows`` (one per backend, precision and batch, with
``peak_rss_mb`` and ``peak_device_mb``), ``live`` (``--live``: per-frame latency summaries and
samples) and ``baseline`` (``--baseline``), beside the ``machine``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dlc_io import atomic_path, atomic_write_text
from dlc_runtime.benchmark.runner import BenchmarkReport
from dlc_runtime.benchmark.stages import STAGES

COLUMNS = ("backend", "precision", "batch", "frames/s (median)", "runs", "engine-only frames/s",
           "efficiency", *(f"{s} p50/p99 ms" for s in STAGES), "peak RSS MiB",
           "peak device MiB")
LIVE_COLUMNS = ("backend", "precision", "frames", "frames/s", "pipeline p50 / p90 / p99 / max ms",
                "inference p50 / p99 ms", "loop (read + pipeline) p50 / p99 ms")


def _mib(value: float | None, source: str | None = None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" + (f" ({source})" if source else "")


def live_table(report: BenchmarkReport) -> list[str]:
    """The ``--live`` section: batch 1, frame by frame (:mod:`dlc_runtime.benchmark.live`)."""
    if not report.live:
        return []
    lines = ["", f"Live: batch 1, one frame at a time (read in the loop), "
                 f"{report.live[0].warmup} warm-up frames not counted.", "",
             "| " + " | ".join(LIVE_COLUMNS) + " |", "|" + " --- |" * len(LIVE_COLUMNS)]
    for row in report.live:
        pipe, infer, loop = (row.latency_ms[m] for m in ("pipeline", "inference", "loop"))
        cells = [row.backend_name or row.backend, row.precision or "default", str(row.frames),
                 f"{row.fps:.1f}",
                 " / ".join(f"{pipe[k]:.2f}" for k in ("p50", "p90", "p99", "max")),
                 f"{infer['p50']:.2f} / {infer['p99']:.2f}",
                 f"{loop['p50']:.2f} / {loop['p99']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def side_by_side(report: BenchmarkReport) -> list[str]:
    """Every row's frames/s as a ratio to the first row's at the same batch (and to the
    baseline's), with its keypoints vs fp32 (``compare_frames``); absent when not measured."""
    if not any(row.vs_fp32 for row in report.rows):
        return []
    first = {}
    for row in report.rows:
        first.setdefault(row.batch_size, row)
    base = report.baseline
    measured = next(row.vs_fp32 for row in report.rows if row.vs_fp32)
    which = "all keypoints (fp32 detects none)" if measured["min_likelihood"] is None \
        else f"keypoints fp32 detects (likelihood >= {measured['min_likelihood']:g})"
    lines = ["", f"Side by side: frames/s end to end as a ratio to the first row of the same "
                 f"batch{' and to the baseline' if base else ''}; keypoints vs the fp32 graph "
                 f"on onnxruntime over the video's first {measured['frames']} frames, on {which}.",
             "", "| backend | precision | batch | frames/s | x first row"
             + (" | x baseline" if base else "") + " | vs fp32 median / p95 / max px |",
             "|" + " --- |" * (6 + bool(base))]
    for row in report.rows:
        vs = row.vs_fp32
        cells = [row.backend_name or row.backend, row.precision or "default",
                 str(row.batch_size), f"{row.fps_median:.2f}",
                 f"{row.fps_median / first[row.batch_size].fps_median:.2f}"]
        if base:
            cells.append(f"{row.fps_median / base['fps']:.2f}")
        cells.append(f"{vs['median_px']:.3f} / {vs['p95_px']:.3f} / {vs['max_px']:.3f}"
                     if vs else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def baseline_lines(report: BenchmarkReport) -> list[str]:
    base = report.baseline
    if not base:
        return []
    lines = ["", f"DeepLabCut-style baseline (OpenCV decode in the loop, float "
                 f"pre-processing on the CPU, eager PyTorch, predictor on the host), batch "
                 f"{base['batch_size']}: {base['fps']:.1f} frames/s; the best row above is "
                 f"x{base['speedup']:.2f}; keypoints within {base['max_px_vs_bundle']:.3f} "
                 f"px of the bundle's on {base['frames_compared']} frames."]
    if base.get("peak_rss_mb") is not None:
        ours = [r for r in report.rows if r.batch_size == base["batch_size"]]
        versus = "; ".join(f"{r.backend_name or r.backend} {r.precision or 'default'} "
                           f"{r.peak_rss_mb:.0f} MiB" for r in ours)
        lines.append(f"Its peak RSS in its own process: {base['peak_rss_mb']:.0f} MiB"
                     + (f", device {base['peak_device_mb']:.0f} MiB"
                        if base.get("peak_device_mb") is not None else "")
                     + (f" (same batch here: {versus})." if versus else "."))
    return lines


def markdown_table(report: BenchmarkReport) -> str:
    machine = report.machine
    where = f"{machine.get('gpu') or 'no GPU'}, {machine.get('cpu')} ({machine.get('cores')} " \
        f"cores)" if machine else "machine not recorded"
    lines = [f"Bundle `{report.bundle}`, video `{report.video}` "
             f"({report.video_size[1]}x{report.video_size[0]}); {where}.", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    for row in report.rows:
        stages = [f"{row.stages_ms[s]['p50']:.2f} / {row.stages_ms[s]['p99']:.2f}"
                  if s in row.stages_ms else "-" for s in STAGES]
        cells = [row.backend_name or row.backend, row.precision or "default",
                 str(row.batch_size), f"{row.fps_median:.1f}",
                 " ".join(f"{v:.1f}" for v in row.fps_runs), f"{row.engine_fps:.1f}",
                 f"{row.efficiency:.2f}", *stages, _mib(row.peak_rss_mb),
                 _mib(row.peak_device_mb, row.device_memory_source)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Peak memory: a fresh process running one end-to-end run of the row "
                  "(interpreter and libraries included)."]
    return "\n".join(lines + side_by_side(report) + live_table(report)
                     + baseline_lines(report)) + "\n"


def plot(report: BenchmarkReport, path: Path) -> Path:
    """Throughput vs batch size (end to end and engine only) and per-stage p50 latency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    keys = sorted({(r.backend_name or r.backend, r.precision) for r in report.rows},
                  key=str)
    for key in keys:
        rows = sorted((r for r in report.rows if (r.backend_name or r.backend, r.precision)
                       == key), key=lambda r: r.batch_size)
        label = f"{key[0]} {key[1] or ''}".strip()
        batches = [r.batch_size for r in rows]
        left.plot(batches, [r.fps_median for r in rows], "o-", label=f"{label} end to end")
        left.plot(batches, [r.engine_fps for r in rows], "x--", label=f"{label} engine only")
    left.set(xlabel="batch size", ylabel="frames/s", title="throughput")
    left.legend(fontsize=7)
    names = [f"{r.backend_name or r.backend} {r.precision or ''} b{r.batch_size}"
             for r in report.rows]
    bottom = [0.0] * len(report.rows)
    for stage in STAGES:
        values = [r.stages_ms.get(stage, {}).get("p50", 0.0) for r in report.rows]
        right.barh(names, values, left=bottom, label=stage)
        bottom = [b + v for b, v in zip(bottom, values)]
    right.set(xlabel="ms per batch (p50)", title="where the time goes")
    right.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path, keep_suffix=True) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return path


def plot_live(report: BenchmarkReport, path: Path) -> Path:
    """Per-frame latency of the ``--live`` rows: cumulative distribution of ``pipeline`` (solid)
    and ``loop`` (dashed), p99 marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, row in enumerate(report.live):
        label = f"{row.backend_name or row.backend} {row.precision or ''}".strip()
        color = colors[i % len(colors)]  # one colour per backend, its two measures beside
        for measure, style in (("pipeline", "-"), ("loop", "--")):
            values = np.sort(np.asarray(row.samples_ms.get(measure, ()), dtype=np.float64))
            if not len(values):
                continue
            share = np.arange(1, len(values) + 1) / len(values)
            ax.plot(values, share, style, color=color, label=f"{label} {measure}")
            ax.axvline(row.latency_ms[measure]["p99"], color=color, linestyle=":",
                       linewidth=0.8)
    ax.set_xscale("log")  # the tail (p99, max) stays visible beside the median
    ax.set(xlabel="ms per frame (batch 1, log scale)", ylabel="share of frames",
           title="live latency (dotted: p99)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path, keep_suffix=True) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return path


def write_outputs(report: BenchmarkReport, out_dir: Path, plots: bool = True) -> dict[str, Path]:
    """``benchmark.json``, ``benchmark.md`` and (with matplotlib) ``benchmark.png``, plus
    ``benchmark_live.png`` when the report has live rows."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {"json": out_dir / "benchmark.json", "markdown": out_dir / "benchmark.md"}
    atomic_write_text(written["json"], json.dumps(report.to_dict(), indent=2) + "\n")
    atomic_write_text(written["markdown"], markdown_table(report))
    if plots:
        written["plot"] = plot(report, out_dir / "benchmark.png")
        if report.live:
            written["live_plot"] = plot_live(report, out_dir / "benchmark_live.png")
    return written
