"""Runs `dlc demo` and records its figures (error vs ground truth, analysis speed, stage times).

    python benchmarks/bench_demo.py [--output dlc-demo] [--overwrite]
"""
from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from pathlib import Path

from dlc_cli.demo import run_demo
from machine import save_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("dlc-demo"))
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier demo in --output")
    parser.add_argument("--name", default="demo_cpu")
    args = parser.parse_args()
    start = time.perf_counter()
    result = run_demo(args.output, overwrite=args.overwrite)
    wall = time.perf_counter() - start
    path = save_result(args.name, {"wall_seconds": round(wall, 1), **asdict(result)})
    print(f"recorded -> {path}")


if __name__ == "__main__":
    main()
