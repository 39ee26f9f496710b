"""``dlc benchmark``: where a bundle's analysis time goes (see ``dlc_runtime.benchmark``)."""
from __future__ import annotations

from pathlib import Path

import click

from dlc_cli.errors import one_line_errors
from dlc_cli.options import parse_backend_options, parse_size


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.argument("video", required=False, type=click.Path(path_type=Path))
@click.option("--backend", "backends", multiple=True,
              type=click.Choice(["onnxruntime", "tensorrt", "torch", "openvino"]),
              help="Repeatable (default: onnxruntime).")
@click.option("--precision", "precisions", multiple=True,
              type=click.Choice(["fp32", "fp16", "bf16", "int8"]),
              help="Repeatable (default: each backend's own choice).")
@click.option("--config", "configs", multiple=True, metavar="BACKEND[:PRECISION]",
              help="Repeatable backend and precision pair, run side by side instead of every "
                   "--backend at every --precision, e.g. --config onnxruntime:fp32 --config "
                   "openvino:fp32 --config openvino:bf16 --config openvino:int8.")
@click.option("--compare-frames", type=click.IntRange(min=0), default=16, show_default=True,
              help="Frames (the video's first) on which each backend and precision's "
                   "keypoints are compared with the fp32 graph's on onnxruntime; 0: none.")
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
@click.option("--live", is_flag=True,
              help="Also measure batch-1 frame-by-frame latency as DeepLabCut-live's benchmark "
                   "does (each frame read, then run alone; p50/p90/p99/max per backend and "
                   "precision).")
@click.option("--live-frames", type=click.IntRange(min=2), default=300, show_default=True,
              help="Frames read by --live, warm-up included (fewer when the video is shorter).")
@click.option("--live-warmup", type=click.IntRange(min=0), default=10, show_default=True,
              help="Frames not counted at the start of --live.")
@click.option("--decoder", type=click.Choice(["auto", "cpu", "nvdec"]), default="auto",
              show_default=True, help="Video decoder of the end-to-end runs (see dlc analyze).")
@click.option("--backend-option", "backend_option", multiple=True, metavar="KEY=VALUE",
              help="Repeatable backend setting for every configuration, e.g. "
                   "cuda_graphs=false (torch on CUDA), provider=tensorrt (onnxruntime).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@one_line_errors
def benchmark(bundle, video, backends, precisions, configs, compare_frames, batch_sizes, device,
              repeats, warmup,
              max_frames, synthetic, synthetic_frames, out_dir, no_plots, baseline,
              baseline_snapshot, live, live_frames, live_warmup, decoder, backend_option,
              no_progress):
    """Frames/s end to end and engine only, stage latencies and peak host and device memory
    of a bundle, per backend, precision and batch size (VIDEO: default a synthetic one)."""
    from tqdm import tqdm

    from dlc_runtime import Bundle
    from dlc_runtime.benchmark import run_benchmark, write_outputs, write_synthetic_video
    from dlc_runtime.benchmark.live import add_live

    if configs and (backends or precisions):
        raise click.BadParameter("pass either --config pairs or --backend/--precision",
                                 param_hint="--config")
    pairs = tuple(parse_config(c) for c in configs)
    if live and live_frames <= live_warmup:
        raise click.BadParameter(f"{live_frames} frames leave none after {live_warmup} warm-up "
                                 "frames", param_hint="--live-frames")
    options = parse_backend_options(backend_option)
    bundle = Bundle.load(bundle)  # a bad bundle fails before any work
    backends, batch_sizes = backends or ("onnxruntime",), batch_sizes or (1, 8)
    precision_list = precisions or (None,)
    if pairs:
        backends, precision_list = tuple(b for b, _ in pairs), tuple(p for _, p in pairs)
    out_dir = out_dir or bundle.path.parent / f"{bundle.path.name}-benchmark"
    out_dir.mkdir(parents=True, exist_ok=True)
    if video is None:
        height, width = parse_size(synthetic, "--synthetic")
        n_frames = max(synthetic_frames, live_frames) if live else synthetic_frames
        video = write_synthetic_video(out_dir / "synthetic.mp4", n_frames, width, height)
        click.echo(f"synthetic video {width}x{height}, {n_frames} frames: {video}")
    total = (len(pairs) or len(backends) * len(precision_list)) * len(batch_sizes)
    with tqdm(total=total, unit="config", desc="benchmark", disable=no_progress) as bar:
        report = run_benchmark(bundle, video, backends=tuple(backends),
                               precisions=tuple(precision_list),
                               batch_sizes=tuple(batch_sizes), device=device, repeats=repeats,
                               warmup=warmup, max_frames=max_frames,
                               on_row=lambda row: bar.update(1), decoder=decoder,
                               backend_options=options, configs=pairs or None,
                               compare_frames=compare_frames)
    if live:
        for live_backends, live_precisions in ([((b,), (p,)) for b, p in pairs] or
                                               [(tuple(backends), tuple(precision_list))]):
            add_live(report, bundle, video, backends=live_backends,
                     precisions=live_precisions, device=device, frames=live_frames,
                     warmup=live_warmup, backend_options=options)
    if baseline:
        report.baseline = run_baseline(bundle, video, report, baseline_snapshot, device,
                                       max(batch_sizes), warmup, max_frames)
    written = write_outputs(report, out_dir, plots=not no_plots)
    click.echo(written["markdown"].read_text(encoding="utf-8"))
    click.echo(f"written to {', '.join(str(p) for p in written.values())}")


def parse_config(text: str) -> tuple[str, str | None]:
    """``"openvino:int8"`` -> ``("openvino", "int8")``; ``"onnxruntime"`` -> its default."""
    from dlc_runtime.backends import BACKENDS

    backend, _, precision = text.partition(":")
    if backend not in BACKENDS:
        raise click.BadParameter(f"unknown backend {backend!r} in {text!r}; use one of "
                                 f"{', '.join(sorted(BACKENDS))}", param_hint="--config")
    return backend, precision or None


def run_baseline(bundle, video: Path, report, snapshot: Path | None, device: str,
                 batch_size: int, warmup: int, max_frames: int | None) -> dict:
    """The DeepLabCut-style pipeline's frames/s and peak memory (in a process of its own, see
    ``dlc_runtime.benchmark.memory``) and how far its keypoints are from the bundle's on the
    same frames."""
    import tempfile

    import numpy as np

    from dlc_runtime.benchmark.memory import run_isolated
    from dlc_runtime.benchmark.runner import bundle_keypoints

    snapshot = snapshot or bundle.manifest.source.get("snapshot")
    if not snapshot or not Path(snapshot).is_file():
        raise click.BadParameter(f"the manifest's snapshot {snapshot} is not here; pass "
                                 "--baseline-snapshot", param_hint="--baseline")
    with tempfile.TemporaryDirectory(prefix="dlc-baseline-") as scratch:
        keypoints_path = Path(scratch) / "keypoints.npy"
        try:
            done = run_isolated("dlc_cli.benchmark:baseline_run", {
                "pytorch_config": str(bundle.path / "pytorch_config.yaml"),
                "snapshot": str(snapshot), "video": str(video), "device": device,
                "batch_size": batch_size, "max_frames": max_frames,
                "warmup_batches": max(warmup, 1), "keypoints_path": str(keypoints_path)},
                device)
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="--baseline") from None
        keypoints = np.load(keypoints_path)
    fps = done.result["fps"]
    ours = bundle_keypoints(bundle, video, len(keypoints), device=device)
    gap = np.linalg.norm(keypoints[..., :2] - ours[..., :2], axis=-1)
    best = max(row.fps_median for row in report.rows)
    return {"fps": round(fps, 2), "batch_size": batch_size, "speedup": round(best / fps, 2),
            "max_px_vs_bundle": round(float(np.nanmax(gap)), 4),
            "frames_compared": int(len(keypoints)), "peak_rss_mb": done.peak_rss_mb,
            "peak_device_mb": done.peak_device_mb,
            "device_memory_source": done.device_source}


def baseline_run(pytorch_config: str, snapshot: str, video: str, device: str, batch_size: int,
                 max_frames: int | None, warmup_batches: int, keypoints_path: str) -> dict:
    """The baseline's process (:func:`run_baseline`): runs it, saves its keypoints to
    ``keypoints_path`` (.npy) and returns its frames/s."""
    import numpy as np

    from dlc_train.apis.eager_analysis import EagerAnalysis

    eager = EagerAnalysis(pytorch_config, snapshot, device, batch_size)
    keypoints, fps = eager.run(video, max_frames=max_frames, warmup_batches=warmup_batches)
    np.save(keypoints_path, keypoints)
    return {"fps": fps, "frames": int(len(keypoints))}
