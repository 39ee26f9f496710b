"""snapshot + pytorch_config.yaml -> a self-contained bundle folder (see docs/bundle.md).

The bundle is assembled in a temporary sibling folder and renamed into place only once the graph
is written, checked and has passed parity, so a failed export never leaves a half bundle and never
replaces a good one.

What differs between kinds of models (wrapper, outputs, manifest decoder) is an export plan
(``dlc_export/plans/``), picked from the config; top-down configs go to ``dlc_export.top_down``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dlc_export.frames import frames_from_images, frames_from_project, frames_from_video
from dlc_export.onnx_export import DEFAULT_OPSET, ExportError, export_onnx
from dlc_export.parity import (
    DEFAULT_TOLERANCE_PX,
    ParityError,
    ParityGate,
    ParityReport,
    enforce,
    project_pcutoff,
    run_parity,
)
from dlc_export.plans import ExportPlan, check_plan, make_plan
from dlc_export.torch_export import add_torch_artifact
from dlc_export.wrappers import Letterbox, pad_divisor_from_config
from dlc_io import staged_folder
from dlc_runtime.backends import OnnxRuntimeBackend
from dlc_runtime.bundle import (BatchRange, Bundle, GraphSpec, InputSpec, Manifest,
                                is_bundle_folder, sha256_file, write_manifest)
from dlc_runtime.pipelines import make_pipeline
from dlc_train.config import read_config_as_dict, write_config
from dlc_train.models.loading import build_model_from_snapshot
from dlc_train.task import Task

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".mpg", ".mpeg", ".m4v"}


@dataclass
class ExportResult:
    bundle_dir: Path
    parity: ParityReport
    manifest: Manifest


def scorer_name(pytorch_config: dict, snapshot_path: Path, project_config: dict | None) -> str:
    """DeepLabCut 3's scorer: ``DLC_<Net>_<Task><date>shuffle<n>_<snapshot>``."""
    net = str(pytorch_config.get("net_type", "model")).replace("_", " ").title().replace(" ", "")
    snapshot = snapshot_path.stem.replace("-", "_")
    train_dir = snapshot_path.parent.parent.name  # <Task><date>-trainset95shuffle1
    shuffle = train_dir.rsplit("shuffle", 1)[-1] if "shuffle" in train_dir else "1"
    if project_config:
        task = f"{project_config.get('Task', '')}{project_config.get('date', '')}"
    else:
        task = train_dir.split("-trainset")[0] if "-trainset" in train_dir else "model"
    return f"DLC_{net}_{task}shuffle{shuffle}_{snapshot}"


def default_bundle_dir(project: dict | None, snapshot_path: Path, scorer: str) -> Path:
    """Where a DeepLabCut user looks: ``<project>/exported-models-pytorch/<scorer>.bundle``
    (beside the snapshot when the project is not found)."""
    base = Path(project["project_path"]) / "exported-models-pytorch" if project \
        else snapshot_path.parent
    return base / f"{scorer}.bundle"


def _project_config(pytorch_config: dict, pytorch_config_path: Path) -> dict | None:
    """The project's config.yaml, found via metadata.project_path or the folders above."""
    candidates = []
    project_path = (pytorch_config.get("metadata") or {}).get("project_path")
    if project_path:
        candidates.append(Path(project_path) / "config.yaml")
    # <project>/dlc-models-pytorch/iteration-0/<name>/train/pytorch_config.yaml
    candidates.extend(parent / "config.yaml" for parent in pytorch_config_path.parents[:6])
    for candidate in candidates:
        if candidate.is_file():
            try:
                cfg = read_config_as_dict(candidate)
            except ValueError:
                continue
            if "bodyparts" in cfg:
                cfg["project_path"] = str(candidate.parent)
                return cfg
    return None


def _parity_frames(frames: Path | np.ndarray | None, project: dict | None,
                   count: int = 8) -> tuple[np.ndarray, str]:
    if isinstance(frames, np.ndarray):
        return frames, "frames given by the caller"
    if frames is not None:
        frames = Path(frames)
        if frames.suffix.lower() in VIDEO_SUFFIXES:
            return frames_from_video(frames, count), str(frames)
        if frames.is_dir():
            images = sorted(p for p in frames.rglob("*") if p.suffix.lower() in (".png", ".jpg"))
            return frames_from_images(images, count), str(frames)
        raise ExportError(f"--frames {frames}: not a video or a folder of images")
    if project and Path(project["project_path"], "labeled-data").is_dir():
        return (frames_from_project(project["project_path"], count),
                f"{project['project_path']}/labeled-data")
    # Without real frames the check still compares the graphs, on noise: say so in the report.
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(4, 256, 256, 3), dtype=np.uint8), "random noise frames"


def _check_config(cfg: dict, path: Path) -> None:
    metadata = cfg.get("metadata") or {}
    if not metadata.get("bodyparts"):
        raise ExportError(f"{path}: metadata.bodyparts is missing or empty; the bundle cannot "
                          "name its keypoints")
    if "model" not in cfg or "heads" not in (cfg["model"] or {}):
        raise ExportError(f"{path}: no model section with heads; is this a pytorch_config.yaml?")
    task = Task.from_str(str(cfg.get("method", "bu")))
    if task != Task.BOTTOM_UP:
        raise ExportError(f"{path}: method={cfg.get('method')} ({task.snake_name}) models do "
                          "not export yet")
    check_plan(cfg, path)


def _export_top_down(pytorch_config_path: Path, snapshot_path: Path, output, kwargs: dict):
    """Top-down models have their own exporter (detector + pose graphs)."""
    try:
        from dlc_export.top_down import export_top_down_bundle
    except ImportError as err:
        if getattr(err, "name", None) not in ("dlc_export.top_down", None):
            raise
        raise ExportError(f"{pytorch_config_path}: top-down (method: td) models do not export "
                          "with this dlc-deploy yet (dlc_export.top_down is missing); export a "
                          "bottom-up model or upgrade dlc-deploy") from None
    return export_top_down_bundle(pytorch_config_path, snapshot_path, output, **kwargs)


def _export_cond_top_down(pytorch_config_path: Path, snapshot_path: Path, output, kwargs: dict):
    """Conditional top-down (CTD) models: a conditions bundle (bottom-up) + a pose graph."""
    from dlc_export.ctd import export_ctd_bundle

    return export_ctd_bundle(pytorch_config_path, snapshot_path, output, **kwargs)


def export_bundle(pytorch_config_path: str | Path, snapshot_path: str | Path,
                  output: str | Path | None = None, *, frames: Path | np.ndarray | None = None,
                  tolerance_px: float = DEFAULT_TOLERANCE_PX, allow_parity_failure: bool = False,
                  opset: int = DEFAULT_OPSET, simplify: bool = True,
                  max_batch: int = 64, torch_precisions: tuple[str, ...] = (),
                  device: str = "cpu", tensorrt_precision: str | None = None,
                  frame_size: tuple[int, int] | None = None,
                  calibration_videos: tuple[Path, ...] = (),
                  input_size: tuple[int, int] | None = None,
                  batch: int | None = None,
                  conditions_config: str | Path | None = None,
                  conditions_snapshot: str | Path | None = None,
                  overwrite: bool = False) -> ExportResult:
    """Exports a snapshot to an ONNX bundle and checks it against the PyTorch model.

    Args:
        pytorch_config_path: the shuffle's pytorch_config.yaml.
        snapshot_path: a ``snapshot-XXX.pt`` (ours or DeepLabCut 3's).
        output: bundle folder; default ``<project>/exported-models-pytorch/<scorer>.bundle``
            (or beside the snapshot when the project is not found).
        frames: frames for the parity check: a video, an image folder or an (n, H, W, 3)
            uint8 array; default: the project's labeled frames.
        tolerance_px: largest keypoint difference (pixels) the parity check accepts.
        allow_parity_failure: write the bundle even when parity fails (the report says so).
        torch_precisions: also add TorchScript artifacts ("fp32", "fp16") for the runtime's
            torch backend (GPUs without TensorRT); each is parity-checked before it is added.
        device: where torch artifacts are traced and checked ("cuda" for fp16 on a GPU).
        tensorrt_precision: also build a TensorRT engine ("fp32", "fp16", "int8") for this
            machine's GPU; needs TensorRT. ``frame_size`` (height, width) fixes its profile
            (default: the parity frames' size); int8 calibrates on ``calibration_videos``.
        input_size: (height, width) the network runs at: the graph still takes frames of any
            size, letterboxes them to this size inside itself (aspect ratio kept, black padding
            bottom/right) and returns keypoints in frame pixels (manifest
            ``input.network_size``, ``input.resize: letterbox``). Default: the frame's own size.
        batch: the largest batch the bundle is built for (manifest ``input.batch`` max and
            opt, which TensorRT profiles use); overrides ``max_batch``.
        conditions_config, conditions_snapshot: conditional top-down (CTD) models only: the
            bottom-up model giving the conditions (default: the shuffle the config's
            ``inference.conditions`` names).
        overwrite: replace an earlier bundle at ``output``. Without it an existing bundle is
            refused; anything else there (a file, a folder of other files, the current
            folder) is always refused, before any work is done.
    """
    pytorch_config_path, snapshot_path = Path(pytorch_config_path), Path(snapshot_path)
    cfg = read_config_as_dict(pytorch_config_path)
    if batch is not None and batch < 1:
        raise ExportError(f"batch must be at least 1, got {batch}")
    task = Task.from_str(str(cfg.get("method", "bu")))
    if (conditions_config or conditions_snapshot) and task != Task.COND_TOP_DOWN:
        raise ExportError(f"{pytorch_config_path}: a conditions model is for conditional "
                          f"top-down (method: ctd) models; this one is {task.snake_name}")
    if Task.from_str(str(cfg.get("method", "bu"))) == Task.TOP_DOWN:
        # Its networks already run at fixed sizes (the pose crop, the detector's input):
        # input_size is refused there, or sets the TensorRT engines' frame size.
        kwargs = dict(frames=frames, tolerance_px=tolerance_px,
                      allow_parity_failure=allow_parity_failure, opset=opset, simplify=simplify,
                      max_batch=max_batch, batch=batch, torch_precisions=torch_precisions,
                      device=device, tensorrt_precision=tensorrt_precision, frame_size=frame_size,
                      calibration_videos=calibration_videos, input_size=input_size,
                      overwrite=overwrite)
        return _export_top_down(pytorch_config_path, snapshot_path, output, kwargs)
    if Task.from_str(str(cfg.get("method", "bu"))) == Task.COND_TOP_DOWN:
        kwargs = dict(frames=frames, tolerance_px=tolerance_px,
                      allow_parity_failure=allow_parity_failure, opset=opset, simplify=simplify,
                      max_batch=max_batch, batch=batch, torch_precisions=torch_precisions,
                      device=device, tensorrt_precision=tensorrt_precision, frame_size=frame_size,
                      calibration_videos=calibration_videos, input_size=input_size,
                      conditions_config=conditions_config,
                      conditions_snapshot=conditions_snapshot, overwrite=overwrite)
        return _export_cond_top_down(pytorch_config_path, snapshot_path, output, kwargs)
    _check_config(cfg, pytorch_config_path)
    project = _project_config(cfg, pytorch_config_path)
    model = build_model_from_snapshot(cfg, snapshot_path)
    plan = make_plan(cfg, model, pytorch_config_path)
    if torch_precisions:  # before minutes of export and parity
        from dlc_export.top_down import check_artifact_options

        check_artifact_options(tuple(torch_precisions), None)
    wrapper = plan.wrapper
    wrapper.normalize.pad_divisor = pad_divisor_from_config(cfg)
    if input_size is not None:
        _check_input_size(input_size, wrapper.normalize.pad_divisor)
        wrapper.normalize.letterbox = Letterbox(input_size)
    scorer = scorer_name(cfg, snapshot_path, project)
    output = Path(output) if output is not None \
        else default_bundle_dir(project, snapshot_path, scorer)
    parity_frames, source = _parity_frames(frames, project)

    with staged_bundle(output, overwrite) as staging:
        export_onnx(wrapper, torch.from_numpy(parity_frames[:2].copy()), staging / "pose.onnx",
                    output_names=plan.output_names, opset=opset, simplify=simplify)
        batch_range = BatchRange.for_export(batch, max_batch)
        manifest = _manifest(plan, cfg, scorer, snapshot_path, opset,
                             InputSpec(batch=batch_range,
                                       network_size=tuple(input_size) if input_size else None,
                                       resize="letterbox" if input_size else None))
        write_config(staging / "pytorch_config.yaml", cfg)
        write_manifest(staging, manifest)
        report = _check_parity(staging, plan, parity_frames, source, tolerance_px)
        report.to_json(staging / "parity.json")
        if not report.passed and not allow_parity_failure:
            raise ParityError(f"{report.summary()}; the bundle was not written "
                              "(--allow-parity-failure writes it anyway)")
        pcutoff = project_pcutoff(project)
        for precision in torch_precisions:
            gate = ParityGate.for_precision(precision, tolerance_px, pcutoff)
            check = None if plan.output_names == ("keypoints",) else _torch_pipeline_check(
                staging, plan, parity_frames, source, gate, precision, device,
                allow_parity_failure)
            add_torch_artifact(staging, wrapper, torch.from_numpy(parity_frames), precision,
                               device=device, tolerance_px=tolerance_px, pcutoff=pcutoff,
                               allow_parity_failure=allow_parity_failure, check=check)
        if tensorrt_precision:
            _add_tensorrt_engine(staging, tensorrt_precision,
                                 frame_size or tuple(parity_frames.shape[1:3]),
                                 calibration_videos)
            _check_engine_parity(staging, plan, parity_frames, source, tensorrt_precision,
                                 ParityGate.for_precision(tensorrt_precision, tolerance_px,
                                                          project_pcutoff(project)),
                                 allow_parity_failure,
                                 frame_size or tuple(parity_frames.shape[1:3]))
    log.info("bundle written to %s", output)
    return ExportResult(output, report, manifest)


def _check_input_size(input_size: tuple[int, int], pad_divisor: tuple[int, int]) -> None:
    """Refuses a network size the model cannot run at exactly."""
    height, width = input_size
    if height < 1 or width < 1:
        raise ExportError(f"input_size must be positive (height, width), got {input_size}")
    hdiv, wdiv = pad_divisor
    if height % hdiv or width % wdiv:
        # auto_padding would pad past H x W, so the network would not run at the asked size.
        raise ExportError(f"input size {height}x{width} must be a multiple of the model's "
                          f"auto_padding divisors {hdiv}x{wdiv} (height x width)")


def _manifest(plan: ExportPlan, cfg: dict, scorer: str, snapshot_path: Path, opset: int,
              input_spec: InputSpec) -> Manifest:
    return Manifest(
        task=plan.task, scorer=scorer,
        bodyparts=list(cfg["metadata"]["bodyparts"]),
        unique_bodyparts=list(plan.unique_bodyparts),
        individuals=list(plan.individuals),
        multi_animal=plan.multi_animal,
        input=input_spec,
        decoder=dict(plan.decoder),
        graphs={"pose": GraphSpec(file="pose.onnx", opset=opset, inputs=plan.inputs,
                                  outputs=list(plan.outputs))},
        source={"snapshot": str(snapshot_path.resolve()),
                "snapshot_sha256": sha256_file(snapshot_path),
                "net_type": cfg.get("net_type"), "config": "pytorch_config.yaml"},
        parity="parity.json",
    )


def _check_parity(staging: Path, plan: ExportPlan, frames: np.ndarray | list[np.ndarray],
                  source: str, tolerance_px: float | ParityGate, backend=None) -> ParityReport:
    """Eager PyTorch vs the staged bundle on ONNX Runtime (or on ``backend``, which is then
    closed here), compared after the runtime's own host steps (its pipeline's ``postprocess``:
    PAF assembly, identity, padding), so the check covers what ``analyze_video`` will write."""
    bundle = Bundle.load(staging)
    if backend is None:
        backend = OnnxRuntimeBackend(bundle.graph_path("pose"), device="cpu")
    try:
        pipeline = make_pipeline(bundle, backend)

        def decode(outputs: dict[str, np.ndarray]) -> np.ndarray:
            n = len(next(iter(outputs.values())))
            result = pipeline.postprocess(outputs, n)
            parts = [result.keypoints.reshape(n, -1, 3)]
            if result.unique_keypoints is not None:
                parts.append(result.unique_keypoints.reshape(n, -1, 3))
            return np.concatenate(parts, axis=1)

        return run_parity(plan.wrapper, backend.run, frames, source=source,
                          backend=backend.name, tolerance_px=tolerance_px,
                          output_names=plan.output_names, decode=decode)
    finally:
        backend.close()


def _torch_pipeline_check(staging: Path, plan: ExportPlan, frames: np.ndarray, source: str,
                          gate: ParityGate, precision: str, device: str,
                          allow_failure: bool = False):
    """The check of a torch artifact whose graph has other outputs than ``keypoints`` (PAF,
    DEKR, identity): through the runtime pipeline's host steps, as the ONNX graph is checked,
    on the parity frames and on a smaller crop of them (traced shapes must generalise)."""
    from dlc_export.top_down import second_frames
    from dlc_runtime.backends.torch_backend import TorchBackend

    def check(loaded) -> ParityReport:
        backend = TorchBackend(staging / "pose.torch-artifact", device=device, label=precision,
                               output_names=plan.output_names, module=loaded)
        report = _check_parity(staging, plan, [frames, second_frames(frames)],
                               f"{source} and a smaller crop of them", gate, backend)
        return enforce(report, allow_failure, "the torch artifact was not written")

    return check


TIMING_CACHE = Path.home() / ".cache" / "dlc-deploy" / "tensorrt-timing.cache"


def _check_engine_parity(staging: Path, plan: ExportPlan, frames: np.ndarray, source: str,
                         precision: str, gate: ParityGate, allow_parity_failure: bool,
                         frame_size: tuple[int, int]) -> ParityReport:
    """PyTorch vs the TensorRT engine just built, on the same frames and host steps as the
    ONNX check; written to ``parity.tensorrt_<precision>.json``.

    The engine's profile is built for ``frame_size`` (height, width): parity frames of another
    size are resized to it first (both sides see the same resized frames, so the comparison
    stays exact)."""
    import cv2

    from dlc_runtime.backends import make_backend

    height, width = (int(v) for v in frame_size)
    if tuple(frames.shape[1:3]) != (height, width):
        frames = np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA)
                           for f in frames])
    backend = make_backend(Bundle.load(staging), "tensorrt", device="cuda")
    report = _check_parity(staging, plan, frames, source,
                           gate, backend=backend)
    report.to_json(staging / f"parity.tensorrt_{precision}.json")
    log.info("TensorRT %s: %s", precision, report.summary())
    if not report.passed and not allow_parity_failure:
        raise ParityError(f"TensorRT {precision} engine: {report.summary()}; the bundle was "
                          "not written (--allow-parity-failure writes it anyway)")
    return report


def _add_tensorrt_engine(bundle_dir: Path, precision: str, frame_size: tuple[int, int],
                         calibration_videos: tuple[Path, ...]) -> None:
    """Builds ``pose.engine`` (TensorRT imported only here) and records its fingerprint."""
    from dlc_export.tensorrt_build import (add_engine_to_bundle, calibration_frames_from_videos,
                                           export_tensorrt)

    frames = calibration_frames_from_videos(calibration_videos) if precision == "int8" else None
    TIMING_CACHE.parent.mkdir(parents=True, exist_ok=True)
    entry = export_tensorrt(bundle_dir, precision=precision, frame_size=frame_size,
                            timing_cache_path=TIMING_CACHE, calibration_frames=frames)
    add_engine_to_bundle(bundle_dir, entry)


def staged_bundle(output: Path, overwrite: bool = False):
    """A hidden sibling folder of ``output`` to write a bundle in (see
    :func:`dlc_io.staged_folder`): renamed onto ``output`` when the block succeeds, removed when
    it fails. ``output`` must be new, empty, or (with ``overwrite``) an earlier bundle; anything
    else there is refused before any work is done."""
    return staged_folder(output, what="bundle", is_ours=is_bundle_folder, overwrite=overwrite)
