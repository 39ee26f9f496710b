"""Export of a trained model in each format: wall time and the parity every bundle reports.

Exports the snapshot ``dlc demo`` trained (resnet_tiny on the synthetic project, so its heatmaps
have real peaks) as ONNX, with fp32 and fp16 torch artifacts, with the fp16 ONNX graph, at the frame's own size and with a
letterboxed network size, and records each artifact's parity report (PyTorch vs the artifact on
the project's labeled frames: median / max keypoint error in pixels, likelihood error; for
reduced precision also the max over the keypoints detected at the project's pcutoff, which the
gate applies to) and how long the export took. The baseline is the ONNX-only export of the same snapshot in the same run.

``--multi-animal EPOCHS`` also trains a 2-animal PAF resnet_tiny on a synthetic project (the
demo's training settings) and exports it as ONNX and with fp16 torch and ONNX artifacts, whose parity is
measured after the PAF assembly on the host.

    dlc demo                                   # makes dlc-demo/ with a trained shuffle
    python benchmarks/bench_export.py --demo-dir dlc-demo [--multi-animal 40]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from dlc_export import export_from_project
from machine import save_result

MULTI_ANIMAL_CASES = {"onnx": {}, "onnx + torch fp16": {"torch_precisions": ("fp16",)},
                      "onnx + onnx fp16": {"onnx_precisions": ("fp16",)}}

CASES = {
    "onnx": {},
    "onnx + torch fp32": {"torch_precisions": ("fp32",)},
    "onnx + torch fp16": {"torch_precisions": ("fp16",)},
    "onnx + onnx fp16": {"onnx_precisions": ("fp16",)},
    "onnx + torch fp16, letterbox 128x128": {"torch_precisions": ("fp16",),
                                             "input_size": (128, 128)},
}


def parity_reports(bundle_dir: Path) -> dict[str, dict]:
    """Every parity report of a bundle, by file name, reduced to its figures."""
    keys = ("backend", "frames", "source", "median_px", "max_px", "p99_px",
            "max_likelihood_abs", "tolerance_px", "min_likelihood", "gated_max_px", "passed")
    return {path.name: {k: json.loads(path.read_text()).get(k) for k in keys}
            for path in sorted(bundle_dir.glob("parity*.json"))}


def export_cases(config: Path, cases: dict[str, dict], folder: Path) -> dict:
    """Exports shuffle 1 of ``config`` once per case; wall time and parity reports."""
    results = {}
    for name, options in cases.items():
        start = time.perf_counter()
        exported = export_from_project(config, shuffle=1,
                                       output=folder / f"{len(results)}.bundle",
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
    return results


def train_multi_animal(folder: Path, epochs: int) -> tuple[Path, float]:
    """A 2-animal synthetic project and a PAF resnet_tiny trained on it (demo settings)."""
    from dlc_cli.demo import demo_training_overrides
    from dlc_train.apis import train_network
    from dlc_train.synthetic import SyntheticSpec, generate_project

    project = generate_project(folder / "project", SyntheticSpec(num_animals=2, seed=0))
    start = time.perf_counter()
    train_network(project.config_path, shuffle=1, net_type="resnet_tiny", epochs=epochs,
                  pytorch_config_overrides=demo_training_overrides(epochs), progress=False)
    return project.config_path, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-dir", type=Path, default=Path("dlc-demo"))
    parser.add_argument("--name", default="export_cpu")
    parser.add_argument("--multi-animal", type=int, default=0, metavar="EPOCHS",
                        help="also train and export a 2-animal PAF model for EPOCHS epochs")
    args = parser.parse_args()
    # The project config.yaml (the shallowest; shuffles hold pytorch_config.yaml files).
    configs = sorted(args.demo_dir.rglob("config.yaml"), key=lambda p: len(p.parts))
    if not configs:
        raise SystemExit(f"no project config.yaml under {args.demo_dir}: run `dlc demo` first")
    result: dict = {"project": str(configs[0].parent)}
    with tempfile.TemporaryDirectory() as tmp:
        result["cases"] = export_cases(configs[0], CASES, Path(tmp))
        if args.multi_animal:
            config, seconds = train_multi_animal(Path(tmp) / "ma", args.multi_animal)
            print(f"trained a 2-animal PAF resnet_tiny for {args.multi_animal} epochs "
                  f"({seconds:.0f} s)")
            result["multi_animal"] = {
                "model": "resnet_tiny PAF, 2 animals", "epochs": args.multi_animal,
                "train_seconds": round(seconds, 1),
                "cases": export_cases(config, MULTI_ANIMAL_CASES, Path(tmp) / "bundles")}
    out = save_result(args.name, result)
    print(f"saved {out}")


if __name__ == "__main__":
    main()
