"""The pose-estimation task a model solves (DeepLabCut 3's ``method`` key: bu / td / ctd)."""
from __future__ import annotations

from enum import Enum


class Task(str, Enum):
    BOTTOM_UP = "BU"
    TOP_DOWN = "TD"
    COND_TOP_DOWN = "CTD"
    DETECT = "DT"  # the detector of a top-down model (DeepLabCut's Task.DETECT)

    @property
    def aliases(self) -> tuple[str, ...]:
        return {"BU": ("bu", "bottom_up", "bottomup"),
                "TD": ("td", "top_down", "topdown"),
                "CTD": ("ctd", "cond_top_down", "conditional_top_down"),
                "DT": ("dt", "detect", "detector")}[self.value]

    @classmethod
    def from_str(cls, text: str) -> "Task":
        key = text.strip().lower()
        for task in cls:
            if key == task.value.lower() or key in task.aliases:
                return task
        raise ValueError(f"unknown task {text!r}: expected one of bu, td, ctd, dt")

    @property
    def snake_name(self) -> str:
        """The name used in bundle manifests: bottom_up / top_down / cond_top_down."""
        return self.aliases[1]
