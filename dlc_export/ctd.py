"""Conditional top-down (CTD, "BUCTD") export: a bottom-up conditions bundle plus a pose graph.

A CTD pose model reads, per individual, the keypoints a bottom-up model predicted (its
"conditions"). The bundle therefore nests a complete bottom-up bundle in ``conditions/`` (written
by :func:`dlc_export.export.export_bundle` from the shuffle named by the config's
``inference.conditions``) and adds ``pose.onnx``:

``images`` uint8 (B, H, W, 3) + ``conditions`` float32 (B, M, K, 3) (x, y frame pixels,
likelihood) -> ``keypoints`` (B, M, K, 3) in frame pixels.

Inside the graph, per individual, as DeepLabCut 3's conditional top-down preprocessor does: the
box is the span of the conditions with likelihood > 0, plus ``data.bbox_margin`` on each side,
clipped to the frame; the crop is DeepLabCut's ``top_down_crop`` of that box (``data.inference.
top_down_crop``: ``margin`` default 0, ``crop_with_context`` default false for CTD, i.e. only
the box's pixels, zero-padded to the crop's aspect ratio), bilinear resize in cv2's convention;
the conditions move into crop pixels (``(xy - offset) / scale``) and go to the model as
``cond_kpts``; keypoints come back as ``crop * scale + offset``. Which individuals are handed
over (and in which order) is decided on the host by the runtime (``dlc_runtime/pipelines/
ctd.py``), with DeepLabCut's rules.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dlc_export.onnx_export import DEFAULT_OPSET, ExportError, export_onnx
from dlc_export.parity import (
    DEFAULT_TOLERANCE_PX,
    ParityError,
    ParityGate,
    ParityReport,
    parity_report,
    project_pcutoff,
)
from dlc_export.top_down import PoseOnCrops, TopDownCrop, ort_session
from dlc_export.wrappers import NormalizeFrames, pad_divisor_from_config
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
from dlc_train.models.loading import build_model_from_snapshot
from dlc_train.models.model import PoseModel
from dlc_train.task import Task

if TYPE_CHECKING:  # export.py imports this module lazily; no cycle at run time
    from dlc_export.export import ExportResult

log = logging.getLogger(__name__)

#: Folder of the nested bottom-up bundle inside a CTD bundle.
CONDITIONS_DIR = "conditions"
#: DeepLabCut's FilterLowConfidencePoses: an individual whose best condition keypoint scores
#: below this is not handed to the CTD model.
MIN_CONDITION_SCORE = 0.05

# data.inference transforms the pose graph does not reproduce (it normalizes crops and applies
# auto_padding only): a config asking for them is refused rather than exported wrong.
_UNSUPPORTED_TRANSFORMS = ("resize", "longest_max_size", "hist_eq", "grayscale",
                           "scale_to_unit_range")


@dataclass(frozen=True)
class CtdCrop:
    """How a CTD config crops: ``data.bbox_margin`` around the conditions, then DeepLabCut's
    ``top_down_crop`` (width, height, its own ``margin``, ``crop_with_context``)."""

    width: int
    height: int
    bbox_margin: float
    crop_margin: float = 0.0
    with_context: bool = False


def ctd_crop_settings(cfg: dict) -> CtdCrop:
    """The crop of a CTD pytorch_config, with DeepLabCut's defaults for CTD inference."""
    data = cfg.get("data") or {}
    crop = (data.get("inference") or {}).get("top_down_crop") or {}
    return CtdCrop(width=int(crop.get("width", 256)), height=int(crop.get("height", 256)),
                   bbox_margin=float(data.get("bbox_margin", 20)),
                   crop_margin=float(crop.get("margin", 0) or 0),
                   with_context=bool(crop.get("crop_with_context", False)))


# -- the graph ---------------------------------------------------------------------------------

def condition_boxes(conditions: torch.Tensor, frame_hw: torch.Tensor, margin: float
                    ) -> torch.Tensor:
    """DeepLabCut's ``bbox_from_keypoints``: (B, M, K, 3) -> x1, y1, x2, y2 (B, M, 4).

    Keypoints with likelihood > 0 span the box, ``margin`` is added on each side and the box is
    clipped to the frame. A slot without such a keypoint gets a unit box (kept finite; the host
    never hands such a slot over).
    """
    visible = conditions[..., 2] > 0
    x, y = conditions[..., 0], conditions[..., 1]
    big = torch.full_like(x, 1e9)
    x1 = torch.where(visible, x, big).amin(dim=-1)
    y1 = torch.where(visible, y, big).amin(dim=-1)
    x2 = torch.where(visible, x, -big).amax(dim=-1)
    y2 = torch.where(visible, y, -big).amax(dim=-1)
    any_visible = visible.any(dim=-1)
    zero, one = torch.zeros_like(x1), torch.ones_like(x1)
    x1 = torch.where(any_visible, x1 - margin, zero)
    y1 = torch.where(any_visible, y1 - margin, zero)
    x2 = torch.where(any_visible, x2 + margin, one)
    y2 = torch.where(any_visible, y2 + margin, one)
    h, w = frame_hw[0], frame_hw[1]
    x1, x2 = torch.minimum(x1.clamp(min=0.0), w), torch.minimum(x2.clamp(min=0.0), w)
    y1, y2 = torch.minimum(y1.clamp(min=0.0), h), torch.minimum(y2.clamp(min=0.0), h)
    return torch.stack((x1, y1, x2, y2), dim=-1)


class ContextFreeCrop(nn.Module):
    """DeepLabCut's ``top_down_crop`` with ``crop_with_context=False``, in the graph.

    frames (B, 3, H, W) float + boxes (B, M, 4) x1y1x2y2 -> crops (B*M, 3, out_h, out_w),
    offsets and scales (B, M, 2) with ``frame = crop * scale + offset``.

    DeepLabCut rounds the box (+ margin) to whole pixels, keeps only the part inside the frame,
    then zero-pads it to the output's aspect ratio (its integer padding formula, kept as it is:
    exact for square crops), and resizes that canvas (cv2 bilinear, half-pixel centres, border
    clamped). The canvas is a window of the frame where only the box's pixels are non-zero, so
    each output pixel is the bilinear mix of four frame pixels, each counted only when it lies
    in the box: four nearest-pixel ``grid_sample`` reads, weighted.
    """

    def __init__(self, out_w: int, out_h: int, margin: float = 0.0):
        super().__init__()
        self.out_w, self.out_h, self.margin = int(out_w), int(out_h), float(margin)
        self.register_buffer("jx", torch.arange(self.out_w, dtype=torch.float32) + 0.5,
                             persistent=False)
        self.register_buffer("jy", torch.arange(self.out_h, dtype=torch.float32) + 0.5,
                             persistent=False)

    def windows(self, boxes: torch.Tensor, frame_hw: torch.Tensor):
        """(offset, size, content lo, content hi): canvas window and the box part of the frame
        it shows, all (B, M, 2) x, y in frame pixels."""
        w = boxes[..., 2] - boxes[..., 0]
        h = boxes[..., 3] - boxes[..., 1]
        cx, cy = boxes[..., 0] + w / 2, boxes[..., 1] + h / 2
        w, h = w + 2 * self.margin, h + 2 * self.margin
        x1, x2 = torch.round(cx - w / 2), torch.round(cx + w / 2)
        y1, y2 = torch.round(cy - h / 2), torch.round(cy + h / 2)
        fh, fw = frame_hw[0], frame_hw[1]
        pad_left, pad_top = F.relu(-x1), F.relu(-y1)
        pad_right, pad_bottom = F.relu(x2 - fw), F.relu(y2 - fh)
        x1, y1 = x1.clamp(min=0.0), y1.clamp(min=0.0)
        x2, y2 = torch.minimum(x2, fw), torch.minimum(y2, fh)
        cw, ch = (x2 - x1).clamp(min=1.0), (y2 - y1).clamp(min=1.0)  # finite on empty slots
        ratio = self.out_w / self.out_h
        # DeepLabCut: too wide -> pad top and bottom by int(w - h * r) // 2 each; too tall ->
        # pad left and right by int(h - w / r) // 2 each (only one of them is positive).
        pad_rows = torch.floor(torch.floor(F.relu(cw - ch * ratio)) / 2)
        pad_cols = torch.floor(torch.floor(F.relu(ch - cw / ratio)) / 2)
        pad_left, pad_right = pad_left + pad_cols, pad_right + pad_cols
        pad_top, pad_bottom = pad_top + pad_rows, pad_bottom + pad_rows
        offset = torch.stack((x1 - pad_left, y1 - pad_top), dim=-1)
        size = torch.stack((cw + pad_left + pad_right, ch + pad_top + pad_bottom), dim=-1)
        return offset, size, torch.stack((x1, y1), dim=-1), torch.stack((x2, y2), dim=-1)

    def _taps(self, j: torch.Tensor, scale: torch.Tensor, size: torch.Tensor,
              offset: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor):
        """One axis: the two frame pixels each output pixel reads and their weights (zero for
        pixels outside the box). j: (n,); the rest (B, M, 1) -> (B, M, n) each."""
        s = torch.minimum((j * scale - 0.5).clamp(min=0.0), size - 1)  # cv2 INTER_LINEAR
        i0 = torch.floor(s)
        i1 = torch.minimum(i0 + 1, size - 1)
        frac = s - i0
        p0, p1 = i0 + offset, i1 + offset
        w0 = (1 - frac) * ((p0 >= lo) & (p0 < hi)).to(s.dtype)
        w1 = frac * ((p1 >= lo) & (p1 < hi)).to(s.dtype)
        return p0, p1, w0, w1

    def forward(self, frames: torch.Tensor, boxes: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, m = boxes.shape[0], boxes.shape[1]
        hw = torch._shape_as_tensor(frames)[2:4].to(frames.dtype)
        offset, size, lo, hi = self.windows(boxes, hw)
        scale = size / size.new_tensor([self.out_w, self.out_h])
        x0, x1, wx0, wx1 = self._taps(self.jx, scale[..., :1], size[..., :1], offset[..., :1],
                                      lo[..., :1], hi[..., :1])
        y0, y1, wy0, wy1 = self._taps(self.jy, scale[..., 1:], size[..., 1:], offset[..., 1:],
                                      lo[..., 1:], hi[..., 1:])
        # Pixel centres in grid_sample's normalized coordinates (align_corners=False).
        gx = [(2 * x + 1) / hw[1] - 1 for x in (x0, x1)]
        gy = [(2 * y + 1) / hw[0] - 1 for y in (y0, y1)]
        shape = (b, m, self.out_h, self.out_w)
        grids, weights = [], []
        for gyi, wyi in zip(gy, (wy0, wy1)):
            for gxi, wxi in zip(gx, (wx0, wx1)):
                grids.append(torch.stack((gxi[:, :, None, :].expand(shape),
                                          gyi[:, :, :, None].expand(shape)), dim=-1))
                weights.append(wyi[:, :, :, None] * wxi[:, :, None, :])
        # The four taps of every crop in one nearest-pixel read: (B, 4*M*out_h, out_w, 2).
        grid = torch.stack(grids, dim=1).reshape(b, 4 * m * self.out_h, self.out_w, 2)
        taps = F.grid_sample(frames, grid, mode="nearest", padding_mode="zeros",
                             align_corners=False)
        taps = taps.reshape(b, 3, 4, m, self.out_h, self.out_w)
        weight = torch.stack(weights, dim=1)[:, None]  # (B, 1, 4, M, out_h, out_w)
        crops = (taps * weight).sum(dim=2).transpose(1, 2)  # (B, M, 3, out_h, out_w)
        return crops.reshape(b * m, 3, self.out_h, self.out_w), offset, scale


class CondPoseOnCrops(PoseOnCrops):
    """normalized crops (N, 3, h, w) + conditions (N, K, 3) in crop pixels -> keypoints
    (N, K, 3) in crop pixels (model with ``cond_kpts`` + predictor).

    Args:
        pad_divisors: (height, width) DeepLabCut's ``auto_padding`` (reflect, bottom/right).
    """

    def forward(self, crops: torch.Tensor, conditions: torch.Tensor) -> torch.Tensor:
        return self.decode(self.model(self.pad(crops), cond_kpts=conditions)[self.head])


class CondTopDownPose(nn.Module):
    """images (B, H, W, 3) uint8 + conditions (B, M, K, 3) frame pixels -> keypoints
    (B, M, K, 3) frame pixels."""

    def __init__(self, model: PoseModel, crop: CtdCrop, pad_divisors: tuple[int, int] = (1, 1)):
        super().__init__()
        self.settings = crop
        self.normalize = NormalizeFrames()
        self.crop = TopDownCrop(crop.width, crop.height, crop.crop_margin) if crop.with_context \
            else ContextFreeCrop(crop.width, crop.height, crop.crop_margin)
        self.pose = CondPoseOnCrops(model, pad_divisors=pad_divisors)
        # A constant K: traced from the input's shape it would leave the condition encoder's
        # blur kernels without a static shape, which the ONNX export cannot convert.
        self.num_keypoints = int(model.backbone.cond_enc.num_joints)

    def forward(self, images: torch.Tensor, conditions: torch.Tensor) -> torch.Tensor:
        # Cast before permuting (TensorRT), crop raw pixels (zero padding = black pixels, as
        # DeepLabCut pads the uint8 image), then normalize the small crops.
        frames = images.to(torch.float32).permute(0, 3, 1, 2)
        conditions = conditions.to(torch.float32)
        hw = torch._shape_as_tensor(frames)[2:4].to(torch.float32)
        boxes = condition_boxes(conditions, hw, self.settings.bbox_margin)
        crops, offset, scale = self.crop(frames, boxes)
        crops = (crops - self.normalize.mean) * self.normalize.scale
        b, m, k = conditions.shape[0], conditions.shape[1], self.num_keypoints
        local = (conditions[..., :2] - offset[:, :, None, :]) / scale[:, :, None, :]
        local = torch.cat((local, conditions[..., 2:3]), dim=-1).reshape(-1, k, 3)
        kp = self.pose(crops, local).reshape(b, m, k, 3)
        xy = kp[..., :2] * scale[:, :, None, :] + offset[:, :, None, :]
        return torch.cat((xy, kp[..., 2:]), dim=-1)


# -- the eager reference: DeepLabCut's CPU steps, then the PyTorch model ----------------------

def deeplabcut_condition_box(conditions: np.ndarray, image_h: int, image_w: int,
                             margin: float) -> np.ndarray:
    """DeepLabCut's ``bbox_from_keypoints`` for one individual: (K, 3) -> x, y, w, h."""
    pts = conditions[conditions[:, 2] > 0, :2]
    lo, hi = np.nanmin(pts, axis=0) - margin, np.nanmax(pts, axis=0) + margin
    x1, x2 = np.clip([lo[0], hi[0]], 0, image_w)
    y1, y2 = np.clip([lo[1], hi[1]], 0, image_h)
    return np.array([x1, y1, x2 - x1, y2 - y1])


def deeplabcut_ctd_crop(image: np.ndarray, box: np.ndarray, out_w: int, out_h: int,
                        margin: float = 0.0, with_context: bool = False
                        ) -> tuple[np.ndarray, tuple[float, float], tuple[float, float]]:
    """DeepLabCut 3's ``top_down_crop`` (``center_padding=False``) of an x, y, w, h box.

    Differs from DeepLabCut in one way only: the resize runs on float32 pixels (DeepLabCut
    resizes uint8), so the reference measures the graph rather than uint8 rounding.
    """
    img_h, img_w = image.shape[:2]
    x, y, w, h = (float(v) for v in box)
    cx, cy = x + w / 2, y + h / 2
    w, h = w + 2 * margin, h + 2 * margin
    ratio = out_w / out_h
    if with_context:
        if w / h > ratio:
            h = w / ratio
        elif w / h < ratio:
            w = h * ratio
    x1, y1 = round(cx - w / 2), round(cy - h / 2)
    x2, y2 = round(cx + w / 2), round(cy + h / 2)
    pad_left, pad_top = max(-x1, 0), max(-y1, 0)
    pad_right, pad_bottom = max(x2 - img_w, 0), max(y2 - img_h, 0)
    x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, img_w), min(y2, img_h)
    w, h = x2 - x1, y2 - y1
    if not with_context:
        if w / h > ratio:
            pad = int(w - h * ratio) // 2
            pad_top, pad_bottom = pad_top + pad, pad_bottom + pad
        elif w / h < ratio:
            pad = int(h - w / ratio) // 2
            pad_left, pad_right = pad_left + pad, pad_right + pad
    canvas = np.zeros((h + pad_top + pad_bottom, w + pad_left + pad_right, 3), np.float32)
    canvas[pad_top:pad_top + h, pad_left:pad_left + w] = image[y1:y2, x1:x2]
    crop = cv2.resize(canvas, (out_w, out_h), interpolation=cv2.INTER_LINEAR)
    return crop, (float(x1 - pad_left), float(y1 - pad_top)), \
        (canvas.shape[1] / out_w, canvas.shape[0] / out_h)


@torch.no_grad()
def eager_ctd(pose: CondPoseOnCrops, frames: np.ndarray, conditions: np.ndarray,
              crop: CtdCrop) -> np.ndarray:
    """DeepLabCut's CTD steps on the CPU for every slot: box from the conditions, crop,
    conditions into crop pixels, PyTorch model, map back.

    Args:
        frames: (B, H, W, 3) uint8; conditions: (B, M, K, 3) frame pixels, every slot with at
            least one keypoint of likelihood > 0.

    Returns:
        (B, M, K, 3) keypoints in frame pixels.
    """
    norm = NormalizeFrames()
    out = []
    for frame, frame_conditions in zip(frames, conditions):
        crops, offsets, scales = [], [], []
        for cond in frame_conditions:
            box = deeplabcut_condition_box(cond, frame.shape[0], frame.shape[1],
                                           crop.bbox_margin)
            image, offset, scale = deeplabcut_ctd_crop(frame, box, crop.width, crop.height,
                                                       crop.crop_margin, crop.with_context)
            crops.append(image)
            offsets.append(offset)
            scales.append(scale)
        offsets_a, scales_a = np.array(offsets)[:, None], np.array(scales)[:, None]
        local = frame_conditions.astype(np.float64).copy()
        local[..., :2] = (local[..., :2] - offsets_a) / scales_a
        x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2)
        x = (x - norm.mean) * norm.scale
        kp = pose(x, torch.from_numpy(local.astype(np.float32))).numpy()
        xy = kp[..., :2] * scales_a + offsets_a
        out.append(np.concatenate((xy, kp[..., 2:]), axis=-1))
    return np.stack(out).astype(np.float32)


def parity_conditions(frames: np.ndarray, m: int, k: int, seed: int = 0) -> np.ndarray:
    """Conditions for the parity check: compact and spread animals, one across the frame's
    corner, a flat and a tall one, some keypoints hidden (likelihood 0)."""
    rng = np.random.default_rng(seed)
    b, h, w = frames.shape[:3]
    out = np.zeros((b, m, k, 3), np.float32)
    for i in range(b):
        for j in range(m):
            kind = (i * m + j) % 4
            span = rng.uniform(0.15, 0.45, 2) * (w, h)
            if kind == 1:    # across the top-left corner
                centre = -0.1 * span
            elif kind == 2:  # flat, near the bottom edge
                span = (0.5 * w, 0.08 * h)
                centre = (rng.uniform(0.3, 0.7) * w, 0.95 * h)
            elif kind == 3:  # tall and thin
                span = (0.06 * w, 0.5 * h)
                centre = (rng.uniform(0.2, 0.8) * w, 0.5 * h)
            else:
                centre = rng.uniform(0.3, 0.7, 2) * (w, h)
            xy = np.asarray(centre) + (rng.uniform(-0.5, 0.5, (k, 2)) * span)
            score = rng.uniform(0.2, 1.0, k)
            if k > 2:
                score[rng.integers(0, k)] = 0.0  # a hidden keypoint: no box, not drawn
            out[i, j, :, :2], out[i, j, :, 2] = xy, score
    return out


# -- finding the conditions model ------------------------------------------------------------

_SHUFFLE = re.compile(r"^(?P<stem>.*-trainset\d+)shuffle(?P<n>\d+)$")


def find_conditions_model(cfg: dict, pytorch_config_path: Path) -> tuple[Path, Path]:
    """(pytorch_config.yaml, snapshot) of the bottom-up model named by ``inference.conditions``.

    Accepts DeepLabCut's forms: ``{shuffle: N}`` with ``snapshot: name`` or ``snapshot_index: i``
    (default -1: the best snapshot, else the last), looked up beside the CTD shuffle in the same
    iteration folder (with ``trainset_index``: in the project, as DeepLabCut's loader does);
    or ``{config_path, snapshot_path}``. ``modelprefix`` is refused.
    """
    from dlc_export.project import list_snapshots

    where = str(pytorch_config_path)
    conditions = (cfg.get("inference") or {}).get("conditions")
    if conditions is None:
        raise ExportError(f"{where}: inference.conditions is not set: a CTD bundle needs the "
                          "bottom-up model that gives its conditions; set inference.conditions "
                          "to {shuffle: N} of a bottom-up shuffle, or pass conditions_config= "
                          "and conditions_snapshot=")
    if isinstance(conditions, (str, Path)):
        raise ExportError(f"{where}: inference.conditions is a predictions file ({conditions}); "
                          "a bundle analyzes new videos, so it needs the bottom-up model "
                          "itself: set inference.conditions to {shuffle: N} of a bottom-up "
                          "shuffle, or pass conditions_config= and conditions_snapshot=")
    if not isinstance(conditions, dict):
        raise ExportError(f"{where}: inference.conditions must be {{shuffle: N}} (with snapshot "
                          f"or snapshot_index) or {{config_path, snapshot_path}}, got "
                          f"{conditions!r}")
    if conditions.get("config_path") and conditions.get("snapshot_path"):
        return Path(conditions["config_path"]), Path(conditions["snapshot_path"])
    if "shuffle" not in conditions:
        raise ExportError(f"{where}: inference.conditions {conditions!r} names no shuffle")
    if conditions.get("modelprefix"):
        raise ExportError(f"{where}: inference.conditions uses modelprefix "
                          f"{conditions['modelprefix']!r}, which this exporter does not look up; "
                          "pass conditions_config= and conditions_snapshot=")
    shuffle = int(conditions["shuffle"])
    if conditions.get("trainset_index") is not None:
        train = _project_train_folder(cfg, pytorch_config_path, shuffle,
                                      int(conditions["trainset_index"]))
    else:  # DeepLabCut's default trainset_index 0 is the CTD shuffle's own, in practice
        train = _shuffle_train_folder(pytorch_config_path, shuffle)
    if conditions.get("snapshot"):
        snapshot = train / str(conditions["snapshot"])
        if not snapshot.is_file():
            raise ExportError(f"{where}: conditions snapshot {snapshot} does not exist")
        return train / "pytorch_config.yaml", snapshot
    snapshots = list_snapshots(train)
    if not snapshots:
        raise ExportError(f"{where}: no snapshot-*.pt in {train}: train the conditions shuffle "
                          f"{shuffle} first")
    index = conditions.get("snapshot_index")
    index = -1 if index is None else int(index)
    try:
        return train / "pytorch_config.yaml", snapshots[index]
    except IndexError:
        raise ExportError(f"{where}: conditions snapshot_index {index} is out of range: {train} "
                          f"has {len(snapshots)} snapshots") from None


def _project_train_folder(cfg: dict, pytorch_config_path: Path, shuffle: int,
                          trainset_index: int) -> Path:
    """The train folder of (shuffle, trainset_index) of the CTD model's project."""
    from dlc_export.export import _project_config
    from dlc_train.data.dlcloader import DLCLoader
    from dlc_train.data.project import ProjectError

    project = _project_config(cfg, pytorch_config_path)
    if project is None:
        raise ExportError(f"{pytorch_config_path}: inference.conditions names trainset_index "
                          f"{trainset_index}, but the project's config.yaml was not found; pass "
                          "conditions_config= and conditions_snapshot=")
    try:
        loader = DLCLoader(Path(project["project_path"]) / "config.yaml", shuffle=shuffle,
                           trainset_index=trainset_index)
        train = loader.train_folder
    except (ProjectError, OSError, ValueError, KeyError) as err:
        raise ExportError(f"{pytorch_config_path}: inference.conditions (shuffle {shuffle}, "
                          f"trainset_index {trainset_index}): {err}") from None
    if not (train / "pytorch_config.yaml").is_file():
        raise ExportError(f"{pytorch_config_path}: the conditions shuffle {shuffle} was not found "
                          f"({train / 'pytorch_config.yaml'} is missing)")
    return train


def _shuffle_train_folder(pytorch_config_path: Path, shuffle: int) -> Path:
    """``.../iteration-i/<Task><date>-trainset<p>shuffle<shuffle>/train`` next to the CTD one."""
    own = pytorch_config_path.resolve().parent.parent  # <...>shuffleN (…/train is below it)
    iteration = own.parent
    match = _SHUFFLE.match(own.name)
    candidates = []
    if match:
        candidates.append(iteration / f"{match['stem']}shuffle{shuffle}")
    candidates.extend(sorted(iteration.glob(f"*-trainset*shuffle{shuffle}")))
    for folder in candidates:
        if (folder / "train" / "pytorch_config.yaml").is_file():
            return folder / "train"
    raise ExportError(f"{pytorch_config_path}: the conditions shuffle {shuffle} was not found in "
                      f"{iteration} (no *shuffle{shuffle}/train/pytorch_config.yaml); create and "
                      "train it, or pass conditions_config= and conditions_snapshot=")


# -- export ----------------------------------------------------------------------------------

def export_ctd_pose_onnx(module: CondTopDownPose, images: np.ndarray, conditions: np.ndarray,
                         path: str | Path, *, opset: int = DEFAULT_OPSET,
                         simplify: bool = True) -> Path:
    """Writes the two-input pose graph (dynamic batch and frame size; M and K fixed)."""
    return export_onnx(module, torch.from_numpy(np.ascontiguousarray(images)), path,
                       extra_inputs={"conditions": torch.from_numpy(
                           np.ascontiguousarray(conditions, np.float32))},
                       opset=opset, simplify=simplify,
                       what="ONNX export of the conditional top-down pose graph")


def _check_ctd_config(cfg: dict, where: str) -> None:
    metadata = cfg.get("metadata") or {}
    if not metadata.get("bodyparts"):
        raise ExportError(f"{where}: metadata.bodyparts is missing or empty")
    if Task.from_str(str(cfg.get("method", "bu"))) != Task.COND_TOP_DOWN:
        raise ExportError(f"{where}: method {cfg.get('method')!r} is not conditional top-down "
                          "('ctd'); use export_bundle")
    if metadata.get("unique_bodyparts"):
        raise ExportError(f"{where}: CTD models do not predict unique bodyparts")
    inference = (cfg.get("data") or {}).get("inference") or {}
    asked = [name for name in _UNSUPPORTED_TRANSFORMS if inference.get(name)]
    if inference.get("normalize_images") is False:
        asked.append("normalize_images: false")
    if asked:
        raise ExportError(f"{where}: data.inference sets {asked}, which the CTD pose graph "
                          "does not reproduce (it normalizes crops and applies auto_padding)")


def export_ctd_bundle(pytorch_config_path: str | Path, snapshot_path: str | Path,
                      output: str | Path | None = None, *,
                      conditions_config: str | Path | None = None,
                      conditions_snapshot: str | Path | None = None,
                      frames: Path | np.ndarray | None = None,
                      tolerance_px: float = DEFAULT_TOLERANCE_PX,
                      allow_parity_failure: bool = False, opset: int = DEFAULT_OPSET,
                      simplify: bool = True, max_batch: int = 64, batch: int | None = None,
                      max_individuals: int | None = None,
                      torch_precisions: tuple[str, ...] = (), device: str = "cpu",
                      tensorrt_precision: str | None = None,
                      frame_size: tuple[int, int] | None = None,
                      calibration_videos: tuple[Path, ...] = (),
                      input_size: tuple[int, int] | None = None,
                      overwrite: bool = False) -> ExportResult:
    """Exports a CTD shuffle and its bottom-up conditions model to one bundle.

    Args:
        pytorch_config_path: the CTD shuffle's pytorch_config.yaml (``method: ctd``).
        snapshot_path: the CTD ``snapshot-XXX.pt``.
        output: bundle folder (default as ``export_bundle``).
        conditions_config, conditions_snapshot: the bottom-up model giving the conditions;
            default: the one ``inference.conditions`` names (see
            :func:`find_conditions_model`). Given together.
        frames: parity frames (video, image folder or (n, H, W, 3) uint8 array), used for both
            graphs.
        tolerance_px: largest keypoint difference (pixels) the parity checks accept.
        allow_parity_failure: write the bundle even when a parity check fails.
        max_batch, batch: the batch range of both graphs (``BatchRange.for_export``).
        max_individuals: condition slots per frame (default: the config's individuals).
        torch_precisions: also add torch artifacts of both graphs ("fp32", "fp16"), see
            :mod:`dlc_export.ctd_artifacts`.
        device: where torch artifacts are traced and checked ("cuda" for fp16 on a GPU).
        tensorrt_precision: also build TensorRT engines of both graphs for this machine's GPU
            ("fp32", "fp16", "int8"; int8 calibrates on ``calibration_videos``).
        frame_size: (height, width) the engines' profiles are built for (default: the parity
            frames' size).
        input_size: the conditions (bottom-up) model's network size, as for bottom-up exports
            (letterbox inside its graph); the CTD pose network runs at its crop size anyway.
        overwrite: replace an earlier bundle at ``output`` (see ``export_bundle``).
    """
    from dlc_export.ctd_artifacts import (
        add_ctd_engines,
        add_ctd_torch_artifacts,
        check_ctd_engine,
    )
    from dlc_export.export import (
        ExportResult,
        _parity_frames,
        _project_config,
        default_bundle_dir,
        export_bundle,
        scorer_name,
        staged_bundle,
    )
    from dlc_export.top_down import check_artifact_options

    pytorch_config_path, snapshot_path = Path(pytorch_config_path), Path(snapshot_path)
    where = str(pytorch_config_path)
    cfg = read_config_as_dict(pytorch_config_path)
    _check_ctd_config(cfg, where)
    check_artifact_options(tuple(torch_precisions), tensorrt_precision)
    if (conditions_config is None) != (conditions_snapshot is None):
        raise ExportError("pass conditions_config and conditions_snapshot together (the "
                          "bottom-up model's pytorch_config.yaml and snapshot)")
    if conditions_config is None:
        conditions_config, conditions_snapshot = find_conditions_model(cfg, pytorch_config_path)
    conditions_config, conditions_snapshot = Path(conditions_config), Path(conditions_snapshot)
    for path in (conditions_config, conditions_snapshot):
        if not path.is_file():
            raise ExportError(f"conditions model file {path} does not exist")
    cond_cfg = read_config_as_dict(conditions_config)
    if Task.from_str(str(cond_cfg.get("method", "bu"))) != Task.BOTTOM_UP:
        raise ExportError(f"{conditions_config}: conditions must come from a bottom-up model "
                          f"(as in DeepLabCut), got method {cond_cfg.get('method')!r}")
    bodyparts = list(cfg["metadata"]["bodyparts"])
    if list((cond_cfg.get("metadata") or {}).get("bodyparts") or []) != bodyparts:
        raise ExportError(f"{conditions_config}: the conditions model's bodyparts "
                          f"{(cond_cfg.get('metadata') or {}).get('bodyparts')} differ from the "
                          f"CTD model's {bodyparts}")

    model = build_model_from_snapshot(cfg, snapshot_path)
    crop = ctd_crop_settings(cfg)
    wrapper = CondTopDownPose(model, crop, pad_divisor_from_config(cfg)).eval()
    individuals = list(cfg["metadata"].get("individuals") or ["individual_1"])
    m = int(max_individuals or len(individuals))

    project = _project_config(cfg, pytorch_config_path)
    scorer = scorer_name(cfg, snapshot_path, project)
    output = Path(output) if output is not None \
        else default_bundle_dir(project, snapshot_path, scorer)
    parity_frames, source = _parity_frames(frames, project)
    conditions = parity_conditions(parity_frames, m, len(bodyparts))
    # Both graphs' engines are built for one frame size: the nested export gets it explicitly.
    engine_size = tuple(frame_size or parity_frames.shape[1:3]) if tensorrt_precision else None

    with staged_bundle(output, overwrite) as staging:
        # The conditions model's own export builds and checks its torch artifacts and engine.
        nested = export_bundle(conditions_config, conditions_snapshot,
                               staging / CONDITIONS_DIR, frames=parity_frames,
                               tolerance_px=tolerance_px,
                               allow_parity_failure=allow_parity_failure, opset=opset,
                               simplify=simplify, max_batch=max_batch, batch=batch,
                               torch_precisions=tuple(torch_precisions), device=device,
                               tensorrt_precision=tensorrt_precision, frame_size=engine_size,
                               calibration_videos=calibration_videos, input_size=input_size)
        if nested.manifest.task != "bottom_up":
            raise ExportError(f"{conditions_config}: the conditions bundle is "
                              f"'{nested.manifest.task}', expected bottom_up")
        pose_path = export_ctd_pose_onnx(wrapper, parity_frames[:2], conditions[:2],
                                         staging / "pose.onnx", opset=opset, simplify=simplify)
        report = _parity(wrapper, pose_path, parity_frames, conditions, source, tolerance_px)
        write_ctd_parity(staging / "parity.json", report, f"{CONDITIONS_DIR}/parity.json")
        if not report.passed and not allow_parity_failure:
            raise ParityError(f"{report.summary()}; the bundle was not written "
                              "(allow_parity_failure writes it)")
        manifest = _manifest(cfg, scorer, individuals, m, crop, opset,
                             BatchRange.for_export(batch, max_batch), snapshot_path,
                             conditions_config, conditions_snapshot, nested.manifest)
        write_config(staging / "pytorch_config.yaml", cfg)
        write_manifest(staging, manifest)
        if torch_precisions:
            add_ctd_torch_artifacts(staging, wrapper, parity_frames, conditions,
                                    tuple(torch_precisions), device=device,
                                    tolerance_px=tolerance_px,
                                    pcutoff=project_pcutoff(project),
                                    allow_parity_failure=allow_parity_failure)
        if tensorrt_precision:
            add_ctd_engines(staging, tensorrt_precision, engine_size, calibration_videos)
            engine = check_ctd_engine(staging, tensorrt_precision, wrapper, parity_frames,
                                      engine_size, source, tolerance_px,
                                      project_pcutoff(project))
            if not engine.passed and not allow_parity_failure:
                raise ParityError(f"TensorRT {tensorrt_precision} pose engine: "
                                  f"{engine.summary()}; the bundle was not written "
                                  "(allow_parity_failure writes it)")
        manifest = Bundle.load(staging).manifest  # nested graph sha256s and artifacts read back
    log.info("conditional top-down bundle written to %s", output)
    return ExportResult(output, report, manifest)


def ctd_parity(wrapper: CondTopDownPose, run, cases: list[tuple[np.ndarray, np.ndarray]],
               source: str, backend: str, gate: ParityGate | float) -> ParityReport:
    """``run(frames, conditions) -> keypoints`` vs DeepLabCut's CPU steps + the PyTorch model,
    over ``cases`` of (frames (b, H, W, 3), conditions (b, M, K, 3)), two frames at a time."""
    ref, got = [], []
    for frames, conditions in cases:
        for start in range(0, len(frames), 2):
            f, c = frames[start:start + 2], conditions[start:start + 2]
            ref.append(eager_ctd(wrapper.pose, f, c, wrapper.settings).reshape(-1, 3))
            got.append(np.asarray(run(f, c), np.float32).reshape(-1, 3))
    return parity_report(np.concatenate(ref), np.concatenate(got),
                         frames=sum(len(f) for f, _ in cases),
                         frame_size=cases[0][0].shape[1:3], source=source, backend=backend,
                         gate=gate)


def _parity(wrapper: CondTopDownPose, pose_path: Path, frames: np.ndarray,
            conditions: np.ndarray, source: str, tolerance_px: float) -> ParityReport:
    """Pose graph on ONNX Runtime vs DeepLabCut's CPU steps + the PyTorch model."""
    session = ort_session(pose_path)

    def run(f: np.ndarray, c: np.ndarray) -> np.ndarray:
        return session.run(["keypoints"], {"images": f, "conditions": c})[0]

    return ctd_parity(wrapper, run, [(frames, conditions)], source, "onnxruntime-cpu",
                      tolerance_px)


def write_ctd_parity(path: Path, report: ParityReport, conditions_report: str) -> None:
    """``report`` as JSON, naming its reference and the nested bundle's report of the same
    artifact kind (``conditions_report``, relative to the CTD bundle)."""
    data = asdict(report)
    data["pose_reference"] = ("DeepLabCut CTD steps on the CPU (box from conditions, "
                              "top_down_crop with float resize, conditions to crop pixels) -> "
                              "PyTorch model -> map back; synthetic conditions")
    data["conditions_parity"] = conditions_report
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _manifest(cfg: dict, scorer: str, individuals: list[str], m: int, crop: CtdCrop,
              opset: int, batch_range: BatchRange, snapshot_path: Path, conditions_config: Path,
              conditions_snapshot: Path, nested: Manifest) -> Manifest:
    metadata = cfg["metadata"]
    k = len(metadata["bodyparts"])
    predictor = cfg["model"]["heads"]["bodypart"]["predictor"]
    frames_spec = TensorSpec("images", "uint8", ["batch", "height", "width", 3])
    nested_pose = nested.graphs["pose"]
    return Manifest(
        task=Task.COND_TOP_DOWN.snake_name, scorer=scorer,
        bodyparts=list(metadata["bodyparts"]), unique_bodyparts=[],
        individuals=individuals, multi_animal=True,
        input=InputSpec(batch=batch_range),
        decoder={"type": "cond_top_down", "conditions_bundle": CONDITIONS_DIR,
                 "crop": {"width": crop.width, "height": crop.height,
                          "margin": crop.crop_margin, "crop_with_context": crop.with_context},
                 "bbox_margin": crop.bbox_margin, "max_individuals": m,
                 "min_condition_score": MIN_CONDITION_SCORE,
                 "pose_predictor": dict(predictor)},
        graphs={
            # The nested bundle's pose graph, listed so that Bundle.load checks its sha256 and
            # a backend can be made for it (the pipeline's ``backend_graph``).
            "conditions": GraphSpec(file=f"{CONDITIONS_DIR}/{nested_pose.file}",
                                    opset=nested_pose.opset, inputs=list(nested_pose.inputs),
                                    outputs=list(nested_pose.outputs)),
            "pose": GraphSpec(
                file="pose.onnx", opset=opset,
                inputs=[frames_spec, TensorSpec("conditions", "float32", ["batch", m, k, 3])],
                outputs=[TensorSpec("keypoints", "float32", ["batch", m, k, 3])]),
        },
        source={"snapshot": str(snapshot_path.resolve()),
                "snapshot_sha256": sha256_file(snapshot_path),
                "conditions_config": str(conditions_config.resolve()),
                "conditions_snapshot": str(conditions_snapshot.resolve()),
                "conditions_snapshot_sha256": sha256_file(conditions_snapshot),
                "net_type": cfg.get("net_type"), "config": "pytorch_config.yaml"},
        parity="parity.json",
    )
