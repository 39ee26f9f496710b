"""Memory over a long analysis: resident memory against frames analyzed, sampled through the run.

Writes a synthetic video of ``--frames`` frames at a small size (``make_test_video``: one colour
per frame, mp4v) and analyzes it with the toy bundle (``dlc_runtime.testing``: a graph whose
keypoints are pixel means, so the run costs decoding, the writer and the checkpoints rather than
a model). A background thread reads this process's ``VmRSS`` (``/proc/self/status``) every
``--interval`` seconds with the frames the backend has been given so far; the results file also
gets the memory after the imports and the model load, the peak (``VmHWM``), and the growth from
the first tenth of the frames to the end (memory flat: a few MiB at most, whatever the length).
The run includes what a long analysis does: checkpoints (every ``--checkpoint-seconds``), then
the ``.h5`` written from the checkpoint's rows, verified, and published.

    python benchmarks/bench_long.py [--frames 1000000] [--batch-size 64] [--width 64 --height 48]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

from dlc_runtime import Backend

HERE = Path(__file__).resolve().parent


class CountingBackend(Backend):
    """Wraps a backend and counts the frames it is given (read by the sampler thread)."""

    def __init__(self, inner: Backend) -> None:
        self.inner, self.name, self.frames = inner, inner.name, 0

    def run(self, images):
        self.frames += len(images)
        return self.inner.run(images)


class RssSampler:
    """Samples ``(seconds, frames, VmRSS MiB)`` every ``interval`` seconds in a thread."""

    def __init__(self, frames, interval: float) -> None:
        self.frames, self.interval = frames, interval
        self.samples: list[dict] = []
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def _read(self) -> None:
        from dlc_runtime.benchmark.memory import current_rss_mb

        self.samples.append({"seconds": round(time.monotonic() - self._t0, 2),
                             "frames": self.frames(), "rss_mib": current_rss_mb()})

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._read()

    def __enter__(self) -> RssSampler:
        self._read()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._read()


def summarize(samples: list[dict], total: int) -> dict:
    """Memory at the first tenth of the frames and at the end of the inference, and the
    growth between them per 100,000 frames."""
    analyzing = [s for s in samples if 0 < s["frames"] < total]
    early = next((s for s in analyzing if s["frames"] >= total // 10), None)
    late = analyzing[-1] if analyzing else None
    if early is None or late is None or late["frames"] <= early["frames"]:
        return {}
    growth = late["rss_mib"] - early["rss_mib"]
    return {"rss_at_10pct_mib": early["rss_mib"], "frames_at_10pct": early["frames"],
            "rss_at_end_of_inference_mib": late["rss_mib"], "frames_at_end": late["frames"],
            "growth_mib": round(growth, 1),
            "growth_mib_per_100k_frames": round(growth / (late["frames"] - early["frames"])
                                                * 100_000, 2),
            "max_sampled_rss_mib": max(s["rss_mib"] for s in samples)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--height", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--checkpoint-seconds", type=float, default=60.0)
    parser.add_argument("--name", default="long_run_cpu")
    args = parser.parse_args()

    from dlc_runtime import Bundle, analyze_video, make_backend  # noqa: F401 (timed imports)
    from dlc_runtime.benchmark.memory import current_rss_mb, peak_rss_mb
    from dlc_runtime.testing import make_test_video, make_toy_bundle

    after_imports = current_rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        t0 = time.monotonic()
        video = make_test_video(tmp_path / "long.mp4", n_frames=args.frames, width=args.width,
                                height=args.height, fps=30.0)
        video_seconds = time.monotonic() - t0
        bundle = Bundle.load(make_toy_bundle(tmp_path / "toy.bundle",
                                             batch=(1, args.batch_size, args.batch_size)))
        backend = CountingBackend(make_backend(bundle))
        after_load = current_rss_mb()
        with RssSampler(lambda: backend.frames, args.interval) as sampler:
            t0 = time.monotonic()
            result = analyze_video(bundle, video, tmp_path / "out", batch_size=args.batch_size,
                                   backend=backend, progress=False,
                                   checkpoint_seconds=args.checkpoint_seconds)
            wall = time.monotonic() - t0
    summary = summarize(sampler.samples, args.frames)
    out = {
        "what": "resident memory against frames over one analyze_video run (toy bundle, "
                "onnxruntime CPU, OpenCV decoding, checkpoints, .h5 from the checkpoint rows)",
        "config": {"frames": args.frames, "size": f"{args.width}x{args.height}",
                   "batch_size": args.batch_size, "sample_interval_s": args.interval,
                   "checkpoint_seconds": args.checkpoint_seconds},
        "rows_written": result.n_frames,
        "video_write_seconds": round(video_seconds, 1),
        "analysis_seconds": round(wall, 1),
        "inference_frames_per_second": round(result.fps, 1),
        "rss_after_imports_mib": after_imports,
        "rss_after_model_load_mib": after_load,
        "peak_rss_mib": peak_rss_mb(),
        **summary,
        "samples": sampler.samples,
    }
    sys.path.insert(0, str(HERE))
    from machine import save_result

    path = save_result(args.name, out)
    printable = {k: v for k, v in out.items() if k != "samples"}
    for key, value in printable.items():
        print(f"{key}: {value}")
    print(f"-> {path}")


if __name__ == "__main__":
    main()
