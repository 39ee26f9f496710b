"""A snapshot's predictions on labeled images, as DeepLabCut 3's evaluation makes them.

Each image goes whole through the pytorch_config's ``data.inference`` transforms (the same
``PoseDataset`` path training evaluates with), the eager model and its heads' predictors; the
keypoints are then mapped back to the image's own pixels. That map is read off the transforms
themselves: three probe points travel through them with the image, and the affine map between
where they started and where they ended is inverted (resize, longest_max_size and padding are
all affine in the coordinates; DeepLabCut undoes them the same way).

Missing keypoints come back as NaN (x, y and score): animals an assembly did not fill and the
(-1, -1, score 0) padding some predictors use. With an identity head, the identity scores at
every predicted keypoint are returned too, and animals are put in individuals' order by the
same assignment analysis uses.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from dlc_train.config import ConfigError
from dlc_train.data.dataset import PoseDataset
from dlc_train.data.transforms import build_transforms
from dlc_train.evaluation.metrics import canonical_poses
from dlc_train.models.loading import build_model_from_snapshot
from dlc_train.models.predictors.identity import assign_identity
from dlc_train.runners.train import resolve_device
from dlc_train.task import Task

# Inside every image (>= 32 px): transforms that drop points leaving the image keep these.
_PROBE = np.array([[[0.0, 0.0, 2.0], [8.0, 0.0, 2.0], [0.0, 8.0, 2.0]]], dtype=np.float32)

# One image's predictions: "bodyparts" (N, K, 3), with a unique_bodypart head
# "unique_bodyparts" (1, U, 3), with an identity head "identity_scores" (N, K, individuals).
Prediction = dict[str, np.ndarray]


def evaluated_task(pose_cfg: dict, where: str) -> Task:
    """The config's task (bottom-up, top-down, conditional top-down); ConfigError for a
    detector config or an unknown method."""
    try:
        task = Task.from_str(str(pose_cfg.get("method") or "bu"))
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from None
    if task not in (Task.BOTTOM_UP, Task.TOP_DOWN, Task.COND_TOP_DOWN):
        raise ConfigError(f"{where} is a {task.snake_name} config; evaluation runs pose models "
                          "(bottom-up, top-down, conditional top-down)")
    return task


def check_bottom_up(pose_cfg: dict, where: str) -> None:
    """Raises ConfigError unless the config is a bottom-up model (the ones ImagePredictor runs
    on whole images; top-down models: ``dlc_train.evaluation.top_down``)."""
    task = evaluated_task(pose_cfg, where)
    if task != Task.BOTTOM_UP:
        raise ConfigError(f"{where} is a {task.snake_name} model; whole-image prediction runs "
                          "bottom-up models only (top-down: TopDownPredictor, conditional "
                          "top-down: CondTopDownPredictor)")


class ImagePredictor:
    """Predicts keypoints on image files with one snapshot.

    Args:
        pose_cfg: the shuffle's pytorch_config.yaml as a dict (bottom-up models).
        snapshot: the ``snapshot-XXX.pt`` to load.
        device: "cpu", "cuda", "auto", ... (None: the config's, else auto).
        batch_size: images per forward pass; only images of the same size share one, so the
            numbers do not depend on it (DeepLabCut evaluates one image at a time).
    """

    def __init__(self, pose_cfg: dict, snapshot, device: str | None = None,
                 batch_size: int = 1):
        check_bottom_up(pose_cfg, "the pytorch_config.yaml")
        self.device = resolve_device(device or (pose_cfg.get("runner") or {}).get("device")
                                     or pose_cfg.get("device"))
        self.model = build_model_from_snapshot(pose_cfg, snapshot).to(self.device).eval()
        self.batch_size = max(1, int(batch_size))
        self.transform = build_transforms((pose_cfg.get("data") or {}).get("inference"))
        self.heads = set(self.model.heads)

    @torch.no_grad()
    def __call__(self, image_paths: Sequence[str]) -> dict[str, Prediction]:
        """Predictions of each image (in its own pixels), keyed by the path given."""
        dataset = probe_dataset(image_paths, self.transform)
        out: dict[str, Prediction] = {}
        batch: list[dict] = []
        for i in range(len(dataset)):
            item = dataset[i]
            if batch and (len(batch) == self.batch_size
                          or item["image"].shape != batch[0]["image"].shape):
                out.update(self._run(batch))
                batch = []
            batch.append(item)
        if batch:
            out.update(self._run(batch))
        return {str(path): out[str(path)] for path in image_paths}

    def _run(self, items: list[dict]) -> dict[str, Prediction]:
        images = torch.stack([item["image"] for item in items]).to(self.device)
        outputs = self.model(images)
        heads = self.model.heads
        poses_t = heads["bodypart"].predictor(self.model.get_stride("bodypart"),
                                              outputs["bodypart"])["poses"]
        poses = canonical_poses(poses_t.detach().float().cpu().numpy())
        ids = None
        if "identity" in self.heads:
            ids = heads["identity"].predictor.keypoint_scores(
                self.model.get_stride("identity"), outputs["identity"], poses_t)
            ids = ids.detach().float().cpu().numpy()
        unique = None
        if "unique_bodypart" in self.heads:
            unique = heads["unique_bodypart"].predictor(
                self.model.get_stride("unique_bodypart"), outputs["unique_bodypart"])["poses"]
            unique = canonical_poses(unique.detach().float().cpu().numpy())
        result = {}
        for b, item in enumerate(items):
            back = input_to_image(item)
            pred = {"bodyparts": _apply(back, poses[b])}
            if unique is not None:
                pred["unique_bodyparts"] = _apply(back, unique[b])
            if ids is not None:
                pred["identity_scores"] = ids[b]
                if ids.shape[1] == ids.shape[3]:  # one animal per individual: put in order
                    order = assign_identity(pred["bodyparts"], ids[b])
                    pred["bodyparts"] = pred["bodyparts"][order]
                    pred["identity_scores"] = ids[b][order]
            result[item["path"]] = pred
        return result


def probe_dataset(image_paths: Sequence[str], transform) -> PoseDataset:
    """The images through ``transform``, each carrying the three probe points."""
    return PoseDataset([(str(path), _PROBE) for path in image_paths], transform,
                       ["p0", "p1", "p2"])


def input_to_image(item: dict) -> np.ndarray:
    """The 2x3 affine map from a :func:`probe_dataset` item's network-input pixels back to
    its image's pixels (where the probes started)."""
    start = _PROBE[0, :, :2].astype(np.float64)
    end = np.asarray(item["annotations"]["keypoints"][0, :, :2], dtype=np.float64)
    forward = np.linalg.solve(np.c_[start, np.ones(3)], end).T  # end = forward @ [start; 1]
    return np.linalg.inv(np.vstack([forward, [0.0, 0.0, 1.0]]))[:2]


def _apply(matrix: np.ndarray, poses: np.ndarray) -> np.ndarray:
    out = poses.copy()
    xy = poses[..., :2].astype(np.float64) @ matrix[:, :2].T + matrix[:, 2]
    out[..., :2] = xy.astype(np.float32)
    return out
