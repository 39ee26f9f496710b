"""Pre-fetching published weights on a machine with network (then copy the caches offline).

    python -m dlc_train.models.pretrained list
    python -m dlc_train.models.pretrained fetch resnet50_gn hrnet_w32 cspnext_s \\
        fasterrcnn_resnet50_fpn_v2 superanimal_topviewmouse_hrnet_w32

``fetch`` prints each file's cached path; a failure prints one ``Error:`` line and exits 1.
"""
from __future__ import annotations

import argparse
import sys

from dlc_train.models.pretrained.hub import (PretrainedWeightsError, WeightsFile, fetch,
                                             hf_cache_dir, torch_hub_checkpoints_dir)
from dlc_train.models.pretrained.sources import (CSPNEXT_NAMES, DETECTOR_COCO, cspnext_source,
                                                 detector_source, published_weights,
                                                 timm_source)
from dlc_train.models.pretrained.superanimal import (SUPERANIMAL_FILES, superanimal_names,
                                                     superanimal_source)


def source_for(name: str) -> WeightsFile:
    """The published file of any name: a backbone, a detector variant or a SuperAnimal model."""
    if name.startswith(tuple(SUPERANIMAL_FILES)):
        return superanimal_source(name)
    if name in DETECTOR_COCO:
        return detector_source(name)
    if name in CSPNEXT_NAMES:
        return cspnext_source(name)
    return timm_source(name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dlc_train.models.pretrained")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="every known name and where its file is published")
    fetch_parser = sub.add_parser("fetch", help="download into the caches (or find there)")
    fetch_parser.add_argument("names", nargs="+")
    args = parser.parse_args(argv)
    if args.command == "list":
        table = {**published_weights(),
                 **{name: source_for(name).describe() for name in superanimal_names()}}
        for name, where in table.items():
            print(f"{name}\t{where}")
        print(f"# caches: {hf_cache_dir()} and {torch_hub_checkpoints_dir()}")
        return 0
    try:
        for name in args.names:
            print(f"{name}\t{fetch(source_for(name))}")
    except PretrainedWeightsError as err:
        print(f"Error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
