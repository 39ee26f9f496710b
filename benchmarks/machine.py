"""Saving a benchmark result with the machine it ran on (``dlc_runtime.benchmark.machine``)."""
from __future__ import annotations

import json
from pathlib import Path

from dlc_runtime.benchmark.machine import machine_info


def save_result(name: str, result: dict) -> Path:
    out = Path(__file__).parent / "results" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine_info(), **result}, indent=2) + "\n")
    return out
