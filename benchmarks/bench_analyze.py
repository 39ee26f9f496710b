"""Analysis throughput: dlc_runtime.analyze_video vs a naive loop, measured in the same run.

The baseline decodes, infers and collects in one thread, batch by batch (what a first script
would do). The runtime overlaps decoding (a thread with a bounded queue) with inference and
streams results to the .h5. Both use the same bundle, video, batch size and onnxruntime session
options, so the ratio isolates the pipeline.

    dlc demo                                   # makes dlc-demo/ with a bundle and a video
    python benchmarks/bench_analyze.py --demo-dir dlc-demo
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from dlc_runtime import Bundle, analyze_video
from dlc_runtime.backends import OnnxRuntimeBackend
from machine import save_result


def naive_fps(bundle: Bundle, video: Path, batch_size: int) -> tuple[float, int]:
    backend = OnnxRuntimeBackend(bundle.graph_path("pose"))
    cap = cv2.VideoCapture(str(video))
    start, frames, batch, outputs = time.perf_counter(), 0, [], []
    while True:
        ok, frame = cap.read()
        if ok:
            batch.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        if batch and (len(batch) == batch_size or not ok):
            outputs.append(backend.run(np.stack(batch))["keypoints"])
            frames += len(batch)
            batch = []
        if not ok:
            break
    cap.release()
    return frames / (time.perf_counter() - start), frames


def runtime_fps(bundle_dir: Path, video: Path, batch_size: int) -> float:
    with tempfile.TemporaryDirectory() as dest:
        result = analyze_video(bundle_dir, video, dest_folder=dest, batch_size=batch_size,
                               progress=False, overwrite=True)
    return result.fps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-dir", type=Path, default=Path("dlc-demo"))
    parser.add_argument("--bundle", type=Path, help="default: the demo's bundle")
    parser.add_argument("--video", type=Path, help="default: the demo's video")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--name", default="analyze_cpu")
    args = parser.parse_args()
    bundle_dir = args.bundle or next(args.demo_dir.glob("project/*/exported-models-pytorch/*"))
    video = args.video or next(args.demo_dir.glob("project/*/videos/*.mp4"))
    bundle = Bundle.load(bundle_dir)

    runtime_fps(bundle_dir, video, args.batch_size)  # warm-up: page cache, onnxruntime init
    naive, runtime = [], []
    for _ in range(args.repeats):  # interleaved so drift affects both alike
        fps, frames = naive_fps(bundle, video, args.batch_size)
        naive.append(fps)
        runtime.append(runtime_fps(bundle_dir, video, args.batch_size))
    result = {
        "bundle": bundle.scorer, "video": video.name, "frames": frames,
        "batch_size": args.batch_size, "repeats": args.repeats,
        "naive_fps_median": round(statistics.median(naive), 1),
        "runtime_fps_median": round(statistics.median(runtime), 1),
        "speedup": round(statistics.median(runtime) / statistics.median(naive), 2),
        "naive_fps": [round(x, 1) for x in naive], "runtime_fps": [round(x, 1) for x in runtime],
    }
    path = save_result(args.name, result)
    print(f"naive {result['naive_fps_median']} frames/s, dlc_runtime "
          f"{result['runtime_fps_median']} frames/s (x{result['speedup']}) -> {path}")


if __name__ == "__main__":
    main()
