"""COCO keypoint datasets: ``COCOLoader``, as DeepLabCut 3's, and the checks of the files.

Layout (DeepLabCut's)::

    <project_root>/annotations/train.json, test.json
    <project_root>/images/<file_name>          (absolute file_names are used as they are)

A COCO file holds ``images`` (id, file_name, width, height), ``annotations`` (image_id,
category_id, keypoints as [x1, y1, v1, ...], num_keypoints, bbox [x, y, w, h], iscrowd) and
``categories`` (id, name, keypoints: the bodypart names, skeleton: 1-based pairs). Each
annotation is one animal; the rows of an image's keypoint array are its annotations in file
order, padded to the most animals any image holds (the individuals ``individual0``, ...).
Visibility 0 is unlabeled; 1 (labeled, hidden) and 2 count as labeled, as in DeepLabCut.
Crowd annotations (``iscrowd: 1``, a region of many animals) are not pose labels and are skipped.

Every problem with a file is one ``COCOError`` line naming the file and the fix, raised before
anything is read for training; nothing is written here.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dlc_train.data.base import Loader, Sample, check_mode
from dlc_train.data.project import ProjectError
from dlc_train.task import Task

logger = logging.getLogger(__name__)


class COCOError(ProjectError):
    """A COCO keypoint file that cannot be trained on (one line: the file and the fix)."""


@dataclass
class COCOData:
    """One checked COCO keypoint file.

    Attributes:
        path: the JSON file.
        bodyparts: the category's keypoint names (K).
        skeleton: the category's skeleton as 0-based bodypart index pairs.
        images: [(image id, absolute image path)] in file order.
        keypoints: image id -> (A, K, 3) float32 of its A pose annotations (x, y = 0 where
            unlabeled).
        bboxes: image id -> (A, 4) x, y, w, h (from the keypoints where an annotation has none).
    """

    path: Path
    bodyparts: list[str]
    skeleton: list[list[int]]
    images: list[tuple[Any, str]]
    keypoints: dict[Any, np.ndarray] = field(default_factory=dict)
    bboxes: dict[Any, np.ndarray] = field(default_factory=dict)

    @property
    def max_individuals(self) -> int:
        return max((len(k) for k in self.keypoints.values()), default=0)


def _load_json(path: Path) -> dict:
    if not path.is_file():
        raise COCOError(f"COCO file {path} not found: put the annotations there (DeepLabCut's "
                        "layout: <project>/annotations/<name>.json) or pass its file name")
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except json.JSONDecodeError as err:
        raise COCOError(f"{path} is not valid JSON ({err.msg}, line {err.lineno}): fix or "
                        "export it again") from None
    except UnicodeDecodeError:
        raise COCOError(f"{path} is not UTF-8 text: export it again as JSON") from None
    if not isinstance(doc, dict):
        raise COCOError(f"{path} holds a JSON {type(doc).__name__}, not a COCO object with "
                        "images, annotations and categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(doc.get(key), list):
            raise COCOError(f"{path} has no '{key}' list: a COCO keypoint file needs images, "
                            "annotations and categories")
    return doc


def _category(doc: dict, path: Path) -> tuple[list[str], list[list[int]], set]:
    """(bodyparts, 0-based skeleton, category ids). Several categories must share keypoints:
    DeepLabCut trains them as one category."""
    cats = [c for c in doc["categories"] if isinstance(c, dict)]
    with_kps = [c for c in cats if c.get("keypoints")]
    if not with_kps:
        raise COCOError(f"{path}: no category lists 'keypoints': add the bodypart names to "
                        "categories[0].keypoints")
    names = [str(k) for k in with_kps[0]["keypoints"]]
    for other in with_kps[1:]:
        if [str(k) for k in other["keypoints"]] != names:
            raise COCOError(f"{path}: categories {with_kps[0].get('id')} and {other.get('id')} "
                            "list different keypoints; DeepLabCut trains one set of bodyparts: "
                            "merge them into one category")
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise COCOError(f"{path}: keypoint {dup!r} is listed twice in the category: give every "
                        "bodypart its own name")
    if len(with_kps) < len(cats) or len(cats) > 1:
        logger.warning("%s: %d categories; all annotations are trained as one category", path,
                       len(cats))
    skeleton = []
    for edge in with_kps[0].get("skeleton") or []:
        try:
            a, b = (int(i) - 1 for i in edge)
        except (TypeError, ValueError):
            raise COCOError(f"{path}: skeleton edge {edge!r} is not a pair of 1-based keypoint "
                            "indices: fix categories[].skeleton") from None
        if not (0 <= a < len(names) and 0 <= b < len(names)):
            raise COCOError(f"{path}: skeleton edge {edge} names a keypoint outside 1..{len(names)}"
                            " (COCO skeletons are 1-based): fix categories[].skeleton")
        skeleton.append([a, b])
    return names, skeleton, {c.get("id") for c in cats}


def _images(doc: dict, path: Path, image_root: Path) -> list[tuple[Any, str]]:
    images, seen, missing = [], set(), []
    for i, image in enumerate(doc["images"]):
        if not isinstance(image, dict) or "id" not in image or not image.get("file_name"):
            raise COCOError(f"{path}: images[{i}] has no id or file_name: every image needs both")
        if image["id"] in seen:
            raise COCOError(f"{path}: image id {image['id']} is listed twice: give every image "
                            "its own id")
        seen.add(image["id"])
        name = Path(str(image["file_name"]))
        full = name if name.is_absolute() else image_root / name
        if not full.is_file():
            missing.append(str(name))
        images.append((image["id"], str(full)))
    if missing:
        raise COCOError(f"{path}: {len(missing)} of {len(images)} images are missing under "
                        f"{image_root} (first: {missing[0]}): copy them there or fix their "
                        "file_name")
    return images


def _annotation(ann: Any, i: int, path: Path, names: list[str],
                categories: set) -> tuple[Any, np.ndarray, np.ndarray] | None:
    """(image id, keypoints (K, 3), bbox (4,)) of one annotation; None for a crowd region."""
    where = f"{path}: annotation {ann.get('id', i) if isinstance(ann, dict) else i}"
    if not isinstance(ann, dict) or "image_id" not in ann:
        raise COCOError(f"{where} has no image_id: every annotation names its image")
    if ann.get("iscrowd"):
        return None
    if "category_id" in ann and ann["category_id"] not in categories:
        raise COCOError(f"{where} has category_id {ann['category_id']}, which no category has: "
                        "fix it or add the category")
    try:
        kps = np.asarray(ann.get("keypoints"), dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise COCOError(f"{where}: keypoints must be a list of numbers x1, y1, v1, ...") from None
    if kps.size != 3 * len(names):
        raise COCOError(f"{where} (image {ann['image_id']}) has {kps.size} keypoint values, but "
                        f"the category lists {len(names)} keypoints ({3 * len(names)} values: "
                        f"x, y, v each): fix the annotation or categories[].keypoints")
    kps = kps.reshape(len(names), 3)
    if not np.isfinite(kps).all() or not np.isin(kps[:, 2], (0, 1, 2)).all():
        raise COCOError(f"{where}: keypoint visibilities must be 0, 1 or 2 and coordinates "
                        "finite: fix the annotation")
    labeled = kps[:, 2] > 0
    if "num_keypoints" in ann and int(ann["num_keypoints"]) != int(labeled.sum()):
        raise COCOError(f"{where}: num_keypoints is {ann['num_keypoints']} but {labeled.sum()} "
                        "keypoints have v > 0: fix num_keypoints (or the visibilities)")
    kps[~labeled, :2] = 0.0
    bbox = ann.get("bbox")
    if bbox is None or len(bbox) == 0:
        bbox = _bbox_of(kps)
    try:
        bbox = np.asarray(bbox, dtype=np.float64).reshape(4)
    except (TypeError, ValueError):
        raise COCOError(f"{where}: bbox must be [x, y, width, height]") from None
    return ann["image_id"], kps.astype(np.float32), bbox


def _bbox_of(kps: np.ndarray) -> np.ndarray:
    pts = kps[kps[:, 2] > 0, :2]
    if len(pts) == 0:
        return np.zeros(4)
    lo, hi = pts.min(0), pts.max(0)
    return np.array([lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]])


def read_coco(path: str | Path, image_root: str | Path) -> COCOData:
    """Reads and checks a COCO keypoint file (see the module docstring); COCOError if bad.

    Args:
        path: the JSON file.
        image_root: where relative ``file_name``s are (``<project>/images``).
    """
    path, image_root = Path(path), Path(image_root)
    doc = _load_json(path)
    names, skeleton, categories = _category(doc, path)
    data = COCOData(path=path, bodyparts=names, skeleton=skeleton,
                    images=_images(doc, path, image_root))
    known = {image_id for image_id, _ in data.images}
    per_image: dict[Any, list] = {image_id: [] for image_id in known}
    for i, ann in enumerate(doc["annotations"]):
        parsed = _annotation(ann, i, path, names, categories)
        if parsed is None:
            continue
        image_id, kps, bbox = parsed
        if image_id not in known:
            raise COCOError(f"{path}: annotation {ann.get('id', i)} names image {image_id}, which "
                            "is not in images: add the image or remove the annotation")
        if (kps[:, 2] > 0).any():  # an animal without a single labeled keypoint teaches nothing
            per_image[image_id].append((kps, bbox))
    k = len(names)
    for image_id, anns in per_image.items():
        data.keypoints[image_id] = np.stack([a[0] for a in anns]) if anns \
            else np.zeros((0, k, 3), np.float32)
        data.bboxes[image_id] = np.stack([a[1] for a in anns]) if anns else np.zeros((0, 4))
    if not any(len(v) for v in data.keypoints.values()):
        raise COCOError(f"{path}: no annotation has a labeled keypoint: nothing to train on")
    return data


class COCOLoader(Loader):
    """A COCO keypoint dataset and the model trained on it, as DeepLabCut 3's ``COCOLoader``.

    Args:
        project_root: the dataset folder (``annotations/``, ``images/``).
        model_config_path: the model's pytorch_config.yaml (snapshots go beside it).
        train_json_filename, test_json_filename: files under ``annotations/``; no test set when
            the test file name is None or empty.
        model_config: the config as a dict, used instead of reading ``model_config_path`` (a
            config not written yet).

    Raises:
        COCOError: a bad COCO file, or one whose bodyparts (or animals per image) do not fit
            the model config; ConfigError: the model config cannot be read.
    """

    def __init__(self, project_root: str | Path, model_config_path: str | Path,
                 train_json_filename: str = "train.json",
                 test_json_filename: str | None = "test.json",
                 model_config: dict | None = None):
        from dlc_train.config import ConfigError, read_config_as_dict

        self.project_root = Path(project_root)
        self.image_root = self.project_root / "images"
        self.model_config_path = Path(model_config_path)
        self.train_json_filename = train_json_filename
        self.test_json_filename = test_json_filename or None
        self.train_data = read_coco(self.annotation_path(train_json_filename), self.image_root)
        self.test_data = None
        if self.test_json_filename:
            self.test_data = read_coco(self.annotation_path(self.test_json_filename),
                                       self.image_root)
            if self.test_data.bodyparts != self.train_data.bodyparts:
                raise COCOError(f"{self.test_data.path} lists keypoints {self.test_data.bodyparts}"
                                f" but {self.train_data.path} lists {self.train_data.bodyparts}:"
                                " both splits need the same category keypoints")
        if model_config is None:
            if not self.model_config_path.is_file():
                raise ConfigError(f"model config {self.model_config_path} not found: make it "
                                  "with dlc_train.apis.train_coco (or `dlc train --coco DIR "
                                  "--net-type NAME`), or pass its path")
            model_config = read_config_as_dict(self.model_config_path)
        self.model_cfg = model_config
        self.pose_task = Task.from_str(str(model_config.get("method") or "bu"))
        self._check_model_config()

    def annotation_path(self, filename: str) -> Path:
        return self.project_root / "annotations" / filename

    # -- what the dataset labels -------------------------------------------------------------
    @property
    def bodyparts(self) -> list[str]:
        return list(self.train_data.bodyparts)

    @property
    def num_individuals(self) -> int:
        """The most animals one image holds, over both splits (DeepLabCut: the train split)."""
        test = self.test_data.max_individuals if self.test_data else 0
        return max(1, self.train_data.max_individuals, test)

    @property
    def individuals(self) -> list[str]:
        return [f"individual{i}" for i in range(self.num_individuals)]

    @property
    def pose_config_path(self) -> Path:
        return self.model_config_path

    @property
    def model_folder(self) -> Path:
        """The folder of the model config, where snapshots go (DeepLabCut's name)."""
        return self.model_config_path.parent

    def _check_model_config(self) -> None:
        meta = self.model_cfg.get("metadata") or {}
        configured = [str(b) for b in meta.get("bodyparts") or []]
        if configured and configured != self.bodyparts:
            extra = [b for b in self.bodyparts if b not in configured]
            detail = (f"it lacks {extra}" if extra
                      else f"it lists {configured}, the annotations {self.bodyparts}")
            raise COCOError(f"{self.train_data.path} names bodyparts the model config "
                            f"{self.model_config_path} does not match ({detail}): make a new "
                            "config for this dataset, or rename the category keypoints")
        configured_n = len(meta.get("individuals") or [])
        if configured_n and self.num_individuals > configured_n:
            raise COCOError(f"{self.train_data.path}: images hold up to {self.num_individuals} "
                            f"animals but the model config {self.model_config_path} has "
                            f"{configured_n} individual(s): make a multi-animal config for this "
                            "dataset")

    # -- samples -----------------------------------------------------------------------------
    def data(self, mode: str = "train") -> COCOData | None:
        check_mode(mode)
        return self.train_data if mode == "train" else self.test_data

    def samples(self, mode: str = "train") -> list[Sample]:
        data = self.data(mode)
        if data is None:
            return []
        n, k = self.num_individuals, len(self.bodyparts)
        out = []
        for image_id, image_path in data.images:
            kps = np.zeros((n, k, 3), np.float32)
            anns = data.keypoints[image_id]
            kps[:len(anns)] = anns
            out.append((image_path, kps))
        return out


def coco_project_config(data: COCOData, num_individuals: int,
                        project_root: str | Path) -> dict:
    """A DeepLabCut project config (the keys make_pytorch_pose_config reads) for a COCO dataset:
    single-animal when no image holds two animals, multi-animal (``individual0``, ...) otherwise.

    Args:
        data: the train file (bodyparts, skeleton).
        num_individuals: the most animals one image holds (COCOLoader.num_individuals).
        project_root: the dataset folder.
    """
    n = max(1, int(num_individuals))
    cfg: dict[str, Any] = {"project_path": str(Path(project_root).resolve()),
                           "multianimalproject": n > 1, "uniquebodyparts": [],
                           "skeleton": [[data.bodyparts[a], data.bodyparts[b]]
                                        for a, b in data.skeleton]}
    if n > 1:
        cfg.update(multianimalbodyparts=list(data.bodyparts), bodyparts="MULTI!",
                   individuals=[f"individual{i}" for i in range(n)])
    else:
        cfg["bodyparts"] = list(data.bodyparts)
    return cfg
