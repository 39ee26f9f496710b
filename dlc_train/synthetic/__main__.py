"""``python -m dlc_train.synthetic DEST [--seed N] ...``: generate a synthetic DeepLabCut project."""
from __future__ import annotations

import argparse
import time

from .project import generate_project
from .spec import VIDEO_MOTIONS, SyntheticSpec


def main(argv: list[str] | None = None) -> None:
    d = SyntheticSpec()
    ap = argparse.ArgumentParser(prog="python -m dlc_train.synthetic", description=__doc__)
    ap.add_argument("dest", help="parent folder of the project")
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--width", type=int, default=d.width)
    ap.add_argument("--height", type=int, default=d.height)
    ap.add_argument("--labeled-frames", type=int, default=d.num_labeled_frames)
    ap.add_argument("--video-frames", type=int, default=d.num_video_frames)
    ap.add_argument("--fps", type=int, default=d.fps)
    ap.add_argument("--animals", type=int, default=d.num_animals)
    ap.add_argument("--body-length", type=float, default=d.body_length)
    ap.add_argument("--video-motion", choices=VIDEO_MOTIONS, default=d.video_motion)
    a = ap.parse_args(argv)
    spec = SyntheticSpec(seed=a.seed, width=a.width, height=a.height,
                         num_labeled_frames=a.labeled_frames, num_video_frames=a.video_frames,
                         fps=a.fps, num_animals=a.animals, body_length=a.body_length,
                         video_motion=a.video_motion)
    t0 = time.perf_counter()
    paths = generate_project(a.dest, spec)
    print(f"project {paths.project_dir} ({time.perf_counter() - t0:.1f} s)")
    print(f"config  {paths.config_path}\nvideo   {paths.video_path}\n"
          f"truth   {paths.ground_truth_path}")


if __name__ == "__main__":
    main()
