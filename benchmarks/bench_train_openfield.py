"""Trains cspnext_s on the openfield project with DeepLabCut 3's recipe and records test RMSE and
training time: the comparison issue 13 asks for.

    python benchmarks/bench_train_openfield.py [--epochs 50] [--work /tmp/bench-openfield]
        [--set runner.amp=bfloat16] [--set runner.channels_last=false] [--name NAME]
        [--net-type resnet_50] [--batch-size 8]

``--net-type`` trains another family from scratch with DeepLabCut's config for it (the resnet_50
behind ``openvino_cpu_trained_resnet_50.json``: ``--net-type resnet_50 --epochs 30 --set
runner.amp=bfloat16 --set data.train.crop_sampling.width=320 --set
data.train.crop_sampling.height=320 --set runner.eval_interval=5 --set
runner.snapshots.save_epochs=5 --name train_openfield_resnet_50_bf16``).

The recipe is DeepLabCut's: its cspnext_s pytorch_config (no pretrained backbone, batch 8,
AdamW 5e-4, 448x448 crop sampling, evaluation every 10 epochs), TrainingFraction 0.95 on the
116 labeled frames (110 train / 6 test), CPU. DeepLabCut 3.0.2 with it, on a 2-core CPU:
9.90 px test RMSE at training time, 26.77 px by ``evaluate_network``, in 1,093 s. Our split is
seeded by the shuffle number (DeepLabCut's comes from numpy's global RNG), so the 6 test frames
are not DeepLabCut's 6: with 6 test images the RMSE of two splits differ by more than the
training does, which the record says next to the figures.

Writes ``results/train_openfield_cpu.json``: wall time of training (and per epoch), the test
and train RMSE the runner logged at each evaluation, and ``evaluate_network``'s figures for the
last snapshot.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import time
from pathlib import Path

import yaml

from machine import save_result

SHARED = Path(__file__).resolve().parents[2] / "shared"
OPENFIELD = SHARED / "data" / "openfield-Pranav-2018-10-30"
DLC_FIGURES = {"version": "3.0.2", "test_rmse_at_training_px": 9.90,
               "test_rmse_evaluate_network_px": 26.77, "train_seconds": 1093,
               "machine": "a 2-core CPU (the issue's measurement)"}


def copy_project(work: Path) -> Path:
    """A writable copy of openfield (no video) with TrainingFraction [0.95]; its config.yaml."""
    project = work / OPENFIELD.name
    if project.exists():
        shutil.rmtree(project)
    shutil.copytree(OPENFIELD, project, ignore=shutil.ignore_patterns("videos"))
    config = project / "config.yaml"
    cfg = yaml.safe_load(config.read_text())
    cfg["TrainingFraction"] = [0.95]
    cfg["project_path"] = str(project)
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return config


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _precision(overrides: dict) -> str:
    """What the runner trains in on this CPU with these overrides (runners/precision.py)."""
    import torch

    from dlc_train.runners.precision import precision_for

    p = precision_for(overrides.get("runner.amp"), overrides.get("runner.channels_last"),
                      torch.device("cpu"), announce=False)
    return f"{p.dtype or 'float32'}, {'NHWC' if p.channels_last else 'NCHW'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-openfield"))
    parser.add_argument("--name", default="train_openfield_cpu")
    parser.add_argument("--net-type", default="cspnext_s")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="default: the recipe's (8)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="pytorch_config override (runner.amp, "
                        "runner.channels_last: ours, not DeepLabCut's recipe)")
    args = parser.parse_args()
    overrides = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in args.overrides)}
    if not OPENFIELD.is_dir():
        raise SystemExit(f"Error: {OPENFIELD} not found (the shared openfield project)")

    import pandas as pd
    import torch

    from dlc_train.apis import evaluate_network, train_network
    from dlc_train.data.dlcloader import DLCLoader

    from dlc_train.apis.train import read_or_make_pose_config
    from dlc_train.config import write_config

    config = copy_project(args.work)
    loader = DLCLoader(config, shuffle=1)
    cfg, _ = read_or_make_pose_config(loader, args.net_type)
    cfg["model"]["backbone"]["pretrained"] = False  # from scratch, whatever the family
    loader.pose_config_path.parent.mkdir(parents=True, exist_ok=True)
    write_config(loader.pose_config_path, cfg)
    # CPU time and load too: on a shared machine, wall time alone says little.
    load_before, cpu_before = os.getloadavg(), _cpu_seconds()
    start = time.perf_counter()
    folder = train_network(config, shuffle=1, epochs=args.epochs, batch_size=args.batch_size,
                           device="cpu", progress=True, pytorch_config_overrides=overrides)
    train_seconds = time.perf_counter() - start
    train_cpu_seconds, load_after = _cpu_seconds() - cpu_before, os.getloadavg()
    stats = pd.read_csv(folder / "learning_stats.csv")
    # Rows of the epochs the runner evaluated (every eval_interval), whatever the file's naming.
    rmse_columns = [c for c in stats.columns if "rmse" in c]
    epoch_columns = [c for c in stats.columns if c.split("/")[-1] in ("epoch", "step")][:1]
    evaluations = stats.dropna(subset=rmse_columns, how="all")[epoch_columns + rmse_columns]

    start = time.perf_counter()
    result = evaluate_network(config, shuffles=[1], snapshotindex=-1, device="cpu",
                              show_errors=True)[0]
    eval_seconds = time.perf_counter() - start
    save_result(args.name, {
        "recipe": {"project": OPENFIELD.name, "net_type": args.net_type, "pretrained": False,
                   "epochs": args.epochs, "training_fraction": 0.95,
                   "train_images": len(loader.train_images),
                   "test_images": len(loader.test_images), "test_split": loader.test_images,
                   "torch_threads": torch.get_num_threads(), "overrides": overrides,
                   "precision": _precision(overrides)},
        "train_seconds": round(train_seconds, 1),
        "seconds_per_epoch": round(train_seconds / args.epochs, 2),
        "train_cpu_seconds": round(train_cpu_seconds, 1),
        "load_average_1_5_15": {"before": [round(x, 2) for x in load_before],
                                "after": [round(x, 2) for x in load_after]},
        "logged_evaluations": evaluations.round(3).to_dict(orient="records"),
        "evaluate_network": {"snapshot": result.snapshot.name, "seconds": round(eval_seconds, 1),
                             "metrics": result.metrics},
        "deeplabcut": DLC_FIGURES,
    })
    print(f"trained {args.epochs} epochs in {train_seconds:.0f} s; evaluate_network: "
          f"{result.metrics}")


if __name__ == "__main__":
    main()
