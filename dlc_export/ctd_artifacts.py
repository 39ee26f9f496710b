"""Torch artifacts and TensorRT engines of conditional top-down (CTD) bundles.

A CTD bundle runs two graphs, ``conditions`` (the nested bottom-up bundle's pose graph) and
``pose`` (frames + conditions), and every artifact kind covers both:

- The nested bundle is written by ``export_bundle``, which builds and parity-checks its own torch
  artifacts and engine like any bottom-up bundle's (its ``parity.torch_<p>.json``,
  ``parity.tensorrt_<p>.json``). The CTD manifest lists them for the ``conditions`` graph:
  ``conditions_torch_<p>`` -> ``conditions/pose.<p>.torchscript.pt``, and an ``engines`` entry
  with ``graph: conditions`` -> ``conditions/pose.engine``. The runtime therefore opens the
  conditions graph of either kind by name, as for any other graph.
- The CTD pose graph gets ``pose.<p>.torchscript.pt`` (graph ``pose_torch_<p>``, inputs
  ``images`` and ``conditions``) and ``pose.engine`` (profile with the conditions' shapes;
  int8 calibrates on the conditions the nested bundle finds in the calibration frames). Each is
  checked against DeepLabCut's eager CTD steps before it is added.
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path

import cv2
import numpy as np
import torch

from dlc_export.ctd import (
    CONDITIONS_DIR,
    CondTopDownPose,
    ctd_parity,
    parity_conditions,
    write_ctd_parity,
)
from dlc_export.onnx_export import ExportError
from dlc_export.parity import (
    DEFAULT_PCUTOFF,
    DEFAULT_TOLERANCE_PX,
    ParityGate,
    ParityReport,
    enforce,
)
from dlc_export.top_down import check_artifact_options, on_device, run_loaded, second_frames
from dlc_runtime.bundle import Bundle, GraphSpec, Manifest, TensorSpec, write_manifest

log = logging.getLogger(__name__)

#: The CTD pose graph's engine file.
POSE_ENGINE = "pose.engine"


# -- the nested conditions bundle's artifacts, listed in the CTD manifest ----------------------

def nested_torch_graphs(nested: Manifest) -> dict[str, GraphSpec]:
    """CTD manifest entries ``conditions_torch_<p>`` for the nested bundle's torch artifacts
    (``pose_torch_<p>``), with files relative to the CTD bundle."""
    from dlc_runtime.backends.torch_backend import TORCH_GRAPH_INFIX

    prefix = f"pose{TORCH_GRAPH_INFIX}"
    return {f"conditions{TORCH_GRAPH_INFIX}{name[len(prefix):]}": GraphSpec(
                file=f"{CONDITIONS_DIR}/{spec.file}", opset=spec.opset,
                inputs=[TensorSpec(t.name, t.dtype, list(t.shape)) for t in spec.inputs],
                outputs=[TensorSpec(t.name, t.dtype, list(t.shape)) for t in spec.outputs])
            for name, spec in nested.graphs.items() if name.startswith(prefix)}


def nested_engine_entries(nested: Manifest) -> list[dict]:
    """CTD manifest ``engines`` entries for the nested bundle's engines of its pose graph:
    the same fingerprint and hashes, the file relative to the CTD bundle, ``graph:
    conditions``."""
    return [{**entry, "file": f"{CONDITIONS_DIR}/{entry['file']}", "graph": "conditions"}
            for entry in nested.engines if entry.get("graph", "pose") == "pose"]


# -- torch artifacts ---------------------------------------------------------------------------

def add_ctd_torch_artifacts(bundle_dir: Path, wrapper: CondTopDownPose, frames: np.ndarray,
                            conditions: np.ndarray, precisions: tuple[str, ...], *,
                            device: str = "cpu",
                            tolerance_px: float = DEFAULT_TOLERANCE_PX,
                            pcutoff: float = DEFAULT_PCUTOFF,
                            allow_parity_failure: bool = False) -> None:
    """Adds checked TorchScript artifacts of the CTD pose graph to a (staged) CTD bundle, and
    lists the nested bundle's (already checked) ones for the ``conditions`` graph.

    Writes per precision ``pose.<p>.torchscript.pt`` (graph ``pose_torch_<p>``, frames +
    conditions in) and ``parity.torch_<p>.json``: the reloaded artifact vs DeepLabCut's eager
    steps on the parity frames and on another batch and frame size. fp16 is the pose network's
    precision; crops, condition keypoints and decoding stay fp32.
    """
    from dlc_export.torch_export import (
        HalfPrecisionNetwork,
        save_checked_artifact,
        torch_artifact_file,
    )
    from dlc_runtime.backends.torch_backend import torch_graph_name

    check_artifact_options(precisions, None)
    device_t = torch.device(device)
    bundle = Bundle.load(bundle_dir)
    nested = Bundle.load(bundle_dir / CONDITIONS_DIR).manifest
    listed = nested_torch_graphs(nested)
    missing = [p for p in precisions if torch_graph_name(p, "conditions") not in listed]
    if missing:
        raise ExportError(f"{bundle_dir / CONDITIONS_DIR}: the conditions bundle has no "
                          f"{missing} torch artifact; export it with the same precisions")
    bundle.manifest.graphs.update(listed)
    pose = bundle.graph("pose")
    for precision in precisions:
        module = on_device(wrapper, device_t)
        if precision == "fp16":
            # A copy whose CTD network runs in half (crops, condition keypoints and decoding
            # stay fp32); the caller's wrapper keeps its fp32 pose, the reference of the check.
            module = copy.deepcopy(module)
            module.pose.model = HalfPrecisionNetwork(module.pose.model)
        file = torch_artifact_file(precision)
        name = f"torch-torchscript-{precision}-{device_t.type}"
        example = (torch.from_numpy(frames[:2]).to(device_t),
                   torch.from_numpy(conditions[:2]).to(device_t))
        report = save_checked_artifact(
            module.eval(), example, bundle_dir / file,
            lambda loaded: _check_torch_ctd(
                loaded, device_t, wrapper, frames, conditions, name,
                ParityGate.for_precision(precision, tolerance_px, pcutoff),
                allow_parity_failure),
            device=device, max_batch=bundle.input.batch.max,
            what=f"of the CTD pose graph ({precision})")
        write_ctd_parity(bundle_dir / f"parity.torch_{precision}.json", report,
                         f"{CONDITIONS_DIR}/parity.torch_{precision}.json")
        bundle.manifest.graphs[torch_graph_name(precision)] = GraphSpec(
            file=file, opset=None,
            inputs=[TensorSpec(t.name, t.dtype, list(t.shape)) for t in pose.inputs],
            outputs=[TensorSpec(t.name, t.dtype, list(t.shape)) for t in pose.outputs])
        log.info("CTD torch artifact %s written (%s)", file, report.summary())
    write_manifest(bundle_dir, bundle.manifest)  # fills the new entries' sha256


def _check_torch_ctd(loaded, device: torch.device, wrapper: CondTopDownPose,
                     frames: np.ndarray, conditions: np.ndarray, name: str,
                     gate: ParityGate, allow_failure: bool = False) -> ParityReport:
    """The reloaded artifact vs DeepLabCut's steps + the fp32 model; raises above the gate."""
    second = second_frames(frames)
    cases = [(frames, conditions),
             (second, parity_conditions(second, conditions.shape[1], conditions.shape[2],
                                        seed=1))]
    report = ctd_parity(wrapper, lambda f, c: run_loaded(loaded, device, f, c)[0], cases,
                        "export parity frames and a smaller crop of them", name, gate)
    return enforce(report, allow_failure, "the torch artifact was not written")


# -- TensorRT ----------------------------------------------------------------------------------

def calibration_conditions(bundle_dir: Path, frames: np.ndarray) -> np.ndarray:
    """Conditions for INT8 calibration of the pose engine: what the runtime would hand it, i.e.
    the nested bundle's keypoints (onnxruntime) on the calibration frames, selected by
    DeepLabCut's rules, so the pose network is calibrated on the crops it will see."""
    from dlc_runtime.backends import make_backend
    from dlc_runtime.pipelines import make_pipeline
    from dlc_runtime.pipelines.ctd import MIN_CONDITION_SCORE, select_conditions

    decoder = Bundle.load(bundle_dir).manifest.decoder
    nested = Bundle.load(bundle_dir / CONDITIONS_DIR)
    chosen = []
    with make_backend(nested, "onnxruntime", "cpu") as backend:
        pipeline = make_pipeline(nested, backend)
        for start in range(0, len(frames), 8):
            batch = frames[start:start + 8]
            found = pipeline(batch).keypoints
            chosen.append(select_conditions(
                found, int(decoder["max_individuals"]), batch.shape[1:3],
                float(decoder.get("bbox_margin", 20)),
                float(decoder.get("min_condition_score", MIN_CONDITION_SCORE)))[0])
    return np.concatenate(chosen)


def add_ctd_engines(bundle_dir: Path, precision: str, frame_size: tuple[int, int],
                    calibration_videos: tuple[Path, ...] = ()) -> None:
    """Lists the nested bundle's engine for the ``conditions`` graph and builds the pose
    graph's ``pose.engine`` (frames + conditions profiles) for this machine's GPU."""
    from dlc_export.export import TIMING_CACHE
    from dlc_export.tensorrt_build import (
        TensorRTBuildError,
        add_engine_to_bundle,
        calibration_frames_from_videos,
        export_tensorrt,
    )

    nested = nested_engine_entries(Bundle.load(bundle_dir / CONDITIONS_DIR).manifest)
    if not nested:
        raise TensorRTBuildError(f"{bundle_dir / CONDITIONS_DIR}: the conditions bundle has no "
                                 "engine; export it with the same TensorRT precision")
    for entry in nested:
        add_engine_to_bundle(bundle_dir, entry)
    frames = calibration_frames_from_videos(calibration_videos) if precision == "int8" else None
    extra = None if frames is None \
        else {"conditions": calibration_conditions(bundle_dir, frames)}
    TIMING_CACHE.parent.mkdir(parents=True, exist_ok=True)
    entry = export_tensorrt(bundle_dir, precision=precision, frame_size=frame_size,
                            engine_name=POSE_ENGINE, graph="pose",
                            timing_cache_path=TIMING_CACHE, calibration_frames=frames,
                            calibration_inputs=extra)
    add_engine_to_bundle(bundle_dir, entry)


def check_ctd_engine(bundle_dir: Path, precision: str, wrapper: CondTopDownPose,
                     frames: np.ndarray, frame_size: tuple[int, int], source: str,
                     tolerance_px: float, pcutoff: float = DEFAULT_PCUTOFF) -> ParityReport:
    """The pose engine just built vs DeepLabCut's eager CTD steps, on the parity frames
    (resized to the engine's frame size when they differ: both sides see the same frames) and
    synthetic conditions; written to ``parity.tensorrt_<precision>.json``. The conditions
    engine was checked by the nested export (``conditions/parity.tensorrt_<precision>.json``).
    """
    from dlc_runtime.backends import make_backend

    height, width = (int(v) for v in frame_size)
    if tuple(frames.shape[1:3]) != (height, width):
        frames = np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA)
                           for f in frames])
    bundle = Bundle.load(bundle_dir)
    conditions = parity_conditions(frames, int(bundle.manifest.decoder["max_individuals"]),
                                   len(bundle.bodyparts))
    with make_backend(bundle, "tensorrt", device="cuda", graph="pose") as engine:
        report = ctd_parity(wrapper,
                            lambda f, c: engine.run(f, conditions=c)["keypoints"],
                            [(frames, conditions)], source, f"tensorrt-{precision}",
                            ParityGate.for_precision(precision, tolerance_px, pcutoff))
    write_ctd_parity(bundle_dir / f"parity.tensorrt_{precision}.json", report,
                     f"{CONDITIONS_DIR}/parity.tensorrt_{precision}.json")
    log.info("CTD TensorRT %s: %s", precision, report.summary())
    return report
