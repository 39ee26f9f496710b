"""Where analysis memory goes on the CPU: resident memory of ONNX Runtime's pose graph after
loading and across batches, with and without its CPU arena.

Builds a random-weight bundle (``--net-type``, default resnet_50) at 640x480 and a synthetic
video, then in a fresh process per setting runs ``--batches`` batches of 8 and records the
resident memory after the session is made, after each batch, the peak, and frames/s (the first
batch not timed). Settings: the backend's default (arena on, memory patterns off),
``cpu_arena=False`` (arena off, memory patterns on), and onnxruntime's own default (both on),
the baseline.

    python benchmarks/bench_memory.py [--net-type resnet_50]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers.shuffles import write_shuffle  # noqa: E402

from machine import save_result  # noqa: E402

SETTINGS = ("default", "no_arena", "with_mem_pattern")


def _rss_mib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) // 1024
    return -1


def measure(bundle: str, video: str, setting: str, batches: int) -> dict:
    """One setting, in this process (run by ``main`` in a fresh one each)."""
    import onnxruntime as ort

    from dlc_runtime import Bundle, make_backend
    from dlc_runtime.video import VideoIterator

    if setting == "with_mem_pattern":  # what onnxruntime does unless told otherwise
        original = ort.SessionOptions

        class WithPattern(original):
            def __setattr__(self, name, value):
                super().__setattr__(name, True if name == "enable_mem_pattern" else value)

        import dlc_runtime.backends.onnxruntime_backend as backend_module
        backend_module.ort.SessionOptions = WithPattern
    loaded = Bundle.load(bundle)
    before = _rss_mib()
    options = {"cpu_arena": False} if setting == "no_arena" else {}
    rss, start = [], None
    with make_backend(loaded, "onnxruntime", "cpu", **options) as engine, \
            VideoIterator(video, batch_size=8) as frames:
        after_session = _rss_mib()
        for i, (_, batch) in enumerate(frames):
            if i == 1:
                start = time.perf_counter()
            engine.run(batch)
            rss.append(_rss_mib())
            if i + 1 == batches:
                break
    fps = 8 * (batches - 1) / (time.perf_counter() - start)
    return {"setting": setting, "rss_before_session_mib": before,
            "rss_after_session_mib": after_session, "rss_after_each_batch_mib": rss,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
            "fps": round(fps, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net-type", default="resnet_50")
    parser.add_argument("--batches", type=int, default=7)
    parser.add_argument("--measure", nargs=3, metavar=("BUNDLE", "VIDEO", "SETTING"))
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure, batches=args.batches)))
        return
    from dlc_export import export_bundle
    from dlc_runtime.benchmark import write_synthetic_video

    with tempfile.TemporaryDirectory() as tmp:
        shuffle = write_shuffle(Path(tmp) / "train", {
            "bodyparts": [f"kp{i}" for i in range(12)], "multianimalproject": False},
            args.net_type)
        frames = np.random.default_rng(0).integers(0, 256, (2, 480, 640, 3), dtype=np.uint8)
        bundle = export_bundle(shuffle.config_path, shuffle.snapshot, Path(tmp) / "b.bundle",
                               frames=frames, simplify=False).bundle_dir
        video = write_synthetic_video(Path(tmp) / "v.mp4", 8 * args.batches, 640, 480)
        rows = []
        for setting in SETTINGS:
            out = subprocess.run([sys.executable, __file__, "--batches", str(args.batches),
                                  "--measure", str(bundle), str(video), setting],
                                 capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(rows[-1])
    print(save_result("memory_cpu", {"net_type": args.net_type, "frame_size": [480, 640],
                                     "batch_size": 8, "rows": rows}))


if __name__ == "__main__":
    main()
