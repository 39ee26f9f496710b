"""Runs `dlc demo --multi-animal` and records its tracking metrics, for one or more epoch counts.

    python benchmarks/bench_tracking_demo.py [--output dlc-demo-multi] [--epochs 30 60 90]

Each epoch count is a full demo run (generate, train, export, analyze with tracking, score);
the record lists every run with its wall time, so the effect of training length on identity
switches, IDF1 and MOTA is in one file: ``results/tracking_demo_<date>.json``.
"""
from __future__ import annotations

import argparse
import datetime
import time
from dataclasses import asdict
from pathlib import Path

from dlc_cli.demo_multi import MULTI_DEMO_EPOCHS, run_multi_animal_demo
from machine import save_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("dlc-demo-multi"))
    parser.add_argument("--epochs", type=int, nargs="+", default=[MULTI_DEMO_EPOCHS])
    parser.add_argument("--tracker", default="ellipse", choices=["ellipse", "box", "skeleton"])
    parser.add_argument("--name", default=f"tracking_demo_{datetime.date.today():%Y-%m-%d}")
    args = parser.parse_args()
    runs = []
    for epochs in args.epochs:
        start = time.perf_counter()
        result = run_multi_animal_demo(args.output / f"epochs{epochs}", epochs=epochs,
                                       tracker=args.tracker, overwrite=True)
        runs.append({"wall_seconds": round(time.perf_counter() - start, 1), **asdict(result)})
    path = save_result(args.name, {"default_epochs": MULTI_DEMO_EPOCHS, "runs": runs})
    print(f"recorded -> {path}")


if __name__ == "__main__":
    main()
