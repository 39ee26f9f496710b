"""Where analysis memory goes on the CPU: our analysis beside the DeepLabCut-style baseline on the
same snapshot, each in a fresh process.

Builds a random-weight bundle (``--net-type``, default resnet_50, GroupNorm) with its ONNX graph
and fp32 torch artifact, and a synthetic 640x480 video of ``--batches`` batches, then measures
each setting in its own process (``dlc_runtime.benchmark.memory.run_isolated``: the child's peak
is Linux's ``VmHWM``, its own, never its parent's):
- ``onnxruntime``: ``analyze_video`` as ``dlc analyze`` runs it (decode thread, pipeline,
  ``.h5`` writer), onnxruntime on the CPU with the backend's default settings;
- ``onnxruntime_no_arena``: the same with ``cpu_arena=False``;
- ``torch_fp32``: the same on the bundle's fp32 torch artifact;
- ``dlc_eager``: ``EagerAnalysis``, DeepLabCut 3's way (OpenCV decode in the loop, float
  pre-processing on the CPU, eager PyTorch, predictor on the host), the baseline;
- ``...+mmap1m``: the first two with glibc's mmap threshold fixed at 1 MiB
  (``MALLOC_MMAP_THRESHOLD_``): glibc otherwise raises it (up to 32 MiB) each time a large
  block is freed, after which onnxruntime's activations come from the heap, whose freed space
  is kept rather than returned.
Per setting: resident memory after the imports, after loading the model, the sampled peak
during the analysis, after it, the process's peak, and frames/s (``analyze_video``'s: every
frame, the model load excluded; the baseline's: after one warm-up batch).

    python benchmarks/bench_memory.py [--net-type resnet_50] [--batch-size 8] [--batches 7]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SETTINGS = ("onnxruntime", "onnxruntime_no_arena", "torch_fp32", "dlc_eager",
            "onnxruntime+mmap1m", "onnxruntime_no_arena+mmap1m")
#: "+mmap1m": the child runs with glibc's mmap threshold fixed at 1 MiB.
MMAP_1M = {"MALLOC_MMAP_THRESHOLD_": str(1 << 20)}


def measure(setting: str, bundle: str, video: str, snapshot: str, batch_size: int) -> dict:
    """One setting, in this (fresh) process; run by ``main`` through ``run_isolated``."""
    from dlc_runtime.benchmark.memory import PeakSampler, current_rss_mb

    setting = setting.removesuffix("+mmap1m")
    if setting == "dlc_eager":
        from dlc_train.apis.eager_analysis import EagerAnalysis
    else:
        from dlc_runtime import Bundle, analyze_video, make_backend
        if setting == "torch_fp32":
            import torch  # noqa: F401  (counted with the imports, as the baseline's)
    after_imports = current_rss_mb()
    with tempfile.TemporaryDirectory() as out:
        if setting == "dlc_eager":
            eager = EagerAnalysis(Path(bundle) / "pytorch_config.yaml", snapshot, "cpu",
                                  batch_size)
            after_load = current_rss_mb()
            with PeakSampler(current_rss_mb, interval=0.01) as sampled:
                keypoints, fps = eager.run(video, warmup_batches=1)
            frames = len(keypoints)
        else:
            loaded = Bundle.load(bundle)
            backend, options = ("torch", {"precision": "fp32"}) if setting == "torch_fp32" \
                else ("onnxruntime", {"cpu_arena": setting != "onnxruntime_no_arena"})
            with make_backend(loaded, backend, "cpu", **options) as engine:
                after_load = current_rss_mb()
                with PeakSampler(current_rss_mb, interval=0.01) as sampled:
                    result = analyze_video(loaded, video, dest_folder=out,
                                           batch_size=batch_size, backend=engine,
                                           progress=False, overwrite=True)
            fps, frames = result.fps, result.n_frames
    return {"rss_after_imports_mib": after_imports, "rss_after_load_mib": after_load,
            "rss_sampled_peak_mib": sampled.peak, "rss_after_run_mib": current_rss_mb(),
            "frames": int(frames), "fps": round(float(fps), 2)}


def main() -> None:
    sys.path.insert(0, str(HERE.parent / "tests"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net-type", default="resnet_50")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=7)
    parser.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS))
    args = parser.parse_args()
    # Imported here, not above: the measuring children import this module, and nothing else.
    import numpy as np
    from helpers.shuffles import write_shuffle
    from machine import save_result

    from dlc_export import export_bundle
    from dlc_runtime.benchmark import write_synthetic_video
    from dlc_runtime.benchmark.memory import run_isolated

    # The children import this module (and the tests' helpers) by name.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(HERE), str(HERE.parent / "tests"), os.environ.get("PYTHONPATH", ""))
        if p)
    with tempfile.TemporaryDirectory() as tmp:
        shuffle = write_shuffle(Path(tmp) / "train", {
            "bodyparts": [f"kp{i}" for i in range(12)], "multianimalproject": False},
            args.net_type)
        frames = np.random.default_rng(0).integers(0, 256, (2, 480, 640, 3), dtype=np.uint8)
        bundle = export_bundle(shuffle.config_path, shuffle.snapshot, Path(tmp) / "b.bundle",
                               frames=frames, simplify=False,
                               torch_precisions=("fp32",)).bundle_dir
        video = write_synthetic_video(Path(tmp) / "v.mp4", args.batch_size * args.batches,
                                      640, 480)
        rows = []
        for setting in args.settings:
            start = time.perf_counter()
            extra = MMAP_1M if setting.endswith("+mmap1m") else {}
            os.environ.update(extra)
            try:
                done = run_isolated("bench_memory:measure", {
                    "setting": setting, "bundle": str(bundle), "video": str(video),
                    "snapshot": str(shuffle.snapshot), "batch_size": args.batch_size})
            finally:
                for name in extra:
                    del os.environ[name]
            rows.append({"setting": setting, **done.result, "peak_rss_mib": done.peak_rss_mb,
                         "wall_s": round(time.perf_counter() - start, 1)})
            print(rows[-1], flush=True)
    print(f"\n| setting | after imports | after load | peak | frames/s |\n|{' --- |' * 5}")
    for row in rows:
        print(f"| {row['setting']} | {row['rss_after_imports_mib']:.0f} | "
              f"{row['rss_after_load_mib']:.0f} | {row['peak_rss_mib']:.0f} | {row['fps']} |")
    print(save_result(f"memory_cpu_{time.strftime('%Y-%m-%d')}", {
        "net_type": args.net_type, "frame_size": [480, 640], "batch_size": args.batch_size,
        "frames": args.batch_size * args.batches, "unit": "MiB", "rows": rows}))


if __name__ == "__main__":
    main()
