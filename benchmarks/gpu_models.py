"""Bundles for the GPU check: random-weight models of the sizes the targets name, exported with
ONNX and torch artifacts (speed does not depend on the weights; parity is checked anyway).

    python benchmarks/gpu_models.py --out OUT/bundles --device cuda
    python benchmarks/gpu_models.py --out /tmp/b --device cpu --dry-run   # tiny stand-ins

Models (issue 10): resnet_50, hrnet_w32 and cspnext_m bottom-up, and a top-down resnet_50 with
1 and 10 animals per frame (``max_individuals``). ``--dry-run`` swaps each for its smallest
sibling so the whole script runs on a CPU in a minute.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers.shuffles import write_shuffle  # noqa: E402  (one shuffle builder)

from dlc_export import export_bundle  # noqa: E402

SINGLE = {"bodyparts": [f"kp{i}" for i in range(12)], "multianimalproject": False}
TOP_DOWN = {"multianimalproject": True, "multianimalbodyparts": [f"kp{i}" for i in range(12)],
            "individuals": [f"animal{i}" for i in range(10)], "uniquebodyparts": []}

#: name -> (net type, project, max individuals); dry-run net types in DRY_RUN.
MODELS = {
    "resnet_50": ("resnet_50", SINGLE, None),
    "hrnet_w32": ("hrnet_w32", SINGLE, None),
    "cspnext_m": ("cspnext_m", SINGLE, None),
    "top_down_resnet_50_1animal": ("top_down_resnet_50", TOP_DOWN, 1),
    "top_down_resnet_50_10animals": ("top_down_resnet_50", TOP_DOWN, 10),
}
DRY_RUN = {"resnet_50": "resnet_tiny", "hrnet_w32": "hrnet_w18", "cspnext_m": "cspnext_s",
           "top_down_resnet_50": "top_down_resnet_tiny"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--frame-size", default="480x640", metavar="HxW")
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args()
    height, width = (int(v) for v in args.frame_size.split("x"))
    frames = np.random.default_rng(0).integers(0, 256, (4, height, width, 3), dtype=np.uint8)
    # bf16 on the CPU too: the dry run exercises the same precisions the device benchmarks.
    precisions = ("fp32", "fp16", "bf16") if args.device != "cpu" else ("fp32", "bf16")
    for name, (net_type, project, m) in MODELS.items():
        net_type = DRY_RUN.get(net_type, net_type) if args.dry_run else net_type
        shuffle = write_shuffle(args.out / "shuffles" / name, project, net_type)
        options = {"max_individuals": m, "random_detector": True} if m else {}
        result = export_bundle(shuffle.config_path, shuffle.snapshot,
                               args.out / f"{name}.bundle", frames=frames, simplify=False,
                               torch_precisions=precisions, device=args.device,
                               allow_parity_failure=True, overwrite=True, **options)
        print(f"{name} ({net_type}): {result.parity.summary()}", flush=True)
    torch.cuda.empty_cache() if torch.cuda.is_available() else None


if __name__ == "__main__":
    main()
