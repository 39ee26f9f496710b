"""A typed view of the ``pytorch_config.yaml`` sections an export reads.

Each key is parsed once, here, with DeepLabCut's defaults; tasks read attributes instead of
``(cfg.get(...) or {})`` chains. ``raw`` is the config as read (written into the bundle as it
is, and handed to ``dlc_train`` to build the model).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlc_export.errors import ExportError
from dlc_train.config import read_config_as_dict
from dlc_train.task import Task

#: data.inference transforms no exported graph reproduces (graphs normalize and auto-pad only):
#: a config asking for one is refused rather than exported wrong.
UNSUPPORTED_TRANSFORMS = ("resize", "longest_max_size", "hist_eq", "grayscale",
                          "scale_to_unit_range")


def _section(d: Any, key: str) -> dict:
    value = d.get(key) if isinstance(d, dict) else None
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class CropSettings:
    """``data.inference.top_down_crop``: the crop size, its ``margin`` (default 0) and
    ``crop_with_context`` (None when unset: top-down defaults to true, CTD to false)."""

    width: int = 256
    height: int = 256
    margin: float = 0.0
    with_context: bool | None = None


@dataclass(frozen=True)
class InferenceSettings:
    """``data.inference``: the pre-processing DeepLabCut applies before the network."""

    crop: CropSettings
    #: (height, width) divisors of ``auto_padding`` ((1, 1): none).
    pad_divisors: tuple[int, int]
    normalize_images: bool
    #: the transforms asked for that no graph reproduces (see UNSUPPORTED_TRANSFORMS).
    unsupported: tuple[str, ...]


@dataclass(frozen=True)
class PoseConfigView:
    path: Path
    raw: dict
    task: Task
    net_type: str | None
    bodyparts: list[str]
    unique_bodyparts: list[str]
    individuals: list[str]
    project_path: str | None
    heads: dict
    inference: InferenceSettings
    #: ``data.bbox_margin``: keypoints -> box margin (CTD conditions; DeepLabCut's default 20).
    bbox_margin: float
    detector_model: dict | None
    detector_normalizes: bool
    #: ``inference.conditions`` as written (CTD).
    conditions: Any

    @property
    def where(self) -> str:
        return str(self.path)

    @property
    def predictor(self) -> dict:
        """The bodypart head's predictor section."""
        return _section(_section(self.heads, "bodypart"), "predictor")

    @property
    def predictor_type(self) -> str:
        return str(self.predictor.get("type", ""))

    def require_bodyparts(self) -> None:
        if not self.bodyparts:
            raise ExportError(f"{self.where}: metadata.bodyparts is missing or empty; the "
                              "bundle cannot name its keypoints")
        if not self.heads:
            raise ExportError(f"{self.where}: no model section with heads; is this a "
                              "pytorch_config.yaml?")


def view_config(cfg: dict, path: str | Path) -> PoseConfigView:
    """The typed view of a pytorch_config read from ``path``."""
    data, metadata = _section(cfg, "data"), _section(cfg, "metadata")
    inference = _section(data, "inference")
    crop = _section(inference, "top_down_crop")
    padding = _section(inference, "auto_padding")
    with_context = crop.get("crop_with_context")
    detector = _section(cfg, "detector")
    detector_inference = _section(_section(detector, "data"), "inference")
    return PoseConfigView(
        path=Path(path), raw=cfg, task=Task.from_str(str(cfg.get("method", "bu"))),
        net_type=cfg.get("net_type"),
        bodyparts=list(metadata.get("bodyparts") or []),
        unique_bodyparts=list(metadata.get("unique_bodyparts") or []),
        individuals=list(metadata.get("individuals") or []),
        project_path=metadata.get("project_path"),
        heads=_section(_section(cfg, "model"), "heads"),
        inference=InferenceSettings(
            crop=CropSettings(width=int(crop.get("width", 256)),
                              height=int(crop.get("height", 256)),
                              margin=float(crop.get("margin") or 0),
                              with_context=None if with_context is None else bool(with_context)),
            pad_divisors=(int(padding.get("pad_height_divisor") or 1),
                          int(padding.get("pad_width_divisor") or 1)),
            normalize_images=bool(inference.get("normalize_images", True)),
            unsupported=tuple(name for name in UNSUPPORTED_TRANSFORMS if inference.get(name))),
        bbox_margin=float(data.get("bbox_margin", 20)),
        detector_model=detector.get("model") if isinstance(detector.get("model"), dict)
        else None,
        detector_normalizes=bool(detector_inference.get("normalize_images", True)),
        conditions=_section(cfg, "inference").get("conditions"))


def read_pose_config(path: str | Path) -> PoseConfigView:
    return view_config(read_config_as_dict(path), path)
