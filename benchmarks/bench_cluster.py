"""Cluster throughput: frames/s of ``analyze_videos_on_ray`` vs its number of workers, against a
serial local run measured in the same process.

Every configuration analyzes the same videos with the same bundle and one backend thread per
worker (onnxruntime ``intra_op_threads=1``; the serial run too). The workers' start (a Ray
process each, loading the bundle) is reported apart: it is paid once per run, not per video.
By default a toy bundle (``dlc_runtime.testing``) and synthetic videos, so the figures measure
decoding, the pipeline and the scheduling rather than a network; ``--bundle`` and ``--video``
measure a real model.

    python benchmarks/bench_cluster.py                  # -> benchmarks/results/cluster_cpu.json
    python benchmarks/bench_cluster.py --bundle B.bundle --video a.mp4 --video b.mp4
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from dlc_runtime import analyze_video
from dlc_runtime.cluster import analyze_videos_on_ray
from dlc_runtime.testing import make_test_video, make_toy_bundle
from machine import save_result


def serial_fps(bundle: Path, videos: list[Path], batch_size: int) -> float:
    """One video after the other in this process, one backend thread."""
    frames, t0 = 0, time.perf_counter()
    with tempfile.TemporaryDirectory() as dest:
        for video in videos:
            frames += analyze_video(bundle, video, dest, batch_size=batch_size, progress=False,
                                    backend_options={"intra_op_threads": 1}).n_frames
    return frames / (time.perf_counter() - t0)


def cluster_run(bundle: Path, videos: list[Path], workers: int, batch_size: int,
                min_segment_frames: int) -> dict:
    with tempfile.TemporaryDirectory() as dest:
        t0 = time.perf_counter()
        summary = analyze_videos_on_ray(bundle, videos, dest, workers=workers,
                                        threads_per_worker=1, batch_size=batch_size,
                                        progress=False, min_segment_frames=min_segment_frames)
        total = time.perf_counter() - t0
    assert not summary.failed, summary.line()
    return {"fps": summary.fps, "fps_with_startup": summary.frames / total,
            "startup_s": summary.startup_seconds,
            "segments": sum(getattr(o, "segments", 1) for o in summary.outcomes)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="default: a toy bundle")
    parser.add_argument("--video", type=Path, action="append", dest="videos",
                        help="repeatable; default: synthetic videos")
    parser.add_argument("--n-videos", type=int, default=4)
    parser.add_argument("--frames", type=int, default=1500, help="frames per synthetic video")
    parser.add_argument("--size", default="320x240", help="WxH of the synthetic videos")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cpus", type=int, default=None, help="the local Ray's CPUs")
    parser.add_argument("--name", default="cluster_cpu")
    args = parser.parse_args()

    import ray

    work = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    bundle = args.bundle or make_toy_bundle(work / "toy.bundle")
    width, height = (int(v) for v in args.size.split("x"))
    videos = args.videos or [make_test_video(work / f"v{i}.mp4", n_frames=args.frames,
                                             width=width, height=height)
                             for i in range(args.n_videos)]
    ray.init(num_cpus=args.cpus or max(args.workers), include_dashboard=False,
             log_to_driver=False)
    load_before = os.getloadavg()  # other work on the machine skews every figure: recorded
    serial_fps(bundle, videos[:1], args.batch_size)  # warm-up: page cache, onnxruntime init
    serial, runs = [], {w: [] for w in args.workers}
    long_runs = {w: [] for w in args.workers}
    for _ in range(args.repeats):  # interleaved so drift affects every configuration alike
        serial.append(serial_fps(bundle, videos, args.batch_size))
        for w in args.workers:
            runs[w].append(cluster_run(bundle, videos, w, args.batch_size, 10**9))
            # One video, cut into one segment per worker.
            long_runs[w].append(cluster_run(bundle, videos[:1], w, args.batch_size, 100))
    ray.shutdown()

    def median(rows: list[dict], key: str) -> float:
        return round(statistics.median(r[key] for r in rows), 1)

    base = statistics.median(serial)
    result = {
        "bundle": "toy" if args.bundle is None else str(args.bundle),
        "videos": [v.name for v in videos], "frames_per_video": args.frames
        if args.videos is None else None, "size": args.size if args.videos is None else None,
        "batch_size": args.batch_size, "repeats": args.repeats, "threads_per_worker": 1,
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "serial_fps_median": round(base, 1), "serial_fps": [round(x, 1) for x in serial],
        "workers": {
            str(w): {"fps_median": median(runs[w], "fps"),
                     "vs_serial": round(median(runs[w], "fps") / base, 2),
                     "fps_with_startup_median": median(runs[w], "fps_with_startup"),
                     "startup_s_median": median(runs[w], "startup_s"),
                     "one_video_in_segments": {
                         "segments": long_runs[w][0]["segments"],
                         "fps_median": median(long_runs[w], "fps"),
                         "vs_serial": round(median(long_runs[w], "fps") / base, 2)}}
            for w in args.workers},
    }
    if len(args.workers) > 1:
        first, last = str(args.workers[0]), str(args.workers[-1])
        result["scaling"] = round(result["workers"][last]["fps_median"]
                                  / result["workers"][first]["fps_median"], 2)
    path = save_result(args.name, result)
    print(f"serial {result['serial_fps_median']} frames/s; " + "; ".join(
        f"{w} workers {v['fps_median']} frames/s (x{v['vs_serial']} serial; one video in "
        f"{v['one_video_in_segments']['segments']} segments "
        f"{v['one_video_in_segments']['fps_median']}), startup {v['startup_s_median']} s"
        for w, v in result["workers"].items()) + f" -> {path}")


if __name__ == "__main__":
    main()
