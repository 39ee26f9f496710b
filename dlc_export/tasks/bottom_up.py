"""Bottom-up models: one ``pose`` graph, frames in, the predictor's outputs out (decoding in
the graph). Parity compares keypoints after the runtime pipeline's own host steps (PAF
assembly, identity, padding), so the check covers what ``analyze_video`` writes."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np

from dlc_export.config_view import PoseConfigView
from dlc_export.errors import ExportError
from dlc_export.options import ExportOptions
from dlc_export.parity import ParityReport, run_parity
from dlc_export.source import ExportSource
from dlc_export.tasks.dekr import build as build_dekr
from dlc_export.tasks.heatmap import build as build_heatmap
from dlc_export.tasks.paf import build as build_paf
from dlc_export.tasks.base import (FRAMES, ArtifactFormat, ExportContext, ExportGraph, ExportTask,
                                   TaskManifest)
from dlc_export.tasks.bottom_up_plan import BottomUpPlan
from dlc_export.wrappers import Letterbox
from dlc_runtime.pipelines import make_pipeline
from dlc_train.models.loading import build_model_from_snapshot
from dlc_train.models.model import PoseModel

if TYPE_CHECKING:
    from dlc_runtime.backends import Backend

#: bodypart predictor type -> plan builder.
PLANS: dict[str, Callable[[PoseConfigView, PoseModel], BottomUpPlan]] = {
    "HeatmapPredictor": build_heatmap,
    "PartAffinityFieldPredictor": build_paf,
    "DEKRPredictor": build_dekr,
}


def check_plan(config: PoseConfigView) -> None:
    """Refuses, before any model is built, a config no plan handles."""
    config.require_bodyparts()
    if config.predictor_type not in PLANS:
        raise ExportError(f"{config.where}: no export plan for a bottom-up model whose bodypart "
                          f"predictor is {config.predictor_type or 'missing'!r} (supported: "
                          f"{', '.join(sorted(PLANS))})")


def make_plan(config: PoseConfigView, model: PoseModel) -> BottomUpPlan:
    """The plan of a built bottom-up ``model`` for its config."""
    check_plan(config)
    return PLANS[config.predictor_type](config, model.eval())


class BottomUpTask(ExportTask):
    def __init__(self, plan: BottomUpPlan, frames: np.ndarray,
                 network_size: tuple[int, int] | None):
        self.plan = plan
        self.graphs = {"pose": ExportGraph("pose", plan.wrapper, [FRAMES], list(plan.outputs),
                                           (frames[:2],), what="the pose graph")}
        self.manifest_fields = TaskManifest(
            task="bottom_up", decoder=dict(plan.decoder), individuals=list(plan.individuals),
            unique_bodyparts=list(plan.unique_bodyparts), multi_animal=plan.multi_animal,
            network_size=network_size)

    def check(self, ctx: ExportContext, fmt: ArtifactFormat, backends: dict[str, Backend],
              frame_sets: list[np.ndarray]) -> ParityReport:
        backend = backends["pose"]
        pipeline = make_pipeline(ctx.bundle(), backend)

        def decode(outputs: dict[str, np.ndarray]) -> np.ndarray:
            n = len(next(iter(outputs.values())))
            result = pipeline.postprocess(outputs, n)
            parts = [result.keypoints.reshape(n, -1, 3)]
            if result.unique_keypoints is not None:
                parts.append(result.unique_keypoints.reshape(n, -1, 3))
            return np.concatenate(parts, axis=1)

        return run_parity(self.plan.wrapper, backend.run, frame_sets,
                          source=ctx.source.frames_source, backend=fmt.backend_label(ctx),
                          tolerance_px=ctx.gate(fmt.precision),
                          output_names=self.plan.output_names, decode=decode)


def make_task(source: ExportSource, options: ExportOptions) -> BottomUpTask:
    config = source.config
    if options.conditions_config or options.conditions_snapshot:
        raise ExportError(f"{config.where}: a conditions model is for conditional top-down "
                          f"(method: ctd) models; this one is {config.task.snake_name}")
    check_plan(config)
    plan = make_plan(config, build_model_from_snapshot(config.raw, source.snapshot))
    normalize = plan.wrapper.normalize
    normalize.pad_divisor = config.inference.pad_divisors
    if options.input_size is not None:
        height, width = (int(v) for v in options.input_size)
        hdiv, wdiv = normalize.pad_divisor
        if height % hdiv or width % wdiv:
            # auto_padding would pad past H x W: the network would not run at the asked size.
            raise ExportError(f"input size {height}x{width} must be a multiple of the model's "
                              f"auto_padding divisors {hdiv}x{wdiv} (height x width)")
        normalize.letterbox = Letterbox((height, width))
    return BottomUpTask(plan, source.frames,
                        tuple(options.input_size) if options.input_size else None)
