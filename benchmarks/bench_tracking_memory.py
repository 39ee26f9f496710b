"""Memory of tracking over a long video: the streamed tracker, then stitching and the files.

Synthetic animals (``bench_tracking.walk``: 12 keypoints, 10 % missing) go through a
:class:`~dlc_runtime.tracking.video_tracker.VideoTracker` in batches of 64 frames, as
``analyze_video(track=...)`` feeds it, for ``--frames`` frames; this process's resident memory
is read every ``--every`` frames. Then the tracks are finished, stitched and written
(``write_tracking``), and the peak is read. The baseline in the same run: the bytes of the
analysis rows themselves (frames x animals x keypoints x 3 float64), what DeepLabCut holds in
memory for the same video before it tracks.

    python benchmarks/bench_tracking_memory.py [--frames 200000] [--animals 4]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_tracking import walk
from dlc_runtime.benchmark.memory import current_rss_mb, peak_rss_mb
from dlc_runtime.tracking.options import TrackingOptions
from dlc_runtime.tracking.video_tracker import VideoTracker, write_tracking
from machine import save_result

BATCH = 64
CHUNK = 10_000  # frames generated at a time (the input itself must not grow the memory)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200_000)
    parser.add_argument("--animals", type=int, default=4)
    parser.add_argument("--keypoints", type=int, default=12)
    parser.add_argument("--method", default="ellipse")
    parser.add_argument("--every", type=int, default=20_000)
    args = parser.parse_args()
    names = [f"bp{i}" for i in range(args.keypoints)]
    individuals = [f"ind{i + 1}" for i in range(args.animals)]
    options = TrackingOptions(args.method)
    tracker = VideoTracker(options)
    start_rss = current_rss_mb()
    samples, t0 = [], time.perf_counter()
    for first in range(0, args.frames, CHUNK):
        n = min(CHUNK, args.frames - first)
        poses = walk(n, args.animals, args.keypoints, seed=first)
        for b in range(0, n, BATCH):
            part = poses[b:b + BATCH]
            tracker.add(np.arange(first + b, first + b + len(part)), part)
        if (first + n) % args.every == 0 or first + n == args.frames:
            samples.append({"frames": first + n, "rss_mib": round(current_rss_mb(), 1)})
            print(f"{first + n:8d} frames tracked: {samples[-1]['rss_mib']:8.1f} MiB")
    track_seconds = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        t1 = time.perf_counter()
        out = write_tracking(tracker.finish(), Path(tmp) / "videoDLC_bench.h5", "DLC_bench",
                             names, [], individuals, options)
        write_seconds = time.perf_counter() - t1
    rows_mib = args.frames * args.animals * args.keypoints * 3 * 8 / 2**20
    result = {
        "frames": args.frames, "animals": args.animals, "keypoints": args.keypoints,
        "tracker": args.method, "rss_after_imports_mib": round(start_rss, 1),
        "samples": samples, "peak_rss_mib": round(peak_rss_mb(), 1),
        # growth between the first and the last sample: what tracking adds per frame, without
        # the first chunk's one-off allocations
        "tracked_mib_per_100k_frames": round(
            (samples[-1]["rss_mib"] - samples[0]["rss_mib"]) * 100_000
            / max(samples[-1]["frames"] - samples[0]["frames"], 1), 1),
        "baseline_rows_float64_mib": round(rows_mib, 1),
        "tracking_ms_per_frame": round(1e3 * track_seconds / args.frames, 4),
        "stitch_and_write_seconds": round(write_seconds, 1),
        "tracklets": out.n_tracklets, "tracks": out.n_tracks, "error": out.error,
    }
    print(f"peak {result['peak_rss_mib']} MiB; tracked poses "
          f"{result['tracked_mib_per_100k_frames']} MiB per 100k frames (rows as float64: "
          f"{rows_mib * 100_000 / args.frames:.1f} MiB per 100k); stitch + write "
          f"{write_seconds:.1f} s; {out.n_tracklets} tracklets -> {out.n_tracks} tracks")
    print(f"saved {save_result('tracking_memory_cpu', result)}")


if __name__ == "__main__":
    main()
