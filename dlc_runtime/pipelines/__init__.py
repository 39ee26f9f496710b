"""Pipelines, one per bundle task (``bottom_up`` today; ``top_down`` is planned as one file)."""

from dlc_runtime.pipelines.base import PIPELINES, PoseResult, make_pipeline, register_pipeline
from dlc_runtime.pipelines.bottom_up import BottomUpPipeline

__all__ = ["PIPELINES", "PoseResult", "BottomUpPipeline", "make_pipeline", "register_pipeline"]
