"""Pipelines, one per bundle task, or per task and decoder where the host steps differ (PAF)."""

from dlc_runtime.pipelines.base import PIPELINES, PoseResult, make_pipeline, register_pipeline
from dlc_runtime.pipelines.bottom_up import BottomUpPipeline
from dlc_runtime.pipelines.bottom_up_paf import BottomUpPafPipeline
from dlc_runtime.pipelines.ctd import CondTopDownPipeline  # noqa: F401  (cond_top_down)
from dlc_runtime.pipelines.top_down import TopDownPipeline  # noqa: F401  (registers top_down)

__all__ = ["PIPELINES", "PoseResult", "BottomUpPipeline", "BottomUpPafPipeline", "make_pipeline",
           "register_pipeline"]
