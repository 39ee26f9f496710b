"""CPU analysis side by side: onnxruntime fp32 vs OpenVINO fp32, bf16 and int8 (issue 15).

For each model (resnet_50, hrnet_w32, cspnext_s bottom-up, single animal, the openfield
project's 4 bodyparts), at 640x480 on the openfield video (real frames):
1. a stand-in snapshot: random weights trained for 60 Adam steps to clear heatmap peaks (and
   small location refinement) at fixed cells on 9 frames of the video (the 8 parity frames
   and the first frame; the arena is static, so the peaks hold on other frames), so keypoints
   are detected above pcutoff. No
   DeepLabCut-trained snapshot of these sizes is at hand and training one takes days on 2 cores:
   a trained model's reduced-precision errors may differ;
2. ``export_bundle(..., openvino_precisions=("fp32", "bf16", "int8"))``: int8 calibrated by NNCF
   on 64 frames of the video; every report is kept (``allow_parity_failure``) and recorded;
3. ``run_benchmark`` with the pairs onnxruntime:fp32, openvino:fp32, openvino:bf16,
   openvino:int8 in one run (end-to-end frames/s, ratios, keypoints vs fp32 on the video's
   first frames), and the DeepLabCut-style eager baseline on the same snapshot (``dlc
   benchmark --baseline``'s stand-in for DeepLabCut 3's analysis).

    python benchmarks/bench_openvino.py --work /tmp/ov-bench [--models resnet_50 ...]
    python benchmarks/bench_openvino.py --work /tmp/ov-bench --models cspnext_s \
        --trained .../train/pytorch_config.yaml .../train/snapshot-050.pt \
        --name openvino_cpu_trained    # a trained snapshot instead of the stand-in

Writes ``results/openvino_cpu.json`` (with the CPU model and its bf16/int8 flags).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[0] / "tests"))
sys.path.insert(0, str(HERE))

VIDEO = HERE.parents[1] / "shared" / "data" / "openfield-Pranav-2018-10-30" / "videos" / \
    "m3v1mp4.mp4"
PROJECT = {"bodyparts": ["snout", "leftear", "rightear", "tailbase"],
           "multianimalproject": False}
MODELS = ("resnet_50", "hrnet_w32", "cspnext_s")
#: Adam steps of the stand-ins' heatmap training (batches of 3 of the 9 training frames).
STEPS = 60
CONFIGS = (("onnxruntime", "fp32"), ("openvino", "fp32"), ("openvino", "bf16"),
           ("openvino", "int8"))


def peaks_on(model, inputs, steps: int = STEPS, lr: float = 3e-3, seed: int = 0) -> None:
    """Adam steps towards one Gaussian per keypoint (peak 0.9) at a fixed heatmap cell on
    ``inputs`` (normalized frames), the cells around each peak weighted 50x so the heatmaps do
    not settle at zero, and locref towards 0 there: the arena is static, so the peaks hold on
    every frame of the video."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        _, k, h, w = model(inputs[:1])["bodypart"]["heatmap"].shape
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    cy = torch.randint(2, h - 2, (k,), generator=generator).float()
    cx = torch.randint(2, w - 2, (k,), generator=generator).float()
    target = 0.9 * torch.exp(-((yy - cy[:, None, None]) ** 2
                               + (xx - cx[:, None, None]) ** 2) / 2)
    near = (target > 0.1).float()
    weight, near_xy = 1 + 50 * near, near.repeat_interleave(2, dim=0)
    optimizer = torch.optim.Adam(model.parameters(), lr)
    model.train()
    for _ in range(steps):
        batch = inputs[torch.randperm(len(inputs), generator=generator)[:3]]
        optimizer.zero_grad()
        out = model(batch)["bodypart"]
        # Locref trained near the peaks, as DeepLabCut trains it (here towards 0): untrained
        # offsets times locref_std (7.28) would move keypoints by pixels for any noise.
        loss = (weight * (out["heatmap"] - target) ** 2).mean() \
            + 50 * (near_xy * out["locref"] ** 2).mean()
        loss.backward()
        optimizer.step()
    model.eval()


def stand_in_shuffle(folder: Path, net_type: str, frames: np.ndarray, peaks: bool = True):
    """The shuffle of ``net_type`` with clear heatmap peaks (likelihood ~1) on ``frames``;
    ``peaks=False``: random weights with BatchNorm statistics of ``frames`` only (speed)."""
    import torch

    from dlc_export.wrappers import BottomUpSingleAnimal
    from helpers.shuffles import write_shuffle
    from helpers.trained_like import calibrate_batchnorm

    def prepare(model):
        with torch.no_grad():
            inputs = BottomUpSingleAnimal(model).normalize.prepare(
                torch.from_numpy(frames))[0]
        if peaks:
            peaks_on(model, inputs)
        else:
            calibrate_batchnorm(model, inputs)

    return write_shuffle(folder, PROJECT, net_type, prepare=prepare)


def training_frames(video: Path) -> np.ndarray:
    """The parity frames (8 spread over the video) and the video's first frame (the
    benchmark compares keypoints on the first frames)."""
    from dlc_export.frames import frames_from_video
    from dlc_runtime.video import VideoIterator

    with VideoIterator(video, batch_size=1) as batches:
        first = next(iter(batches))[1]
    return np.concatenate([frames_from_video(video, 8), first])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="scratch folder")
    parser.add_argument("--video", type=Path, default=VIDEO)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--frames", type=int, default=32, help="frames counted per run")
    parser.add_argument("--compare-frames", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--skip-build", action="store_true",
                        help="reuse the bundles already in --work")
    parser.add_argument("--untrained", nargs="*", default=[],
                        help="models whose stand-in gets no heatmap training (speed only)")
    parser.add_argument("--build-only", action="store_true",
                        help="make and export the bundles, measure nothing")
    parser.add_argument("--trained", nargs=2, type=Path, metavar=("PYTORCH_CONFIG", "SNAPSHOT"),
                        help="a trained snapshot (its pytorch_config.yaml, the .pt) instead of "
                             "the stand-in; --models names its one net type")
    parser.add_argument("--name", default="openvino_cpu")
    args = parser.parse_args()
    if args.trained and len(args.models) != 1:
        parser.error("--trained takes one model: pass its net type with --models")

    import torch

    from dlc_cli.benchmark import run_baseline
    from dlc_export import export_bundle
    from dlc_runtime.benchmark import markdown_table, run_benchmark
    from machine import save_result

    torch.set_num_threads(2)
    results = []
    for net_type in args.models:
        bundle_dir = args.work / f"{net_type}.bundle"
        entry: dict = {"net_type": net_type, "heatmaps_trained": net_type not in args.untrained}
        if args.trained:
            entry = {"net_type": net_type, "trained_snapshot": str(args.trained[1])}
        if not args.skip_build:
            started = time.perf_counter()
            frames = training_frames(args.video)
            if args.trained:
                config_path, snapshot = args.trained
            else:
                shuffle = stand_in_shuffle(args.work / "shuffles" / net_type, net_type, frames,
                                           peaks=net_type not in args.untrained)
                config_path, snapshot = shuffle.config_path, shuffle.snapshot
                entry["stand_in_seconds"] = round(time.perf_counter() - started, 1)
            started = time.perf_counter()
            result = export_bundle(config_path, snapshot, bundle_dir,
                                   frames=frames[:8], simplify=False,
                                   openvino_precisions=("fp32", "bf16", "int8"),
                                   calibration_videos=(args.video,),
                                   allow_parity_failure=True, overwrite=True)
            entry["export_seconds"] = round(time.perf_counter() - started, 1)
            print(f"{net_type}: exported in {entry['export_seconds']} s", flush=True)
            for label, parity in result.reports.items():
                print(f"  {label}: {parity.summary()}", flush=True)
        if args.build_only:
            continue
        entry["reports"] = {p.name: json.loads(p.read_text())
                            for p in sorted(bundle_dir.glob("parity*.json"))}
        # The stand-ins' reduced precisions may have failed their export checks (kept with
        # allow_parity_failure): the OpenVINO rows run them anyway (require_parity=False),
        # which onnxruntime has no option for, hence two calls, one after the other.
        common = dict(batch_sizes=(args.batch_size,), repeats=1, warmup=1,
                      max_frames=args.frames, engine_calls=2,
                      compare_frames=args.compare_frames)
        report = run_benchmark(bundle_dir, args.video, configs=CONFIGS[:1], **common)
        report.rows += run_benchmark(bundle_dir, args.video, configs=CONFIGS[1:],
                                     backend_options={"require_parity": False},
                                     **common).rows
        from dlc_runtime import Bundle

        report.baseline = run_baseline(Bundle.load(bundle_dir), args.video, report, None,
                                       "cpu", args.batch_size, 1, args.frames)
        print(markdown_table(report), flush=True)
        first = report.rows[0].fps_median
        entry["rows"] = [{"backend": r.backend, "precision": r.precision,
                          "backend_name": r.backend_name, "fps": r.fps_median,
                          "engine_fps": r.engine_fps, "x_onnxruntime_fp32": round(
                              r.fps_median / first, 2),
                          "x_baseline": round(r.fps_median / report.baseline["fps"], 2),
                          "peak_rss_mb": r.peak_rss_mb, "vs_fp32": r.vs_fp32}
                         for r in report.rows]
        entry["baseline"] = report.baseline
        entry["benchmark"] = report.to_dict()
        results.append(entry)
        path = save_result(args.name, {
            "frame_size": [480, 640], "video": str(args.video), "batch_size": args.batch_size,
            "frames_per_run": args.frames, "compare_frames": args.compare_frames,
            "stand_in": None if args.trained else
                        f"random weights, heatmaps trained to peaks at fixed cells on 9 video "
                        f"frames ({STEPS} Adam steps, peak cells weighted 50x)",
            "models": results})
    if results:
        print(f"written {path}")


if __name__ == "__main__":
    main()
