"""Conditional top-down (CTD, "BUCTD") models: a nested bottom-up bundle gives the conditions,
a ``pose`` graph (frames + conditions -> keypoints; ``ctd_graph.py``) refines them.

The bundle nests a complete bottom-up bundle in ``conditions/``, written by the same pipeline
with the same formats and checks (its own ``parity*.json``); every format lists the nested
artifacts under the ``conditions`` graph, so the runtime opens either graph of any kind by name.
The pose graph is checked against DeepLabCut's eager CTD steps on synthetic conditions.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dlc_export.config_view import read_pose_config
from dlc_export.errors import ExportError
from dlc_export.options import ExportOptions
from dlc_export.parity import ParityReport
from dlc_export.source import ExportSource
from dlc_export.tasks.base import (FRAMES, ArtifactFormat, ExportContext, ExportGraph, ExportTask,
                                   TaskManifest, keypoint_report)
from dlc_export.tasks.ctd_conditions import find_conditions_model
from dlc_export.tasks.ctd_graph import (CondTopDownPose, ctd_crop_settings, eager_ctd,
                                        parity_conditions)
from dlc_runtime.bundle import Manifest, TensorSpec, sha256_file
from dlc_runtime.pipelines.ctd import MIN_CONDITION_SCORE
from dlc_train.models.loading import build_model_from_snapshot
from dlc_train.task import Task

if TYPE_CHECKING:
    from dlc_runtime.backends import Backend

#: Folder of the nested bottom-up bundle inside a CTD bundle.
CONDITIONS_DIR = "conditions"
POSE_REFERENCE = ("DeepLabCut CTD steps on the CPU (box from conditions, top_down_crop with "
                  "float resize, conditions to crop pixels) -> PyTorch model -> map back; "
                  "synthetic conditions")


class CondTopDownTask(ExportTask):
    def __init__(self, pose: CondTopDownPose, k: int, m: int, frames: np.ndarray,
                 fields: TaskManifest, conditions_model: tuple[Path, Path]):
        self.pose, self.k, self.m = pose, k, m
        self.manifest_fields, self.conditions_model = fields, conditions_model
        self.nested: Manifest | None = None
        self.graphs = {"pose": ExportGraph(
            "pose", pose, [FRAMES, TensorSpec("conditions", "float32", ["batch", m, k, 3])],
            [TensorSpec("keypoints", "float32", ["batch", m, k, 3])],
            (frames[:2], parity_conditions(frames[:2], m, k)),
            what="the conditional top-down pose graph")}

    def prepare(self, ctx: ExportContext) -> None:
        """Writes the conditions bundle with the same formats; both graphs' engines are built
        for one frame size, so the nested export gets it explicitly."""
        config, snapshot = self.conditions_model
        engine_size = self.engine_frame_size(ctx) if ctx.options.tensorrt_precision else None
        nested = ctx.export_nested(config, snapshot, ctx.staging / CONDITIONS_DIR,
                                   ctx.options.for_nested(
                                       frames=ctx.source.frames, frame_size=engine_size,
                                       conditions_config=None, conditions_snapshot=None))
        if nested.manifest.task != Task.BOTTOM_UP.snake_name:
            raise ExportError(f"{config}: the conditions bundle is '{nested.manifest.task}', "
                              "expected bottom_up")
        self.nested = nested.manifest

    def link(self, ctx: ExportContext, fmt: ArtifactFormat) -> None:
        fmt.link(ctx, self.nested, CONDITIONS_DIR, "conditions")

    def check(self, ctx: ExportContext, fmt: ArtifactFormat, backends: dict[str, Backend],
              frame_sets: list[np.ndarray]) -> ParityReport:
        ref, got = [], []
        for seed, frames in enumerate(frame_sets):
            conditions = parity_conditions(frames, self.m, self.k, seed=seed)
            for start in range(0, len(frames), 2):
                f, c = frames[start:start + 2], conditions[start:start + 2]
                ref.append(eager_ctd(self.pose.pose, f, c, self.pose.settings))
                got.append(backends["pose"].run(f, conditions=c)["keypoints"])
        report = keypoint_report(ctx, fmt, ref, got, frame_sets)
        report.details = {"pose_reference": POSE_REFERENCE,
                          "conditions_parity": f"{CONDITIONS_DIR}/{fmt.report_file}"}
        return report

    def calibration_inputs(self, ctx: ExportContext, frames: np.ndarray
                           ) -> dict[str, dict[str, np.ndarray]]:
        """The pose engine calibrates on what the runtime would hand it: the nested bundle's
        keypoints on the calibration frames, selected by DeepLabCut's rules."""
        from dlc_runtime.backends import make_backend
        from dlc_runtime.bundle import Bundle
        from dlc_runtime.pipelines import make_pipeline
        from dlc_runtime.pipelines.ctd import select_conditions

        decoder = ctx.manifest.decoder
        nested = Bundle.load(ctx.staging / CONDITIONS_DIR)
        chosen = []
        with make_backend(nested, "onnxruntime", "cpu") as backend:
            pipeline = make_pipeline(nested, backend)
            for start in range(0, len(frames), 8):
                batch = frames[start:start + 8]
                chosen.append(select_conditions(
                    pipeline(batch).keypoints, self.m, batch.shape[1:3],
                    float(decoder["bbox_margin"]), float(decoder["min_condition_score"]))[0])
        return {"pose": {"conditions": np.concatenate(chosen)}}


def make_task(source: ExportSource, options: ExportOptions) -> CondTopDownTask:
    config = source.config
    config.require_bodyparts()
    if config.unique_bodyparts:
        raise ExportError(f"{config.where}: CTD models do not predict unique bodyparts")
    asked = list(config.inference.unsupported)
    if not config.inference.normalize_images:
        asked.append("normalize_images: false")
    if asked:
        raise ExportError(f"{config.where}: data.inference sets {asked}, which the CTD pose "
                          "graph does not reproduce (it normalizes crops and applies "
                          "auto_padding)")
    if options.conditions_config is not None:
        conditions_model = Path(options.conditions_config), Path(options.conditions_snapshot)
    else:
        conditions_model = find_conditions_model(config)
    for path in conditions_model:
        if not path.is_file():
            raise ExportError(f"conditions model file {path} does not exist")
    conditions_config = read_pose_config(conditions_model[0])
    if conditions_config.task != Task.BOTTOM_UP:
        raise ExportError(f"{conditions_model[0]}: conditions must come from a bottom-up model "
                          f"(as in DeepLabCut), got method {conditions_config.raw.get('method')!r}")
    if conditions_config.bodyparts != config.bodyparts:
        raise ExportError(f"{conditions_model[0]}: the conditions model's bodyparts "
                          f"{conditions_config.bodyparts} differ from the CTD model's "
                          f"{config.bodyparts}")
    crop = ctd_crop_settings(config)
    pose = CondTopDownPose(build_model_from_snapshot(config.raw, source.snapshot), crop,
                           config.inference.pad_divisors).eval()
    individuals = config.individuals or ["individual_1"]
    m = int(options.max_individuals or len(individuals))
    fields = TaskManifest(
        task=Task.COND_TOP_DOWN.snake_name, individuals=individuals, multi_animal=True,
        decoder={"type": "cond_top_down", "conditions_bundle": CONDITIONS_DIR,
                 "crop": {"width": crop.width, "height": crop.height,
                          "margin": crop.crop_margin, "crop_with_context": crop.with_context},
                 "bbox_margin": crop.bbox_margin, "max_individuals": m,
                 "min_condition_score": MIN_CONDITION_SCORE,
                 "pose_predictor": dict(config.predictor)},
        source={"conditions_config": str(conditions_model[0].resolve()),
                "conditions_snapshot": str(conditions_model[1].resolve()),
                "conditions_snapshot_sha256": sha256_file(conditions_model[1])})
    return CondTopDownTask(pose, len(config.bodyparts), m, source.frames, fields,
                           conditions_model)
