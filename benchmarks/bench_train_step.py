"""One training step per model family on the CPU: float32 NCHW (DeepLabCut's layout) vs float32
NHWC (channels_last, our CPU default) vs bfloat16 autocast NHWC (``runner.amp``), on real
openfield batches; the figures behind ``runners/precision.py``'s CPU default.

    python benchmarks/bench_train_step.py [--nets resnet_50,hrnet_w18,cspnext_s,...]
        [--crop 256] [--batch 4] [--steps 3] [--repeats 2]

Each family: DeepLabCut's pytorch_config for the openfield project (no pretrained weights),
``crop`` x ``crop`` crop sampling, ``batch`` images a step; the modes run interleaved
``repeats`` times on the same batches (one warm-up step each), and the best mean of each is
kept. Writes ``results/train_step_cpu.json`` with ratios to float32 NCHW.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench_train_openfield import OPENFIELD, copy_project
from machine import save_result

MODES = ("float32 NCHW", "float32 NHWC", "bfloat16 NHWC")


def _step_seconds(runner, batches, mode: str, steps: int) -> float:
    """Mean seconds of a training step in ``mode``, through the runner's own Precision."""
    import torch

    from dlc_train.runners.precision import Precision

    precision = Precision(dtype=torch.bfloat16 if mode.startswith("bfloat16") else None,
                          channels_last="NHWC" in mode, device_type="cpu")
    runner.model.to(memory_format=torch.contiguous_format)  # undo the previous mode's layout
    precision.model(runner.model)

    def step(batch):
        images = precision.images(batch["image"])
        with precision.autocast():
            losses = runner._losses(runner.model, images, batch["annotations"])
        runner.optimizer.zero_grad(set_to_none=True)
        losses["total_loss"].backward()
        runner.optimizer.step()

    runner.model.train()
    step(batches[0])  # warm-up: oneDNN picks its kernels for this layout
    start = time.perf_counter()
    for batch in batches[1:steps + 1]:
        step(batch)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", default="resnet_50,hrnet_w18,cspnext_s,dlcrnet_stride16_ms5,"
                        "resnet_101")
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-train-step"))
    args = parser.parse_args()
    if not OPENFIELD.is_dir():
        raise SystemExit(f"Error: {OPENFIELD} not found (the shared openfield project)")

    import torch

    from dlc_train.apis.train import read_or_make_pose_config
    from dlc_train.apis.train_loader import prepare_training
    from dlc_train.data.dataset import make_dataloaders
    from dlc_train.data.dlcloader import DLCLoader
    from dlc_train.runners.precision import cpu_has_bf16

    config = copy_project(args.work)
    results = {}
    for net in args.nets.split(","):
        loader = DLCLoader(config, shuffle=1)
        loader.pose_config_path.unlink(missing_ok=True)
        cfg, _ = read_or_make_pose_config(loader, net)
        cfg["model"]["backbone"]["pretrained"] = False
        cfg["train_settings"]["batch_size"] = args.batch
        cfg["data"]["train"]["crop_sampling"] = {"width": args.crop, "height": args.crop,
                                                 "max_shift": 0.1, "method": "hybrid"}
        run = prepare_training(loader, cfg, device="cpu", overwrite=True)
        runner = run.build()
        train, _ = make_dataloaders(run.train_set, None, run.cfg["train_settings"], 0)
        batches = [b for _, b in zip(range(args.steps + 1), train)]
        best = {mode: float("inf") for mode in MODES}
        for _ in range(args.repeats):
            for mode in MODES:
                best[mode] = min(best[mode], _step_seconds(runner, batches, mode, args.steps))
        base = best[MODES[0]]
        results[net] = {mode: {"ms_per_step": round(s * 1000, 1), "vs_nchw": round(s / base, 3)}
                        for mode, s in best.items()}
        print(net, {m: v["vs_nchw"] for m, v in results[net].items()}, flush=True)
    save_result("train_step_cpu", {
        "setup": {"crop": args.crop, "batch": args.batch, "steps": args.steps,
                  "repeats": args.repeats, "torch_threads": torch.get_num_threads(),
                  "cpu_has_bf16": cpu_has_bf16()},
        "families": results})


if __name__ == "__main__":
    main()
