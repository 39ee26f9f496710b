"""Top-down export: a detector graph plus a pose graph that crops inside itself.

``pose.onnx`` takes the frames and boxes (``images`` uint8 (B, H, W, 3), ``boxes`` float32
(B, M, 4) x1 y1 x2 y2 frame pixels) and returns ``keypoints`` (B, M, K, 3) in frame pixels. The
crops are taken with ``grid_sample``, reproducing DeepLabCut 3's ``top_down_crop``: the box plus
``top_down_crop.margin`` (default 0) on each side, widened to the crop's aspect ratio around its centre, corners rounded
to whole pixels, zero padding where it leaves the frame, then a bilinear resize (cv2's half-pixel
convention, border clamped to the crop) to the configured crop size. Keypoints come back as
``x = x_crop * scale + offset``. One pass: the frames are uploaded once per graph and never cropped
on the host.
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dlc_export.detector import (
    DEFAULT_MAX_DETECTIONS,
    DetectorGraph,
    build_detector,
    detector_normalizes,
    eager_detections,
    export_detector_onnx,
    matched_iou,
)
from dlc_export.onnx_export import DEFAULT_OPSET, ExportError, export_onnx
from dlc_export.parity import (
    DEFAULT_PCUTOFF,
    DEFAULT_TOLERANCE_PX,
    ParityError,
    ParityGate,
    ParityReport,
    enforce,
    parity_report,
    project_pcutoff,
)
from dlc_export.wrappers import NormalizeFrames
from dlc_runtime.bundle import (
    BatchRange,
    Bundle,
    GraphSpec,
    InputSpec,
    Manifest,
    TensorSpec,
    sha256_file,
    write_manifest,
)
from dlc_train.config import read_config_as_dict, write_config
from dlc_train.models.loading import build_model_from_config, build_model_from_snapshot
from dlc_train.models.model import PoseModel
from dlc_train.task import Task

if TYPE_CHECKING:  # export.py imports this module lazily; no cycle at run time
    from dlc_export.export import ExportResult

log = logging.getLogger(__name__)

#: Detector score below which a box is not handed to the pose graph (recorded in the manifest).
DEFAULT_BOX_SCORE_THRESHOLD = 0.1


def crop_settings(cfg: dict) -> tuple[int, int, float]:
    """(crop width, crop height, crop margin) from a top-down pytorch_config.

    As DeepLabCut's inference runner: ``data.inference.top_down_crop`` {width, height, margin
    (default 0)}. ``data.bbox_margin`` is not a crop setting: DeepLabCut uses it to make boxes
    from keypoints (training labels, CTD conditions), not to widen detector boxes.
    """
    data = cfg.get("data") or {}
    crop = (data.get("inference") or {}).get("top_down_crop") or {}
    if not crop.get("crop_with_context", True):
        raise ExportError("top_down_crop.crop_with_context: false is not supported for top-down "
                          "exports (only conditional top-down models crop without context); "
                          "set it to true or remove it")
    return int(crop.get("width", 256)), int(crop.get("height", 256)), \
        float(crop.get("margin", 0))


def pad_divisors(cfg: dict) -> tuple[int, int]:
    """(height, width) divisors of DeepLabCut's ``auto_padding`` for the crops ((1, 1): none)."""
    pad = ((cfg.get("data") or {}).get("inference") or {}).get("auto_padding") or {}
    return int(pad.get("pad_height_divisor", 1)), int(pad.get("pad_width_divisor", 1))


def crop_windows(boxes: torch.Tensor, out_w: int, out_h: int, margin: float
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepLabCut's crop window per box: (offset x, y) and (crop width, height) in pixels.

    Args:
        boxes: (..., 4) x1, y1, x2, y2.
    """
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    cx, cy = boxes[..., 0] + w / 2, boxes[..., 1] + h / 2
    w, h = w + 2 * margin, h + 2 * margin
    ratio = out_w / out_h
    # Widen the short side to the output ratio (DeepLabCut's fix_bbox_aspect_ratio, branch-free).
    w, h = torch.maximum(w, h * ratio), torch.maximum(h, w / ratio)
    x1, x2 = torch.round(cx - w / 2), torch.round(cx + w / 2)
    y1, y2 = torch.round(cy - h / 2), torch.round(cy + h / 2)
    size = torch.stack((x2 - x1, y2 - y1), dim=-1).clamp(min=1.0)  # empty slots stay finite
    return torch.stack((x1, y1), dim=-1), size


class TopDownCrop(nn.Module):
    """frames (B, 3, H, W) float + boxes (B, M, 4) -> crops (B*M, 3, out_h, out_w), offsets,
    scales (B, M, 2) with ``frame = crop * scale + offset``.

    The M crops of a frame are sampled as one tall grid over that frame, so the frames are
    never repeated per box.
    """

    def __init__(self, out_w: int, out_h: int, margin: float):
        super().__init__()
        self.out_w, self.out_h, self.margin = int(out_w), int(out_h), float(margin)
        self.register_buffer("jx", torch.arange(self.out_w, dtype=torch.float32) + 0.5,
                             persistent=False)
        self.register_buffer("jy", torch.arange(self.out_h, dtype=torch.float32) + 0.5,
                             persistent=False)

    def forward(self, frames: torch.Tensor, boxes: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, m = boxes.shape[0], boxes.shape[1]
        offset, size = crop_windows(boxes, self.out_w, self.out_h, self.margin)
        scale = size / size.new_tensor([self.out_w, self.out_h])
        # cv2.resize (INTER_LINEAR): source = (j + 0.5) * scale - 0.5, clamped to the crop.
        sx = torch.minimum((self.jx * scale[..., :1] - 0.5).clamp(min=0.0), size[..., :1] - 1)
        sy = torch.minimum((self.jy * scale[..., 1:] - 0.5).clamp(min=0.0), size[..., 1:] - 1)
        sx, sy = sx + offset[..., :1], sy + offset[..., 1:]  # (B, M, W'), (B, M, H') frame px
        hw = torch._shape_as_tensor(frames)[2:4].to(frames.dtype)
        # grid_sample, align_corners=False: pixel p sits at (2p + 1) / size - 1; outside the
        # frame it reads zeros, DeepLabCut's zero padding.
        gx = (2 * sx + 1) / hw[1] - 1
        gy = (2 * sy + 1) / hw[0] - 1
        grid = torch.stack((gx[:, :, None, :].expand(b, m, self.out_h, self.out_w),
                            gy[:, :, :, None].expand(b, m, self.out_h, self.out_w)), dim=-1)
        crops = F.grid_sample(frames, grid.reshape(b, m * self.out_h, self.out_w, 2),
                              mode="bilinear", padding_mode="zeros", align_corners=False)
        crops = crops.reshape(b, 3, m, self.out_h, self.out_w).transpose(1, 2)
        return crops.reshape(b * m, 3, self.out_h, self.out_w), offset, scale


class PoseOnCrops(nn.Module):
    """normalized crops (N, 3, h, w) -> keypoints (N, K, 3) in crop pixels (model + predictor).

    Args:
        pad_divisors: (height, width) DeepLabCut's ``auto_padding`` (reflect, bottom/right).
    """

    def __init__(self, model: PoseModel, head: str = "bodypart",
                 pad_divisors: tuple[int, int] = (1, 1)):
        super().__init__()
        self.model, self.head = model, head
        self.stride = model.get_stride(head)
        self.pad_divisors = pad_divisors

    def pad(self, crops: torch.Tensor) -> torch.Tensor:
        h, w = crops.shape[-2:]
        pad_h = -int(h) % self.pad_divisors[0]
        pad_w = -int(w) % self.pad_divisors[1]
        if pad_h or pad_w:  # crop sizes are constants, so this is decided at export time
            crops = F.pad(crops, (0, pad_w, 0, pad_h), mode="reflect")
        return crops

    def decode(self, head_outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        poses = self.model.heads[self.head].predictor(self.stride, head_outputs)["poses"]
        return poses[:, 0].to(torch.float32)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.decode(self.model(self.pad(crops))[self.head])


class TopDownPose(nn.Module):
    """images (B, H, W, 3) uint8 + boxes (B, M, 4) -> keypoints (B, M, K, 3) frame pixels."""

    def __init__(self, model: PoseModel, crop_w: int, crop_h: int, margin: float,
                 pad_divisors: tuple[int, int] = (1, 1)):
        super().__init__()
        self.normalize = NormalizeFrames()
        self.crop = TopDownCrop(crop_w, crop_h, margin)
        self.pose = PoseOnCrops(model, pad_divisors=pad_divisors)

    def forward(self, images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        # Cast before permuting (TensorRT), crop raw pixels (zero padding = black pixels, as
        # DeepLabCut pads the uint8 image), then normalize the small crops.
        frames = images.to(torch.float32).permute(0, 3, 1, 2)
        crops, offset, scale = self.crop(frames, boxes.to(torch.float32))
        crops = (crops - self.normalize.mean) * self.normalize.scale
        kp = self.pose(crops)  # (B*M, K, 3)
        b, m = boxes.shape[0], boxes.shape[1]
        kp = kp.reshape(b, m, kp.shape[1], 3)
        xy = kp[..., :2] * scale[:, :, None, :] + offset[:, :, None, :]
        return torch.cat((xy, kp[..., 2:]), dim=-1)


# -- the eager reference: DeepLabCut's CPU crop, then the PyTorch model ------------------------

def deeplabcut_crop(image: np.ndarray, box: np.ndarray, out_w: int, out_h: int, margin: float
                    ) -> tuple[np.ndarray, tuple[float, float], tuple[float, float]]:
    """DeepLabCut 3's ``top_down_crop`` on one (H, W, 3) image and one x1y1x2y2 box.

    Differs from DeepLabCut in one way only: the resize runs on float32 pixels (DeepLabCut
    resizes uint8, rounding each crop pixel to an integer), so the reference measures the
    graph rather than uint8 rounding.

    Returns:
        crop (out_h, out_w, 3) float32, (offset x, y), (scale x, y).
    """
    x, y = float(box[0]), float(box[1])
    w, h = float(box[2]) - x, float(box[3]) - y
    cx, cy = x + w / 2, y + h / 2
    w, h = w + 2 * margin, h + 2 * margin
    if w / h > out_w / out_h:
        h = w / (out_w / out_h)
    elif w / h < out_w / out_h:
        w = h * (out_w / out_h)
    x1, y1 = int(round(cx - w / 2)), int(round(cy - h / 2))
    x2, y2 = int(round(cx + w / 2)), int(round(cy + h / 2))
    crop_w, crop_h = max(x2 - x1, 1), max(y2 - y1, 1)
    img_h, img_w = image.shape[:2]
    window = np.zeros((crop_h, crop_w, 3), np.float32)
    sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, img_w), min(y2, img_h)
    if sx2 > sx1 and sy2 > sy1:
        window[sy1 - y1:sy2 - y1, sx1 - x1:sx2 - x1] = image[sy1:sy2, sx1:sx2]
    crop = cv2.resize(window, (out_w, out_h), interpolation=cv2.INTER_LINEAR)
    return crop, (float(x1), float(y1)), (crop_w / out_w, crop_h / out_h)


@torch.no_grad()
def eager_top_down(pose: PoseOnCrops, frames: np.ndarray, boxes: np.ndarray, crop_w: int,
                   crop_h: int, margin: float) -> np.ndarray:
    """Crop each box on the CPU the DeepLabCut way, run the PyTorch model, map back.

    Args:
        frames: (B, H, W, 3) uint8; boxes: (B, M, 4) x1y1x2y2.

    Returns:
        (B, M, K, 3) keypoints in frame pixels.
    """
    norm = NormalizeFrames()
    out = []
    for frame, frame_boxes in zip(frames, boxes):
        crops, offsets, scales = [], [], []
        for box in frame_boxes:
            crop, offset, scale = deeplabcut_crop(frame, box, crop_w, crop_h, margin)
            crops.append(crop)
            offsets.append(offset)
            scales.append(scale)
        x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2)
        x = (x - norm.mean) * norm.scale
        kp = pose(x).numpy()
        xy = kp[..., :2] * np.array(scales)[:, None] + np.array(offsets)[:, None]
        out.append(np.concatenate((xy, kp[..., 2:]), axis=-1))
    return np.stack(out).astype(np.float32)


# -- export ----------------------------------------------------------------------------------

def export_pose_onnx(module: TopDownPose, images: np.ndarray, boxes: np.ndarray,
                     path: str | Path, *, opset: int = DEFAULT_OPSET,
                     simplify: bool = True) -> Path:
    """Writes the two-input pose graph (dynamic batch and frame size; M fixed at export)."""
    return export_onnx(module, torch.from_numpy(np.ascontiguousarray(images)), path,
                       extra_inputs={"boxes": torch.from_numpy(
                           np.ascontiguousarray(boxes, np.float32))},
                       opset=opset, simplify=simplify,
                       what="ONNX export of the top-down pose graph")


def ort_session(path: Path):
    """An onnxruntime CPU session of an exported graph, for the export's parity checks."""
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def parity_boxes(frames: np.ndarray, m: int, seed: int = 0) -> np.ndarray:
    """Boxes for the pose parity check: inside, across the border, thin and wide ones."""
    rng = np.random.default_rng(seed)
    b, h, w = frames.shape[:3]
    boxes = np.empty((b, m, 4), np.float32)
    for i in range(b):
        for j in range(m):
            kind = (i * m + j) % 4
            bw, bh = rng.uniform(0.15, 0.5) * w, rng.uniform(0.15, 0.5) * h
            if kind == 1:    # across the top-left corner
                x1, y1 = -0.3 * bw, -0.2 * bh
            elif kind == 2:  # across the bottom-right corner, wide and flat
                bw, bh = 0.6 * w, 0.12 * h
                x1, y1 = w - 0.7 * bw, h - 0.5 * bh
            elif kind == 3:  # tall and thin
                bw, bh = 0.08 * w, 0.6 * h
                x1, y1 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            else:
                x1, y1 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            boxes[i, j] = (x1, y1, x1 + bw, y1 + bh)
    return boxes


def detector_network_input(det_graph: DetectorGraph) -> dict:
    """The detector network's input, for the manifest (``decoder.detector_input``):
    ``{"width", "height", "resize"}``. SSDLite stretches every frame to its fixed 320x320
    (aspect ratio not kept); a graph that resizes otherwise describes itself in
    ``network_input``."""
    described = getattr(det_graph, "network_input", None)
    if described:
        return dict(described)
    height, width = det_graph.size
    return {"width": int(width), "height": int(height), "resize": "stretch"}


def _engine_frame_size(where: Path, input_size: tuple[int, int] | None,
                       frame_size: tuple[int, int] | None, tensorrt_precision: str | None,
                       crop: tuple[int, int], det_input: dict) -> tuple[int, int] | None:
    """The TensorRT frame size: ``input_size`` means exactly that for top-down models."""
    if input_size is None:
        return frame_size
    if tensorrt_precision is None:
        raise ExportError(
            f"{where}: input_size (--input-size) does not apply to top-down models: their "
            f"networks already run at fixed sizes, the pose network at the {crop[0]}x{crop[1]} "
            f"crop (decoder.crop) and the detector at {det_input['width']}x"
            f"{det_input['height']} (decoder.detector_input, resize: {det_input['resize']}); "
            "with --format tensorrt it sets the engines' frame size")
    if frame_size is not None and tuple(frame_size) != tuple(input_size):
        raise ExportError(f"{where}: input_size {tuple(input_size)} and frame_size "
                          f"{tuple(frame_size)} disagree; for top-down models both are the "
                          "TensorRT engines' frame size (height, width): pass one")
    height, width = (int(v) for v in input_size)
    if height < 1 or width < 1:
        raise ExportError(f"input_size must be positive (height, width), got {input_size}")
    return height, width


def check_artifact_options(torch_precisions: tuple[str, ...],
                            tensorrt_precision: str | None) -> None:
    """Refuses unknown precisions, and a TensorRT build where TensorRT is missing, before the
    export spends minutes on graphs and parity."""
    from dlc_runtime.backends.torch_backend import PRECISIONS as TORCH_PRECISIONS

    bad = [p for p in torch_precisions if p not in TORCH_PRECISIONS]
    if bad:
        raise ExportError(f"unknown torch precision {bad[0]!r}; use "
                          f"{', '.join(TORCH_PRECISIONS)}")
    if tensorrt_precision is not None:
        from dlc_export.tensorrt_build import PRECISIONS, TensorRTBuildError, import_tensorrt

        if tensorrt_precision not in PRECISIONS:
            raise TensorRTBuildError(f"precision {tensorrt_precision!r}: use one of "
                                     f"{', '.join(PRECISIONS)}")
        import_tensorrt()


def find_detector_snapshot(snapshot_path: Path) -> Path | None:
    """The newest ``snapshot-detector-*.pt`` beside the pose snapshot (best first, as DLC),
    newest by epoch: ``-1000`` after ``-200``."""
    from dlc_train.runners.snapshots import list_snapshots

    found = list_snapshots(snapshot_path.parent, prefix="snapshot-detector")
    best = [s for s in found if s.best]
    return (best or found)[-1].path if found else None


def export_top_down_bundle(pytorch_config_path: str | Path, snapshot_path: str | Path,
                           output: str | Path | None = None, *,
                           detector_snapshot_path: str | Path | None = None,
                           frames: Path | np.ndarray | None = None,
                           tolerance_px: float = DEFAULT_TOLERANCE_PX,
                           allow_parity_failure: bool = False,
                           max_individuals: int | None = None,
                           random_detector: bool = False, random_pose: bool = False,
                           opset: int = DEFAULT_OPSET, simplify: bool = True,
                           max_batch: int = 64, batch: int | None = None,
                           box_score_threshold: float = DEFAULT_BOX_SCORE_THRESHOLD,
                           max_detections: int = DEFAULT_MAX_DETECTIONS,
                           torch_precisions: tuple[str, ...] = (), device: str = "cpu",
                           tensorrt_precision: str | None = None,
                           frame_size: tuple[int, int] | None = None,
                           calibration_videos: tuple[Path, ...] = (),
                           input_size: tuple[int, int] | None = None,
                           overwrite: bool = False) -> ExportResult:
    """Exports a top-down shuffle to a bundle with ``detector.onnx`` and ``pose.onnx``.

    Args:
        pytorch_config_path: the shuffle's pytorch_config.yaml (``method: td``).
        snapshot_path: the pose ``snapshot-XXX.pt``.
        output: bundle folder (default as ``export_bundle``).
        detector_snapshot_path: the ``snapshot-detector-XXX.pt``; default: the newest one in
            the pose snapshot's folder, where DeepLabCut writes it.
        frames: parity frames (video, image folder or (n, H, W, 3) uint8 array).
        tolerance_px: largest keypoint difference (pixels) the pose parity check accepts.
        allow_parity_failure: write the bundle even when parity fails.
        max_individuals: boxes per frame handed to the pose graph (default: the number of
            individuals in the config).
        random_detector: build the detector with random weights when no snapshot exists
            (tests and dry runs only; the bundle records it).
        random_pose: ignore ``snapshot_path`` and use random pose weights (tests only).
        box_score_threshold: detector score under which a slot is left empty (runtime).
        max_batch, batch: the batch range of both graphs (``BatchRange.for_export``: ``batch``
            frames -> opt = max = batch; else opt = min(8, max_batch), max = max_batch).
        torch_precisions: also add torch artifacts of both graphs ("fp32", "fp16": the pose
            network's precision; the detector's is fp32), see
            :func:`add_top_down_torch_artifacts`.
        device: where torch artifacts are traced and checked ("cuda" for fp16 on a GPU).
        tensorrt_precision: also build ``detector.engine`` and ``pose.engine`` for this
            machine's GPU ("fp32", "fp16", "int8"; int8 calibrates on ``calibration_videos``).
        frame_size: (height, width) the engines' profile is built for (default: the parity
            frames' size).
        input_size: only with ``tensorrt_precision``: the engines' frame size (as
            ``frame_size``). Top-down networks already run at fixed sizes (the pose crop,
            ``decoder.crop``, and the detector's own input, ``decoder.detector_input``), so
            there is no network size to choose; without TensorRT it is refused.
        overwrite: replace an earlier bundle at ``output`` (see ``export_bundle``).
    """
    from dlc_export.export import (
        ExportResult,
        default_bundle_dir,
        _parity_frames,
        _project_config,
        scorer_name,
        staged_bundle,
    )

    pytorch_config_path, snapshot_path = Path(pytorch_config_path), Path(snapshot_path)
    cfg = read_config_as_dict(pytorch_config_path)
    metadata = cfg.get("metadata") or {}
    if not metadata.get("bodyparts"):
        raise ExportError(f"{pytorch_config_path}: metadata.bodyparts is missing or empty")
    if Task.from_str(str(cfg.get("method", "bu"))) != Task.TOP_DOWN:
        raise ExportError(f"{pytorch_config_path}: method {cfg.get('method')!r} is not top-down "
                          "('td'); use export_bundle")
    if not isinstance((cfg.get("detector") or {}).get("model"), dict):
        raise ExportError(f"{pytorch_config_path}: no 'detector' section; a top-down config "
                          "needs one (DeepLabCut writes it for top-down shuffles)")
    if detector_snapshot_path is None:
        detector_snapshot_path = find_detector_snapshot(snapshot_path)
        if detector_snapshot_path is None and not random_detector:
            raise ExportError(
                f"no detector snapshot (snapshot-detector-XXX.pt) in {snapshot_path.parent}; "
                "train the detector, pass detector_snapshot_path, or allow random detector "
                "weights for a dry run")
    detector = build_detector(cfg, detector_snapshot_path, where=str(pytorch_config_path))
    model = build_model_from_config(cfg).eval() if random_pose \
        else build_model_from_snapshot(cfg, snapshot_path)

    individuals = list(metadata.get("individuals") or ["individual_1"])
    m = int(max_individuals or len(individuals))
    crop_w, crop_h, margin = crop_settings(cfg)
    wrapper = TopDownPose(model, crop_w, crop_h, margin, pad_divisors(cfg)).eval()
    det_graph = DetectorGraph(detector, max_detections=max(max_detections, m),
                              normalize_images=detector_normalizes(cfg)).eval()
    det_input = detector_network_input(det_graph)
    frame_size = _engine_frame_size(pytorch_config_path, input_size, frame_size,
                                    tensorrt_precision, (crop_w, crop_h), det_input)
    check_artifact_options(torch_precisions, tensorrt_precision)

    project = _project_config(cfg, pytorch_config_path)
    scorer = scorer_name(cfg, snapshot_path, project)
    output = Path(output) if output is not None \
        else default_bundle_dir(project, snapshot_path, scorer)
    parity_frames, source = _parity_frames(frames, project)
    boxes = parity_boxes(parity_frames, m)

    with staged_bundle(output, overwrite) as staging:
        det_path = export_detector_onnx(det_graph, parity_frames[:2], staging / "detector.onnx",
                                        opset=opset, simplify=simplify)
        pose_path = export_pose_onnx(wrapper, parity_frames[:2], boxes[:2],
                                     staging / "pose.onnx", opset=opset, simplify=simplify)
        report, det_iou = _parity(det_graph, detector, wrapper, det_path, pose_path,
                                  parity_frames, boxes, (crop_w, crop_h, margin),
                                  source, tolerance_px)
        _write_parity(staging / "parity.json", report, det_iou)
        if not report.passed and not allow_parity_failure:
            raise ParityError(f"{report.summary()}; detector matched IoU {det_iou:.4f}; "
                              "the bundle was not written (allow_parity_failure writes it)")
        manifest = _manifest(cfg, scorer, individuals, m, (crop_w, crop_h, margin),
                             det_graph.max_detections, box_score_threshold, opset,
                             BatchRange.for_export(batch, max_batch),
                             snapshot_path, detector_snapshot_path, random_pose, det_input)
        write_config(staging / "pytorch_config.yaml", cfg)
        write_manifest(staging, manifest)
        if torch_precisions:
            add_top_down_torch_artifacts(staging, det_graph, detector, wrapper, parity_frames,
                                         boxes, (crop_w, crop_h, margin), tuple(torch_precisions),
                                         device=device, tolerance_px=tolerance_px,
                                         pcutoff=project_pcutoff(project),
                                         allow_parity_failure=allow_parity_failure)
        if tensorrt_precision:
            engine_size = frame_size or tuple(parity_frames.shape[1:3])
            add_top_down_engines(staging, tensorrt_precision, engine_size, calibration_videos,
                                 box_score_threshold)
            engines, engines_iou = check_top_down_engines(
                staging, tensorrt_precision, det_graph, detector, wrapper, parity_frames,
                (crop_w, crop_h, margin), engine_size, source, tolerance_px,
                project_pcutoff(project))
            if not engines.passed and not allow_parity_failure:
                raise ParityError(f"{engines.summary()}; detector matched IoU "
                                  f"{engines_iou:.4f}; the bundle was not written "
                                  "(allow_parity_failure writes it)")
        manifest = Bundle.load(staging).manifest  # with the artifacts' entries
    log.info("top-down bundle written to %s", output)
    return ExportResult(output, report, manifest)


#: The detector parity threshold: every reference box scoring above 0.1 has a graph box with
#: at least this IoU.
MIN_DETECTOR_IOU = 0.99


def _parity(det_graph: DetectorGraph, detector, wrapper: TopDownPose, det_path: Path,
            pose_path: Path, frames: np.ndarray, boxes: np.ndarray,
            crop: tuple[int, int, float], source: str,
            tolerance_px: float) -> tuple[ParityReport, float]:
    """Detector IoU (graph vs eager) and pose px error (graph vs eager CPU crop + model)."""
    det_sess, pose_sess = ort_session(det_path), ort_session(pose_path)
    ref_kp, graph_kp, ious = [], [], []
    for start in range(0, len(frames), 2):
        f, bx = frames[start:start + 2], boxes[start:start + 2]
        ref = eager_detections(detector, f, det_graph.max_detections,
                               det_graph.normalize_images)
        got_boxes, _ = det_sess.run(["boxes", "scores"], {"images": f})
        ious.append(matched_iou(ref["boxes"], ref["scores"], got_boxes))
        ref_kp.append(eager_top_down(wrapper.pose, f, bx, *crop))
        graph_kp.append(pose_sess.run(["keypoints"], {"images": f, "boxes": bx})[0])
    det_iou = float(min(ious))
    report = parity_report(np.concatenate(ref_kp), np.concatenate(graph_kp),
                           frames=len(frames), frame_size=frames.shape[1:3], source=source,
                           backend="onnxruntime-cpu", gate=tolerance_px)
    report.passed = report.passed and det_iou >= MIN_DETECTOR_IOU
    return report, det_iou


# -- torch artifacts (runtime backend "torch") -----------------------------------------------

#: The detector's torch artifact is fp32 only: its box regression, score threshold and NMS are
#: what decide which animals the pose graph sees, and they are cheap next to the pose network.
DETECTOR_TORCH_PRECISION = "fp32"


def on_device(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` itself on the CPU, else a copy on ``device`` (the caller's stays put)."""
    return module.eval() if device.type == "cpu" else copy.deepcopy(module).eval().to(device)


def run_loaded(module, device: torch.device, *arrays: np.ndarray) -> list[np.ndarray]:
    with torch.inference_mode():
        out = module(*(torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in arrays))
    out = out if isinstance(out, (tuple, list)) else (out,)
    return [t.float().cpu().numpy() for t in out]


def second_frames(frames: np.ndarray) -> np.ndarray:
    """Another batch and frame size cut from the parity frames: traced shapes must generalise."""
    b, h, w = frames.shape[:3]
    return np.ascontiguousarray(frames[:max(1, b - 1), :max(32, h * 3 // 4),
                                       :max(32, w * 3 // 4)])


def _check_torch_detector(loaded, device: torch.device, detector, det_graph: DetectorGraph,
                          frames: np.ndarray, allow_failure: bool = False) -> float:
    """Smallest matched IoU of the reloaded detector artifact vs the eager detector, on the
    parity frames and on another batch and frame size; raises ParityError below the bar."""
    ious = []
    for batch in [frames[i:i + 2] for i in range(0, len(frames), 2)] + [second_frames(frames)]:
        ref = eager_detections(detector, batch, det_graph.max_detections,
                               det_graph.normalize_images)
        got_boxes, _ = run_loaded(loaded, device, batch)
        ious.append(matched_iou(ref["boxes"], ref["scores"], got_boxes))
    iou = float(min(ious))
    if iou < MIN_DETECTOR_IOU and not allow_failure:
        raise ParityError(f"torch detector artifact: matched IoU {iou:.4f} < "
                          f"{MIN_DETECTOR_IOU}; the torch artifacts were not written")
    return iou


def _check_torch_pose(loaded, device: torch.device, wrapper: TopDownPose, frames: np.ndarray,
                      boxes: np.ndarray, crop: tuple[int, int, float], name: str,
                      gate: ParityGate, allow_failure: bool = False) -> ParityReport:
    """The reloaded pose artifact vs DeepLabCut's eager CPU crop + fp32 model, on the parity
    frames and on another batch and frame size."""
    second = second_frames(frames)
    cases = [(frames[i:i + 2], boxes[i:i + 2]) for i in range(0, len(frames), 2)]
    cases.append((second, parity_boxes(second, boxes.shape[1], seed=1)))
    ref, got = [], []
    for f, bx in cases:
        ref.append(eager_top_down(wrapper.pose, f, bx, *crop).reshape(-1, 3))
        got.append(run_loaded(loaded, device, f, bx)[0].reshape(-1, 3))
    report = parity_report(np.concatenate(ref), np.concatenate(got),
                           frames=len(frames) + len(second), frame_size=frames.shape[1:3],
                           source="export parity frames and a smaller crop of them",
                           backend=name, gate=gate)
    return enforce(report, allow_failure, "the torch artifact was not written")


def add_top_down_torch_artifacts(bundle_dir: Path, det_graph: DetectorGraph, detector,
                                 wrapper: TopDownPose, frames: np.ndarray, boxes: np.ndarray,
                                 crop: tuple[int, int, float], precisions: tuple[str, ...], *,
                                 device: str = "cpu",
                                 tolerance_px: float = DEFAULT_TOLERANCE_PX,
                                 pcutoff: float = DEFAULT_PCUTOFF,
                                 allow_parity_failure: bool = False) -> None:
    """Adds checked torch artifacts of both graphs to a (staged) top-down bundle.

    Writes ``detector.fp32.torchscript.pt`` (graph ``detector_torch_fp32``, see
    :data:`DETECTOR_TORCH_PRECISION`) and per precision ``pose.<p>.torchscript.pt`` (graph
    ``pose_torch_<p>``, frames + boxes in) with ``parity.torch_<p>.json``, each reloaded and
    checked (detector: matched IoU vs the eager detector; pose: px vs the eager crop pipeline)
    before it is added; the manifest lists them like bottom-up artifacts. TorchScript only:
    torch.export cannot trace the crop's frame-size read (``torch._shape_as_tensor``).
    """
    from dlc_export.torch_export import (
        HalfPrecisionNetwork,
        save_checked_artifact,
        torch_artifact_file,
    )
    from dlc_runtime.backends.torch_backend import torch_graph_name

    method = "torchscript"
    check_artifact_options(precisions, None)
    device_t = torch.device(device)
    bundle = Bundle.load(bundle_dir)
    max_batch = bundle.input.batch.max
    graphs = bundle.manifest.graphs

    def listed(graph: str, precision: str, file: str) -> None:
        spec = graphs[graph]
        graphs[torch_graph_name(precision, graph)] = GraphSpec(
            file=file, opset=None,
            inputs=[TensorSpec(t.name, t.dtype, list(t.shape)) for t in spec.inputs],
            outputs=[TensorSpec(t.name, t.dtype, list(t.shape)) for t in spec.outputs])

    det_file = torch_artifact_file(DETECTOR_TORCH_PRECISION, method, graph="detector")
    det_iou = save_checked_artifact(
        on_device(det_graph, device_t), (torch.from_numpy(frames[:2]).to(device_t),),
        bundle_dir / det_file,
        lambda loaded: _check_torch_detector(loaded, device_t, detector, det_graph, frames,
                                             allow_parity_failure),
        method=method, device=device, max_batch=max_batch, what="of the detector")
    listed("detector", DETECTOR_TORCH_PRECISION, det_file)
    for precision in precisions:
        module = on_device(wrapper, device_t)
        if precision == "fp16":
            # A copy whose pose network runs in half (crop and decoding stay fp32); the
            # caller's wrapper keeps its fp32 pose, the reference of the check.
            module = copy.deepcopy(module)
            module.pose.model = HalfPrecisionNetwork(module.pose.model)
        file = torch_artifact_file(precision, method)
        name = f"torch-{method}-{precision}-{device_t.type}"
        report = save_checked_artifact(
            module.eval(), (torch.from_numpy(frames[:2]).to(device_t),
                            torch.from_numpy(boxes[:2]).to(device_t)), bundle_dir / file,
            lambda loaded: _check_torch_pose(
                loaded, device_t, wrapper, frames, boxes, crop, name,
                ParityGate.for_precision(precision, tolerance_px, pcutoff),
                allow_parity_failure),
            method=method, device=device, max_batch=max_batch, what=f"of the pose graph "
                                                                     f"({precision})")
        _write_parity(bundle_dir / f"parity.torch_{precision}.json", report, det_iou)
        listed("pose", precision, file)
    write_manifest(bundle_dir, bundle.manifest)  # fills the new entries' sha256


# -- TensorRT --------------------------------------------------------------------------------

#: Detector IoU gates of reduced-precision engines (fp32 engines use MIN_DETECTOR_IOU): stated
#: looser bounds like the pose gates (parity.REDUCED_PRECISION_TOLERANCE_PX), not measured on a GPU yet.
ENGINE_MIN_DETECTOR_IOU = {"fp16": 0.95, "int8": 0.9}
#: Engine files of a top-down bundle, by graph.
ENGINE_FILES = {"detector": "detector.engine", "pose": "pose.engine"}


def calibration_boxes(bundle_dir: Path, frames: np.ndarray, m: int, threshold: float
                      ) -> np.ndarray:
    """Boxes for INT8 calibration of the pose engine: the bundle's own detector (onnxruntime)
    on the calibration frames, top ``m`` per frame as the runtime picks them, so the pose
    network is calibrated on the crops it will see."""
    from dlc_runtime.pipelines.top_down import select_boxes

    session = ort_session(bundle_dir / "detector.onnx")
    chosen = []
    for start in range(0, len(frames), 8):
        boxes, scores = session.run(["boxes", "scores"], {"images": frames[start:start + 8]})
        chosen.append(select_boxes(boxes, scores, m, threshold)[0])
    return np.concatenate(chosen)


def check_top_down_engines(bundle_dir: Path, precision: str, det_graph: DetectorGraph,
                           detector, wrapper: TopDownPose, frames: np.ndarray,
                           crop: tuple[int, int, float], frame_size: tuple[int, int],
                           source: str, tolerance_px: float,
                           pcutoff: float = DEFAULT_PCUTOFF) -> tuple[ParityReport, float]:
    """The engines just built vs the eager models, as the ONNX check: detector matched IoU,
    pose px on the parity boxes; written to ``parity.tensorrt_<precision>.json``.

    The engines' profile is built for ``frame_size``: parity frames of another size are
    resized to it first (both sides see the same frames, so the comparison stays exact).
    """
    from dlc_runtime.backends import make_backend

    height, width = (int(v) for v in frame_size)
    if tuple(frames.shape[1:3]) != (height, width):
        frames = np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA)
                           for f in frames])
    bundle = Bundle.load(bundle_dir)
    boxes = parity_boxes(frames, int(bundle.manifest.decoder["max_individuals"]))
    ref, got, ious = [], [], []
    with make_backend(bundle, "tensorrt", device="cuda", graph="detector") as det_engine, \
            make_backend(bundle, "tensorrt", device="cuda", graph="pose") as pose_engine:
        for start in range(0, len(frames), 2):
            f, bx = frames[start:start + 2], boxes[start:start + 2]
            expected = eager_detections(detector, f, det_graph.max_detections,
                                        det_graph.normalize_images)
            ious.append(matched_iou(expected["boxes"], expected["scores"],
                                    det_engine.run(f)["boxes"]))
            ref.append(eager_top_down(wrapper.pose, f, bx, *crop))
            got.append(pose_engine.run(f, boxes=bx)["keypoints"])
    det_iou = float(min(ious))
    min_iou = ENGINE_MIN_DETECTOR_IOU.get(precision, MIN_DETECTOR_IOU)
    report = parity_report(np.concatenate(ref), np.concatenate(got), frames=len(frames),
                           frame_size=(height, width), source=source,
                           backend=f"tensorrt-{precision}",
                           gate=ParityGate.for_precision(precision, tolerance_px, pcutoff))
    report.passed = report.passed and det_iou >= min_iou
    _write_parity(bundle_dir / f"parity.tensorrt_{precision}.json", report, det_iou, min_iou)
    return report, det_iou


def add_top_down_engines(bundle_dir: Path, precision: str, frame_size: tuple[int, int],
                         calibration_videos: tuple[Path, ...] = (),
                         box_score_threshold: float = DEFAULT_BOX_SCORE_THRESHOLD) -> None:
    """Builds ``detector.engine`` and ``pose.engine`` (frames + boxes (B, M, 4) profiles) for
    this machine's GPU and records both fingerprints in the manifest's ``engines``."""
    from dlc_export.export import TIMING_CACHE
    from dlc_export.tensorrt_build import (add_engine_to_bundle, calibration_frames_from_videos,
                                           export_tensorrt)

    frames = calibration_frames_from_videos(calibration_videos) if precision == "int8" else None
    boxes = None
    if frames is not None:
        m = int(Bundle.load(bundle_dir).manifest.decoder["max_individuals"])
        boxes = {"boxes": calibration_boxes(bundle_dir, frames, m, box_score_threshold)}
    TIMING_CACHE.parent.mkdir(parents=True, exist_ok=True)
    for graph, file in ENGINE_FILES.items():
        entry = export_tensorrt(bundle_dir, precision=precision, frame_size=frame_size,
                                engine_name=file, graph=graph, timing_cache_path=TIMING_CACHE,
                                calibration_frames=frames,
                                calibration_inputs=boxes if graph == "pose" else None)
        add_engine_to_bundle(bundle_dir, entry)


def _write_parity(path: Path, report: ParityReport, det_iou: float,
                  min_iou: float = MIN_DETECTOR_IOU) -> None:
    import json
    from dataclasses import asdict

    data = asdict(report)
    data["pose_reference"] = "DeepLabCut CPU crop (float resize) -> PyTorch model -> map back"
    data["detector_min_matched_iou"] = det_iou
    data["detector_min_iou_required"] = min_iou
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _manifest(cfg: dict, scorer: str, individuals: list[str], m: int,
              crop: tuple[int, int, float], max_detections: int, threshold: float, opset: int,
              batch_range: BatchRange, snapshot_path: Path, detector_snapshot: Path | None,
              random_pose: bool, detector_input: dict) -> Manifest:
    metadata = cfg["metadata"]
    k = len(metadata["bodyparts"])
    predictor = cfg["model"]["heads"]["bodypart"]["predictor"]
    frames_spec = TensorSpec("images", "uint8", ["batch", "height", "width", 3])
    return Manifest(
        task=Task.TOP_DOWN.snake_name, scorer=scorer,
        bodyparts=list(metadata["bodyparts"]), unique_bodyparts=[],
        individuals=individuals, multi_animal=len(individuals) > 1,
        input=InputSpec(batch=batch_range),
        decoder={"type": "top_down", "crop": {"width": crop[0], "height": crop[1]},
                 "detector_input": dict(detector_input),
                 "crop_margin": crop[2], "max_individuals": m,
                 "box_score_threshold": float(threshold), "max_detections": max_detections,
                 "pose_predictor": dict(predictor)},
        graphs={
            "detector": GraphSpec(
                file="detector.onnx", opset=opset, inputs=[frames_spec],
                outputs=[TensorSpec("boxes", "float32", ["batch", max_detections, 4]),
                         TensorSpec("scores", "float32", ["batch", max_detections])]),
            "pose": GraphSpec(
                file="pose.onnx", opset=opset,
                inputs=[frames_spec, TensorSpec("boxes", "float32", ["batch", m, 4])],
                outputs=[TensorSpec("keypoints", "float32", ["batch", m, k, 3])]),
        },
        source={"snapshot": None if random_pose else str(snapshot_path.resolve()),
                "snapshot_sha256": None if random_pose else sha256_file(snapshot_path),
                "detector_snapshot": str(Path(detector_snapshot).resolve())
                if detector_snapshot else None,
                "detector_snapshot_sha256": sha256_file(detector_snapshot)
                if detector_snapshot else None,
                "net_type": cfg.get("net_type"),
                "detector_type": cfg["detector"]["model"].get("type"),
                "config": "pytorch_config.yaml"},
        parity="parity.json",
    )
