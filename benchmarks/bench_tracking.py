"""Tracking cost per frame: box, ellipse and skeleton trackers vs the number of animals.

Synthetic animals (12 keypoints, 10% missing) walk with momentum, spaced so that they stay
apart; each tracker runs frame by frame into a ``Tracklets`` store, as in a streamed analysis.

    python benchmarks/bench_tracking.py
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from dlc_runtime.tracking import Tracklets, make_tracker
from machine import save_result


def walk(n_frames: int, n_animals: int, n_keypoints: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    velocity = np.cumsum(rng.normal(0, 0.3, (n_frames, n_animals, 2)), axis=0)
    start = 100 * np.stack(np.divmod(np.arange(n_animals), 5), axis=1)[:, ::-1] + 100
    centres = start + np.cumsum(np.clip(velocity, -3, 3), axis=0)
    shape = rng.normal(0, 12, (n_animals, n_keypoints, 2))
    xy = centres[:, :, None] + shape + rng.normal(0, 1, (n_frames, n_animals, n_keypoints, 2))
    poses = np.concatenate([xy, rng.uniform(0.5, 1, xy.shape[:-1] + (1,))], axis=-1)
    poses[rng.random(poses.shape[:3]) < 0.1, :2] = np.nan
    return poses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--keypoints", type=int, default=12)
    args = parser.parse_args()
    results = []
    for n in (1, 5, 10, 20):
        poses = walk(args.frames, n, args.keypoints)
        for method in ("box", "ellipse", "skeleton"):
            trk = make_tracker(method, max_age=5, min_hits=1, tracklets=Tracklets())
            trk.track_batch(poses[:20])  # warm-up: imports, first allocations
            start = time.perf_counter()
            ids = trk.track_batch(poses[20:])
            per_frame = (time.perf_counter() - start) / (args.frames - 20)
            n_ids = len(set(ids.ravel()) - {-1})
            results.append({"tracker": method, "animals": n, "ms_per_frame": round(1e3 * per_frame, 4),
                            "track_ids": n_ids})
            print(f"{method:9s} {n:3d} animals: {1e3 * per_frame:7.3f} ms/frame  ({n_ids} ids)")
    path = save_result("tracking_cpu", {"frames": args.frames, "keypoints": args.keypoints,
                                        "results": results})
    print(f"saved {path}")


if __name__ == "__main__":
    main()
