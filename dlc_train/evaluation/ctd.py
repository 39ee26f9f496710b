"""Conditional top-down (CTD) predictions on labeled images.

The bottom-up model the CTD config's ``inference.conditions`` names predicts each image; the
individuals DeepLabCut 3 hands to a CTD model become its conditions, in the bottom-up model's
order (keypoints it did not find at likelihood 0, as its bundle reports them;
``select_conditions``, the runtime's CTD rules: a keypoint inside the image with
likelihood > 0, best likelihood >= 0.05, a box of at least one pixel); each is cropped
around the box of its conditions (``data.bbox_margin``, then ``data.inference.top_down_crop``,
``crop_with_context`` false unless set, as DeepLabCut's CTD default), its conditions go into
crop pixels and to the model as ``cond_kpts``, and the keypoints come back to image pixels.
This is what an exported CTD bundle computes (tests/test_evaluate_ctd.py compares them).

``bboxes`` are the conditions' boxes, ``bbox_scores`` their best likelihood.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dlc_train.config import ConfigError, read_config_as_dict
from dlc_train.data.dlcloader import DLCLoader
from dlc_train.data.top_down import bbox_from_keypoints
from dlc_train.evaluation.predict import ImagePredictor
from dlc_train.evaluation.selection import parse_index, select_snapshots
from dlc_train.evaluation.top_down import TopDownPredictor
# The runtime's copy of DeepLabCut's CTD rules (numpy only): evaluation hands the model the
# individuals an exported bundle would.
from dlc_runtime.pipelines.ctd import select_conditions


def conditions_model(loader: DLCLoader, pose_cfg: dict) -> tuple[dict, Path]:
    """(pytorch_config dict, snapshot) of the bottom-up model named by ``inference.conditions``:
    ``{shuffle: N}`` (with ``snapshot: name`` or ``snapshot_index``, default -1: the best
    snapshot, else the last; ``trainset_index`` default the CTD shuffle's own) or
    ``{config_path, snapshot_path}``; ConfigError otherwise (one line)."""
    where = loader.pose_config_path
    conditions = (pose_cfg.get("inference") or {}).get("conditions")
    if conditions is None or isinstance(conditions, (str, Path)):
        said = "is not set" if conditions is None else f"is a predictions file ({conditions})"
        raise ConfigError(f"{where}: inference.conditions {said}; evaluation runs the bottom-up "
                          "model that gives a conditional top-down model its conditions: set "
                          "inference.conditions to {shuffle: N} of a trained bottom-up shuffle")
    if not isinstance(conditions, dict) or not (
            "shuffle" in conditions or conditions.get("config_path")):
        raise ConfigError(f"{where}: inference.conditions must be {{shuffle: N}} (with snapshot "
                          f"or snapshot_index) or {{config_path, snapshot_path}}, got "
                          f"{conditions!r}")
    if conditions.get("config_path"):
        config_path = Path(conditions["config_path"])
        snapshot = Path(conditions.get("snapshot_path") or "")
        if not config_path.is_file() or not snapshot.is_file():
            raise ConfigError(f"{where}: inference.conditions names {config_path} and "
                              f"{snapshot}; both must exist")
        return read_config_as_dict(config_path), snapshot
    project, shuffle = loader.project, conditions["shuffle"]
    index = conditions.get("trainset_index", loader.trainset_index)
    fractions = project.training_fractions
    if not isinstance(index, int) or not 0 <= index < len(fractions):
        raise ConfigError(f"{where}: inference.conditions trainset_index {index!r} is not an "
                          f"index of TrainingFraction {fractions}")
    # The shuffle's folder, found without a loader (which would make a missing split file).
    name = f"{project.task}{project.date}-trainset{int(float(fractions[index]) * 100)}"
    folder = loader.model_folder.with_name(f"{name}shuffle{shuffle}") / "train"
    if not (folder / "pytorch_config.yaml").is_file():
        raise ConfigError(f"{where}: the conditions shuffle {shuffle} is not trained "
                          f"({folder / 'pytorch_config.yaml'} is missing)")
    cfg = read_config_as_dict(folder / "pytorch_config.yaml")
    if conditions.get("snapshot"):
        snapshot = folder / str(conditions["snapshot"])
        if not snapshot.is_file():
            raise ConfigError(f"{where}: the conditions snapshot {snapshot} does not exist")
        return cfg, snapshot
    prefix = (cfg.get("runner") or {}).get("snapshot_prefix") or "snapshot"
    chosen = select_snapshots(folder, parse_index(conditions.get("snapshot_index"), -1),
                              None, prefix)
    return cfg, chosen[-1].path


class CondTopDownPredictor(TopDownPredictor):
    """Predicts keypoints on image files with a CTD pose snapshot, its conditions from a
    bottom-up :class:`ImagePredictor` (see the module docstring); called like
    :class:`ImagePredictor`. Arguments as :class:`TopDownPredictor`'s, ``conditions`` in place
    of ``boxes``, and ``bbox_margin``: the CTD config's ``data.bbox_margin``."""

    WITH_CONTEXT_DEFAULT = False

    def __init__(self, pose_cfg: dict, snapshot: str | Path, conditions: ImagePredictor,
                 max_individuals: int, num_bodyparts: int, num_unique: int = 0,
                 device: torch.device | str = "cpu", batch_size: int = 1,
                 bbox_margin: float = 25.0):
        super().__init__(pose_cfg, snapshot, None, max_individuals, num_bodyparts, num_unique,
                         device, batch_size)
        self.conditions, self.bbox_margin = conditions, float(bbox_margin)

    def individuals(self, path: str, image: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        found = np.array(self.conditions([path])[path]["bodyparts"], dtype=np.float32)
        # A keypoint the bottom-up model did not find has likelihood 0, as its exported bundle
        # reports it (a NaN likelihood would drop the whole animal in select_conditions).
        found[..., 2] = np.nan_to_num(found[..., 2], nan=0.0)
        chosen, filled = select_conditions(found[None], self.max_individuals,
                                           image.shape[:2], self.bbox_margin)
        conditions = chosen[0][filled[0]].astype(np.float64)
        boxes = bbox_from_keypoints(conditions, image.shape[0], image.shape[1],
                                    self.bbox_margin).reshape(-1, 4)
        scores = conditions[..., 2].max(axis=-1) if len(conditions) else np.zeros(0)
        return boxes, scores, conditions
