"""Live latency on the CPU: ``DLCLive.get_pose`` frame by frame vs ``pipeline(frame[None])``.

Batch 1, one frame at a time, as a closed-loop experiment runs. Three calls per frame, their
order rotating from frame to frame so that drift and cache effects hit all alike:
- ``pipeline``: the baseline, ``pipeline(rgb[None])`` on a frame already RGB (what the class
  wraps; same bundle, backend and options);
- ``live_bgr``: ``DLCLive.get_pose(bgr)``, a camera's BGR frame (the class converts it);
- ``live_rgb``: ``DLCLive(convert2rgb=False).get_pose(rgb)``: the class's own overhead without
  the colour conversion.
Each is timed by the caller (``perf_counter`` around the call); ``live_reported`` is the
class's own ``latency`` summary of the ``live_bgr`` calls. The bundle is the demo's model
(resnet_tiny, the synthetic project's 5 bodyparts) with random weights (speed does not depend
on them), exported once with ``dlc export``'s defaults; or any ``--bundle``.

    python benchmarks/bench_live.py                      # -> results/live_cpu.json
    python benchmarks/bench_live.py --bundle B --sizes 640x480 --frames 1000
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from dlc_runtime.backends import make_backend
from dlc_runtime.benchmark.live import latency_summary
from dlc_runtime.bundle import Bundle
from dlc_runtime.live import DLCLive
from dlc_runtime.pipelines import make_pipeline
from machine import save_result

VARIANTS = ("pipeline", "live_bgr", "live_rgb")


def demo_bundle(folder: Path, height: int, width: int) -> Path:
    """The demo's resnet_tiny (random weights) exported to ``folder``."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from helpers.frames import textured_frames  # noqa: E402  (the tests' builders)
    from helpers.shuffles import write_shuffle  # noqa: E402

    from dlc_export import export_bundle
    from dlc_train.synthetic.spec import BODYPARTS

    # DeepLabCut's shuffle layout, so the scorer is named as a real project's would be.
    train = folder / "dlc-models-pytorch/iteration-0/demoJan1-trainset95shuffle1/train"
    shuffle = write_shuffle(train, {"bodyparts": list(BODYPARTS),
                                                 "multianimalproject": False}, "resnet_tiny")
    return export_bundle(shuffle.config_path, shuffle.snapshot, folder / "demo.bundle",
                         frames=textured_frames(2, height, width)).bundle_dir


def measure(bundle: Path, height: int, width: int, frames: int, warmup: int,
            options: dict[str, Any]) -> dict[str, Any]:
    """Per-call milliseconds of each variant at ``width`` x ``height``."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (16, height // 8, width // 8, 3), dtype=np.uint8)
    rgb = [cv2.resize(s, (width, height), interpolation=cv2.INTER_LINEAR) for s in small]
    bgr = [cv2.cvtColor(f, cv2.COLOR_RGB2BGR) for f in rgb]
    loaded = Bundle.load(bundle)
    engine = make_backend(loaded, "onnxruntime", "cpu", **options)
    pipeline = make_pipeline(loaded, engine)
    live_bgr = DLCLive(bundle, backend_options=options, latency_window=frames)
    live_rgb = DLCLive(bundle, convert2rgb=False, backend_options=options)
    calls = {"pipeline": lambda i: pipeline(rgb[i][None]),
             "live_bgr": lambda i: live_bgr.get_pose(bgr[i]),
             "live_rgb": lambda i: live_rgb.get_pose(rgb[i])}
    seconds: dict[str, list[float]] = {v: [] for v in VARIANTS}
    try:
        live_bgr.init_inference(bgr[0])
        live_rgb.init_inference(rgb[0])
        for i in range(warmup):
            for variant in VARIANTS:
                calls[variant](i % len(rgb))
        live_bgr.reset_latency()
        for i in range(frames):
            k = i % len(rgb)
            for j in range(len(VARIANTS)):
                variant = VARIANTS[(i + j) % len(VARIANTS)]
                start = time.perf_counter()
                calls[variant](k)
                seconds[variant].append(time.perf_counter() - start)
        reported = live_bgr.latency
    finally:
        live_bgr.close()
        live_rgb.close()
        pipeline.close()
        engine.close()
    row: dict[str, Any] = {"width": width, "height": height, "frames": frames,
                           "backend": pipeline.backend_name}
    row.update({v: latency_summary(s) for v, s in seconds.items()})
    row["live_reported"] = {"calls": reported.calls, "p50": round(reported.p50_ms, 4),
                            "p99": round(reported.p99_ms, 4), "mean": round(reported.mean_ms, 4)}
    row["overhead_ms"] = {f"{v}_p50": round(row[v]["p50"] - row["pipeline"]["p50"], 4)
                          for v in ("live_bgr", "live_rgb")}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="default: the demo's model, random weights")
    parser.add_argument("--sizes", default="640x480,320x240", help="WxH,WxH,...")
    parser.add_argument("--frames", type=int, default=300, help="timed calls per variant")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--threads", type=int, help="onnxruntime intra-op threads "
                                                    "(default: onnxruntime's choice)")
    parser.add_argument("--name", default="live_cpu")
    args = parser.parse_args()
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    options = {} if args.threads is None else {"intra_op_threads": args.threads}
    load_before = os.getloadavg()  # a shared machine's other work shows in the p99
    with tempfile.TemporaryDirectory() as tmp:
        bundle = args.bundle or demo_bundle(Path(tmp), sizes[0][1], sizes[0][0])
        scorer = Bundle.load(bundle).scorer
        rows = []
        for width, height in sizes:
            row = measure(bundle, height, width, args.frames, args.warmup, options)
            rows.append(row)
            print(f"{width}x{height}: pipeline p50 {row['pipeline']['p50']:.2f} ms p99 "
                  f"{row['pipeline']['p99']:.2f} | DLCLive (BGR) p50 "
                  f"{row['live_bgr']['p50']:.2f} ms p99 {row['live_bgr']['p99']:.2f} | "
                  f"(RGB) p50 {row['live_rgb']['p50']:.2f} ms p99 "
                  f"{row['live_rgb']['p99']:.2f}", flush=True)
    result = {"bundle": str(args.bundle) if args.bundle else "demo resnet_tiny, random weights",
              "scorer": scorer, "intra_op_threads": args.threads, "warmup": args.warmup,
              "variants": {"pipeline": "pipeline(rgb[None]) directly (baseline)",
                           "live_bgr": "DLCLive.get_pose(bgr frame), converted to RGB",
                           "live_rgb": "DLCLive(convert2rgb=False).get_pose(rgb frame)"},
              "load_average_1min": {"before": round(load_before[0], 2),
                                    "after": round(os.getloadavg()[0], 2)},
              "rows": rows}
    print(f"-> {save_result(args.name, result)}")


if __name__ == "__main__":
    main()
