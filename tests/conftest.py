"""Shared test fixtures: where ../shared is, and skips when it is absent."""
from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DLC3 = SHARED / "dlc3"
OPENFIELD = SHARED / "data" / "openfield-Pranav-2018-10-30"


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared not checked out beside the project)")
    return path
