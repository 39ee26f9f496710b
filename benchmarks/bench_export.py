"""Export of a trained model in each format: wall time and the parity every bundle reports.

Exports the snapshot ``dlc demo`` trained (resnet_tiny on the synthetic project, so its heatmaps
have real peaks) as ONNX, with fp32 and fp16 torch artifacts, at the frame's own size and with a
letterboxed network size, and records each artifact's parity report (PyTorch vs the artifact on
the project's labeled frames: median / max keypoint error in pixels, likelihood error; for
reduced precision also the max over the keypoints detected at the project's pcutoff, which the
gate applies to) and how long the export took. The baseline is the ONNX-only export of the same snapshot in the same run.

    dlc demo                                   # makes dlc-demo/ with a trained shuffle
    python benchmarks/bench_export.py --demo-dir dlc-demo
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from dlc_export import export_from_project
from machine import save_result

CASES = {
    "onnx": {},
    "onnx + torch fp32": {"torch_precisions": ("fp32",)},
    "onnx + torch fp16": {"torch_precisions": ("fp16",)},
    "onnx + torch fp16, letterbox 128x128": {"torch_precisions": ("fp16",),
                                             "input_size": (128, 128)},
}


def parity_reports(bundle_dir: Path) -> dict[str, dict]:
    """Every parity report of a bundle, by file name, reduced to its figures."""
    keys = ("backend", "frames", "source", "median_px", "max_px", "p99_px",
            "max_likelihood_abs", "tolerance_px", "min_likelihood", "gated_max_px", "passed")
    return {path.name: {k: json.loads(path.read_text()).get(k) for k in keys}
            for path in sorted(bundle_dir.glob("parity*.json"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-dir", type=Path, default=Path("dlc-demo"))
    parser.add_argument("--name", default="export_cpu")
    args = parser.parse_args()
    # The project config.yaml (the shallowest; shuffles hold pytorch_config.yaml files).
    configs = sorted(args.demo_dir.rglob("config.yaml"), key=lambda p: len(p.parts))
    if not configs:
        raise SystemExit(f"no project config.yaml under {args.demo_dir}: run `dlc demo` first")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, options in CASES.items():
            start = time.perf_counter()
            exported = export_from_project(configs[0], shuffle=1,
                                           output=Path(tmp) / f"{len(results)}.bundle",
                                           simplify=True, **options)
            results[name] = {"seconds": round(time.perf_counter() - start, 2),
                             "parity": parity_reports(exported.bundle_dir)}
            print(f"{name}: {results[name]['seconds']} s")
            for file, report in results[name]["parity"].items():
                gated = "" if report["min_likelihood"] is None else (
                    f" (likelihood >= {report['min_likelihood']}: max "
                    f"{report['gated_max_px']:.4f} px)")
                print(f"  {file}: {report['backend']}, {report['frames']} frames: median "
                      f"{report['median_px']:.4f} px, max {report['max_px']:.4f} px{gated}, "
                      f"likelihood {report['max_likelihood_abs']:.1e}, gate "
                      f"{report['tolerance_px']} px, passed {report['passed']}")
    out = save_result(args.name, {"project": str(configs[0].parent), "cases": results})
    print(f"saved {out}")


if __name__ == "__main__":
    main()
