"""``dlc benchmark``: where a bundle's analysis time goes (see ``dlc_runtime.benchmark``)."""
from __future__ import annotations

from pathlib import Path

import click

from dlc_cli.errors import one_line_errors
from dlc_cli.options import parse_size


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.argument("video", required=False, type=click.Path(path_type=Path))
@click.option("--backend", "backends", multiple=True,
              type=click.Choice(["onnxruntime", "tensorrt", "torch"]),
              help="Repeatable (default: onnxruntime).")
@click.option("--precision", "precisions", multiple=True, type=click.Choice(["fp32", "fp16"]),
              help="Repeatable (default: each backend's own choice).")
@click.option("--batch-size", "batch_sizes", multiple=True, type=click.IntRange(min=1),
              help="Repeatable (default: 1 and 8).")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True,
              help="End-to-end runs per configuration (median and spread reported).")
@click.option("--warmup", type=click.IntRange(min=0), default=2, show_default=True,
              help="Batches not counted at the start of each run.")
@click.option("--frames", "max_frames", type=click.IntRange(min=1), default=None,
              help="Frames counted per run (default: the whole video).")
@click.option("--synthetic", default="480x640", show_default=True, metavar="HxW",
              help="Frame size of the synthetic video used when no VIDEO is given.")
@click.option("--synthetic-frames", type=click.IntRange(min=1), default=256,
              show_default=True)
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Folder for benchmark.json/.md/.png (default: <bundle>-benchmark).")
@click.option("--no-plots", is_flag=True, help="Skip the PNG (no matplotlib needed).")
@click.option("--baseline", is_flag=True,
              help="Also run a DeepLabCut-3-style pipeline on the same weights (OpenCV decode in "
                   "the loop, float pre-processing on the CPU, eager PyTorch, predictor on the "
                   "host) and print the speed-up; single-animal bottom-up bundles.")
@click.option("--baseline-snapshot", type=click.Path(path_type=Path), default=None,
              help="The snapshot for --baseline (default: the one the manifest names).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@one_line_errors
def benchmark(bundle, video, backends, precisions, batch_sizes, device, repeats, warmup,
              max_frames, synthetic, synthetic_frames, out_dir, no_plots, baseline,
              baseline_snapshot, no_progress):
    """Frames/s end to end and engine only, stage latencies and peak memory of a bundle,
    per backend, precision and batch size (VIDEO: default a synthetic one)."""
    from tqdm import tqdm

    from dlc_runtime import Bundle
    from dlc_runtime.benchmark import run_benchmark, write_outputs, write_synthetic_video

    bundle = Bundle.load(bundle)  # a bad bundle fails before any work
    backends, batch_sizes = backends or ("onnxruntime",), batch_sizes or (1, 8)
    precision_list = precisions or (None,)
    out_dir = out_dir or bundle.path.parent / f"{bundle.path.name}-benchmark"
    out_dir.mkdir(parents=True, exist_ok=True)
    if video is None:
        height, width = parse_size(synthetic, "--synthetic")
        video = write_synthetic_video(out_dir / "synthetic.mp4", synthetic_frames, width, height)
        click.echo(f"synthetic video {width}x{height}, {synthetic_frames} frames: {video}")
    total = len(backends) * len(precision_list) * len(batch_sizes)
    with tqdm(total=total, unit="config", desc="benchmark", disable=no_progress) as bar:
        report = run_benchmark(bundle, video, backends=tuple(backends),
                               precisions=tuple(precision_list),
                               batch_sizes=tuple(batch_sizes), device=device, repeats=repeats,
                               warmup=warmup, max_frames=max_frames,
                               on_row=lambda row: bar.update(1))
    if baseline:
        report.baseline = run_baseline(bundle, video, report, baseline_snapshot, device,
                                       max(batch_sizes), warmup, max_frames)
    written = write_outputs(report, out_dir, plots=not no_plots)
    click.echo(written["markdown"].read_text(encoding="utf-8"))
    click.echo(f"written to {', '.join(str(p) for p in written.values())}")


def run_baseline(bundle, video: Path, report, snapshot: Path | None, device: str,
                 batch_size: int, warmup: int, max_frames: int | None) -> dict:
    """The DeepLabCut-style pipeline's frames/s and how far its keypoints are from the
    bundle's on the same frames."""
    import numpy as np

    from dlc_train.apis.eager_analysis import EagerAnalysis
    from dlc_runtime.benchmark.runner import bundle_keypoints

    snapshot = snapshot or bundle.manifest.source.get("snapshot")
    if not snapshot or not Path(snapshot).is_file():
        raise click.BadParameter(f"the manifest's snapshot {snapshot} is not here; pass "
                                 "--baseline-snapshot", param_hint="--baseline")
    try:
        eager = EagerAnalysis(bundle.path / "pytorch_config.yaml", snapshot, device, batch_size)
        keypoints, fps = eager.run(video, max_frames=max_frames, warmup_batches=max(warmup, 1))
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--baseline") from None
    ours = bundle_keypoints(bundle, video, len(keypoints), device=device)
    gap = np.linalg.norm(keypoints[..., :2] - ours[..., :2], axis=-1)
    best = max(row.fps_median for row in report.rows)
    return {"fps": round(fps, 2), "batch_size": batch_size, "speedup": round(best / fps, 2),
            "max_px_vs_bundle": round(float(np.nanmax(gap)), 4),
            "frames_compared": int(len(keypoints))}
