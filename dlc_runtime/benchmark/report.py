"""``dlc benchmark``'s outputs: JSON, a markdown table and PNG plots (matplotlib, imported only
here: ``pip install "dlc-deploy[benchmark]"``)."""
from __future__ import annotations

import json
from pathlib import Path

from dlc_io import atomic_path, atomic_write_text
from dlc_runtime.benchmark.runner import BenchmarkReport
from dlc_runtime.benchmark.stages import STAGES

COLUMNS = ("backend", "precision", "batch", "frames/s (median)", "runs", "engine-only frames/s",
           "efficiency", *(f"{s} p50/p99 ms" for s in STAGES), "peak RSS MiB")


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
                 f"{row.efficiency:.2f}", *stages, f"{row.peak_rss_mb:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    if report.baseline:
        base = report.baseline
        lines += ["", f"DeepLabCut-style baseline (OpenCV decode in the loop, float "
                      f"pre-processing on the CPU, eager PyTorch, predictor on the host), batch "
                      f"{base['batch_size']}: {base['fps']:.1f} frames/s; the best row above is "
                      f"x{base['speedup']:.2f}; keypoints within {base['max_px_vs_bundle']:.3f} "
                      f"px of the bundle's on {base['frames_compared']} frames."]
    return "\n".join(lines) + "\n"


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


def write_outputs(report: BenchmarkReport, out_dir: Path, plots: bool = True) -> dict[str, Path]:
    """``benchmark.json``, ``benchmark.md`` and (with matplotlib) ``benchmark.png``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {"json": out_dir / "benchmark.json", "markdown": out_dir / "benchmark.md"}
    atomic_write_text(written["json"], json.dumps(report.to_dict(), indent=2) + "\n")
    atomic_write_text(written["markdown"], markdown_table(report))
    if plots:
        written["plot"] = plot(report, out_dir / "benchmark.png")
    return written
