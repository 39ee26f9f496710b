"""Export plans: one small module per kind of model (see ``base.py``).

``make_plan`` picks the plan by the bodypart head's predictor type. Top-down models are not
planned here: ``dlc_export.export`` routes them to ``dlc_export.top_down``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from dlc_export.onnx_export import ExportError
from dlc_export.plans import dekr, heatmap, paf
from dlc_export.plans.base import ExportPlan
from dlc_train.models.model import PoseModel

PlanBuilder = Callable[[dict, PoseModel, Path], ExportPlan]

#: bodypart predictor type -> plan builder, for bottom-up models.
PLANS: dict[str, PlanBuilder] = {
    "HeatmapPredictor": heatmap.build,
    "PartAffinityFieldPredictor": paf.build,
    "DEKRPredictor": dekr.build,
}


def predictor_type(cfg: dict) -> str:
    return str(((cfg["model"]["heads"].get("bodypart") or {}).get("predictor") or {})
               .get("type", ""))


def check_plan(cfg: dict, where: Path) -> None:
    """Refuses, before any model is built, a bottom-up config no plan handles."""
    kind = predictor_type(cfg)
    if kind not in PLANS:
        raise ExportError(f"{where}: no export plan for a bottom-up model whose bodypart "
                          f"predictor is {kind or 'missing'!r} (supported: "
                          f"{', '.join(sorted(PLANS))})")


def make_plan(cfg: dict, model: PoseModel, where: Path) -> ExportPlan:
    """The export plan of a built bottom-up ``model`` (eval mode) for its config ``cfg``."""
    check_plan(cfg, where)
    return PLANS[predictor_type(cfg)](cfg, model.eval(), where)


__all__ = ["ExportPlan", "PLANS", "check_plan", "make_plan"]
