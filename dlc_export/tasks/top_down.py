"""Top-down models: a ``detector`` graph (frames -> boxes, scores) and a ``pose`` graph that
crops inside itself (frames + boxes -> keypoints in frame pixels; ``top_down_graph.py``).

Parity: the detector's boxes vs the eager detector (matched IoU), the pose graph's keypoints vs
DeepLabCut's CPU crop + the PyTorch model, on boxes inside the frame, across its corners, thin
and wide ones (``parity_boxes``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from dlc_export.errors import ExportError
from dlc_export.options import ExportOptions
from dlc_export.parity import ParityReport
from dlc_export.source import ExportSource, find_detector_snapshot
from dlc_export.tasks.base import (FRAMES, ArtifactFormat, ExportContext, ExportGraph, ExportTask,
                                   TaskManifest, keypoint_report)
from dlc_export.tasks.detector import (MIN_DETECTOR_IOU, DetectorGraph, build_detector,
                                       detector_iou, network_input)
from dlc_export.tasks.top_down_graph import TopDownPose, eager_top_down, parity_boxes
from dlc_runtime.bundle import TensorSpec, sha256_file
from dlc_train.models.loading import build_model_from_config, build_model_from_snapshot
from dlc_train.task import Task

if TYPE_CHECKING:
    from dlc_runtime.backends import Backend

POSE_REFERENCE = "DeepLabCut CPU crop (float resize) -> PyTorch model -> map back"


class TopDownTask(ExportTask):
    def __init__(self, detector: DetectorGraph, pose: TopDownPose, k: int, m: int,
                 frames: np.ndarray, fields: TaskManifest,
                 engine_size: tuple[int, int] | None):
        self.detector, self.pose, self.m = detector, pose, m
        self.manifest_fields, self.engine_size = fields, engine_size
        d = detector.max_detections
        boxes = parity_boxes(frames[:2], m)
        self.graphs = {
            "detector": ExportGraph(
                "detector", detector, [FRAMES],
                [TensorSpec("boxes", "float32", ["batch", d, 4]),
                 TensorSpec("scores", "float32", ["batch", d])],
                (frames[:2],), what="the detector graph", has_half=False),
            "pose": ExportGraph(
                "pose", pose, [FRAMES, TensorSpec("boxes", "float32", ["batch", m, 4])],
                [TensorSpec("keypoints", "float32", ["batch", m, k, 3])],
                (frames[:2], boxes), what="the top-down pose graph"),
        }

    def check(self, ctx: ExportContext, fmt: ArtifactFormat, backends: dict[str, Backend],
              frame_sets: list[np.ndarray]) -> ParityReport:
        min_iou = MIN_DETECTOR_IOU.get(fmt.precision, MIN_DETECTOR_IOU["fp32"])
        iou = min(detector_iou(self.detector, backends["detector"].run, frames)
                  for frames in frame_sets)
        crop = self.pose.crop
        ref, got = [], []
        for seed, frames in enumerate(frame_sets):
            boxes = parity_boxes(frames, self.m, seed=seed)
            for start in range(0, len(frames), 2):
                f, bx = frames[start:start + 2], boxes[start:start + 2]
                ref.append(eager_top_down(self.pose.pose, f, bx, crop.out_w, crop.out_h,
                                          crop.margin))
                got.append(backends["pose"].run(f, boxes=bx)["keypoints"])
        report = keypoint_report(ctx, fmt, ref, got, frame_sets)
        report.passed = report.passed and iou >= min_iou
        report.details = {"pose_reference": POSE_REFERENCE, "detector_min_matched_iou": iou,
                          "detector_min_iou_required": min_iou}
        report.note = f"detector matched IoU {iou:.4f} (required {min_iou})"
        return report

    def calibration_inputs(self, ctx: ExportContext, frames: np.ndarray
                           ) -> dict[str, dict[str, np.ndarray]]:
        """The pose engine calibrates on the boxes the bundle's own detector finds in the
        calibration frames, top M as the runtime picks them: the crops it will see."""
        from dlc_runtime.backends import make_backend
        from dlc_runtime.pipelines.top_down import select_boxes

        threshold = float(ctx.manifest.decoder["box_score_threshold"])
        chosen = []
        with make_backend(ctx.bundle(), "onnxruntime", "cpu", graph="detector") as detector:
            for start in range(0, len(frames), 8):
                found = detector.run(frames[start:start + 8])
                chosen.append(select_boxes(found["boxes"], found["scores"], self.m,
                                           threshold)[0])
        return {"pose": {"boxes": np.concatenate(chosen)}}

    def engine_frame_size(self, ctx: ExportContext) -> tuple[int, int]:
        return self.engine_size or super().engine_frame_size(ctx)


def make_task(source: ExportSource, options: ExportOptions) -> TopDownTask:
    config = source.config
    config.require_bodyparts()
    if options.conditions_config or options.conditions_snapshot:
        raise ExportError(f"{config.where}: a conditions model is for conditional top-down "
                          "(method: ctd) models; this one is top_down")
    if config.detector_model is None:
        raise ExportError(f"{config.where}: no 'detector' section; a top-down config needs one "
                          "(DeepLabCut writes it for top-down shuffles)")
    crop = config.inference.crop
    if crop.with_context is False:
        raise ExportError(f"{config.where}: top_down_crop.crop_with_context: false is not "
                          "supported for top-down exports (only conditional top-down models "
                          "crop without context); set it to true or remove it")
    detector_snapshot = options.detector_snapshot or find_detector_snapshot(source.snapshot)
    if detector_snapshot is None and not options.random_detector:
        raise ExportError(f"no detector snapshot (snapshot-detector-XXX.pt) in "
                          f"{source.snapshot.parent}; train the detector, pass "
                          "detector_snapshot, or allow random detector weights for a dry run")
    detector = build_detector(config.raw, detector_snapshot, where=config.where)
    model = build_model_from_config(config.raw).eval() if options.random_pose \
        else build_model_from_snapshot(config.raw, source.snapshot)
    individuals = config.individuals or ["individual_1"]
    m = int(options.max_individuals or len(individuals))
    pose = TopDownPose(model, crop.width, crop.height, crop.margin,
                       config.inference.pad_divisors).eval()
    graph = DetectorGraph(detector, max_detections=max(options.max_detections, m),
                          normalize_images=config.detector_normalizes).eval()
    detector_input = network_input(graph)
    fields = TaskManifest(
        task=Task.TOP_DOWN.snake_name, individuals=individuals,
        multi_animal=len(individuals) > 1,
        decoder={"type": "top_down", "crop": {"width": crop.width, "height": crop.height},
                 "detector_input": detector_input, "crop_margin": crop.margin,
                 "max_individuals": m, "box_score_threshold": float(options.box_score_threshold),
                 "max_detections": graph.max_detections,
                 "pose_predictor": dict(config.predictor)},
        source={"detector_snapshot": str(detector_snapshot.resolve())
                if detector_snapshot else None,
                "detector_snapshot_sha256": sha256_file(detector_snapshot)
                if detector_snapshot else None,
                "detector_type": config.detector_model.get("type")})
    return TopDownTask(graph, pose, len(config.bodyparts), m, source.frames, fields,
                       _engine_size(config.where, options, (crop.width, crop.height),
                                    detector_input))


def _engine_size(where: str, options: ExportOptions, crop: tuple[int, int],
                 detector_input: dict) -> tuple[int, int] | None:
    """The TensorRT frame size: ``input_size`` means exactly that for top-down models."""
    if options.input_size is None:
        return tuple(options.frame_size) if options.frame_size else None
    if options.tensorrt_precision is None:
        raise ExportError(
            f"{where}: input_size (--input-size) does not apply to top-down models: their "
            f"networks already run at fixed sizes, the pose network at the {crop[0]}x{crop[1]} "
            f"crop (decoder.crop) and the detector at {detector_input['width']}x"
            f"{detector_input['height']} (decoder.detector_input, resize: "
            f"{detector_input['resize']}); with --format tensorrt it sets the engines' frame "
            "size")
    if options.frame_size is not None and tuple(options.frame_size) != \
            tuple(options.input_size):
        raise ExportError(f"{where}: input_size {tuple(options.input_size)} and frame_size "
                          f"{tuple(options.frame_size)} disagree; for top-down models both are "
                          "the TensorRT engines' frame size (height, width): pass one")
    return int(options.input_size[0]), int(options.input_size[1])
