"""DeepLabCut's SuperAnimal models: names, files, and configs that make them ordinary snapshots.

Names are dlclibrary's, ``<dataset>_<model>``: ``superanimal_topviewmouse_hrnet_w32`` (a top-down
pose model), ``superanimal_topviewmouse_fasterrcnn_resnet50_fpn_v2`` (its detector). The files
are DeepLabCut 3 snapshots (``{"model": state_dict, ...}`` with DeepLabCut's keys) in the
Hugging Face repositories dlclibrary lists; they are cached like every Hub file (see ``hub``).

``superanimal_pytorch_config`` writes the pytorch_config that builds the same model here, and
``write_superanimal_model`` puts config and snapshots in one folder, so a SuperAnimal model is
evaluated, fine-tuned from or exported to a bundle like any trained shuffle.
"""
from __future__ import annotations

import copy
import shutil
from pathlib import Path

from dlc_io.folders import staged_folder
from dlc_train.models.pretrained.hub import HubFile, PretrainedWeightsError, fetch

# dlclibrary's modelzoo_urls_pytorch.yaml: dataset -> kind -> model -> "owner/repo/file".
_TVM = "mwmathis/DeepLabCutModelZoo-SuperAnimal-TopViewMouse/superanimal_topviewmouse_"
_QUAD = "mwmathis/DeepLabCutModelZoo-SuperAnimal-Quadruped/superanimal_quadruped_"
_BIRD = "DeepLabCut/DeepLabCutModelZoo-SuperAnimal-Bird/superanimal_bird_"
SUPERANIMAL_FILES: dict[str, dict[str, dict[str, str]]] = {
    "superanimal_topviewmouse": {
        "detectors": {
            "fasterrcnn_mobilenet_v3_large_fpn": _TVM + "fasterrcnn_mobilenet_v3_large_fpn.pt",
            "fasterrcnn_resnet50_fpn_v2": _TVM + "fasterrcnn_resnet50_fpn_v2.pt"},
        "pose_models": {"hrnet_w32": _TVM + "hrnet_w32.pt", "resnet_50": _TVM + "resnet_50.pt"}},
    "superanimal_quadruped": {
        "detectors": {
            "fasterrcnn_mobilenet_v3_large_fpn": _QUAD + "fasterrcnn_mobilenet_v3_large_fpn.pt",
            "fasterrcnn_resnet50_fpn_v2": _QUAD + "fasterrcnn_resnet50_fpn_v2.pt",
            "ssdlite": _QUAD + "ssdlite.pt"},
        "pose_models": {"hrnet_w32": _QUAD + "hrnet_w32.pt", "resnet_50": _QUAD + "resnet_50.pt",
                        "rtmpose_s": _QUAD + "rtmpose_s.pt"}},
    "superanimal_bird": {
        "detectors": {
            "fasterrcnn_mobilenet_v3_large_fpn": _BIRD + "fasterrcnn_mobilenet_v3_large_fpn.pt",
            "ssdlite": _BIRD + "ssdlite.pt"},
        "pose_models": {"resnet_50": _BIRD + "resnet_50.pt"}},
    "superanimal_humanbody": {
        "detectors": {},
        "pose_models": {"rtmpose_x": "DeepLabCut/HumanBody/rtmpose-x_simcc-body7.pt"}},
}

# The keypoints each SuperAnimal pose model predicts, in its output order (DeepLabCut's
# modelzoo project configs); needed to write a config for the model.
SUPERANIMAL_BODYPARTS: dict[str, list[str]] = {
    "superanimal_topviewmouse": [
        "nose", "left_ear", "right_ear", "left_ear_tip", "right_ear_tip", "left_eye",
        "right_eye", "neck", "mid_back", "mouse_center", "mid_backend", "mid_backend2",
        "mid_backend3", "tail_base", "tail1", "tail2", "tail3", "tail4", "tail5",
        "left_shoulder", "left_midside", "left_hip", "right_shoulder", "right_midside",
        "right_hip", "tail_end", "head_midpoint"],
    "superanimal_quadruped": [
        "nose", "upper_jaw", "lower_jaw", "mouth_end_right", "mouth_end_left", "right_eye",
        "right_earbase", "right_earend", "right_antler_base", "right_antler_end", "left_eye",
        "left_earbase", "left_earend", "left_antler_base", "left_antler_end", "neck_base",
        "neck_end", "throat_base", "throat_end", "back_base", "back_end", "back_middle",
        "tail_base", "tail_end", "front_left_thai", "front_left_knee", "front_left_paw",
        "front_right_thai", "front_right_knee", "front_right_paw", "back_left_paw",
        "back_left_thai", "back_right_thai", "back_left_knee", "back_right_knee",
        "back_right_paw", "belly_bottom", "body_middle_right", "body_middle_left"],
}

# The pose heads DeepLabCut's SuperAnimal model configs use, where they differ from the
# ones make_pytorch_pose_config writes for the same net_type (K = number of keypoints).
_HEATMAP_ONLY_1X1 = "hrnet_w32"       # a 1x1 deconv to K maps, no location refinement
_DECONV_3X3_STRIDE2 = "resnet_50"     # a 3x3 stride-2 deconv to K (and 2K locref) maps
MAX_INDIVIDUALS = 30                  # DeepLabCut's SuperAnimal inference default


def superanimal_names() -> list[str]:
    """Every SuperAnimal model name, ``<dataset>_<model>`` (pose models and detectors)."""
    return sorted(f"{dataset}_{model}" for dataset, kinds in SUPERANIMAL_FILES.items()
                  for models in kinds.values() for model in models)


def parse_superanimal_name(name: str) -> tuple[str, str, str]:
    """``superanimal_topviewmouse_hrnet_w32`` -> (dataset, model, "pose_models"|"detectors")."""
    for dataset, kinds in SUPERANIMAL_FILES.items():
        if name.startswith(dataset + "_"):
            model = name[len(dataset) + 1:]
            for kind, models in kinds.items():
                if model in models:
                    return dataset, model, kind
            known = [m for models in kinds.values() for m in models]
            raise PretrainedWeightsError(f"{dataset} has no model {model!r} (it has: "
                                         f"{', '.join(known)})")
    raise PretrainedWeightsError(f"unknown SuperAnimal model {name!r}; known: "
                                 f"{', '.join(superanimal_names())}")


def superanimal_source(name: str) -> HubFile:
    """The Hugging Face file of a SuperAnimal model."""
    dataset, model, kind = parse_superanimal_name(name)
    owner, repo, filename = SUPERANIMAL_FILES[dataset][kind][model].split("/", 2)
    return HubFile(f"{owner}/{repo}", (filename,))


def fetch_superanimal(name: str) -> Path:
    """The local path of a SuperAnimal snapshot (cached, or downloaded unless offline)."""
    return fetch(superanimal_source(name))


def superanimal_pytorch_config(dataset: str, pose_model: str = "hrnet_w32",
                               detector: str | None = "fasterrcnn_resnet50_fpn_v2") -> dict:
    """The pytorch_config.yaml dict of a SuperAnimal top-down model (pose model + detector).

    Args:
        dataset: e.g. "superanimal_topviewmouse".
        pose_model: "hrnet_w32" or "resnet_50".
        detector: one of the dataset's detectors, or None for the pose model alone.
    """
    from dlc_train.config import make_pytorch_pose_config

    parse_superanimal_name(f"{dataset}_{pose_model}")
    if detector is not None:
        parse_superanimal_name(f"{dataset}_{detector}")
    if dataset not in SUPERANIMAL_BODYPARTS or \
            pose_model not in (_HEATMAP_ONLY_1X1, _DECONV_3X3_STRIDE2):
        raise PretrainedWeightsError(
            f"no config for {dataset}_{pose_model} here (supported: hrnet_w32 and resnet_50 of "
            f"{', '.join(SUPERANIMAL_BODYPARTS)})")
    bodyparts = SUPERANIMAL_BODYPARTS[dataset]
    project = {"multianimalproject": True, "multianimalbodyparts": list(bodyparts),
               "bodyparts": "MULTI!", "uniquebodyparts": [], "identity": False,
               "individuals": [f"animal{i}" for i in range(MAX_INDIVIDUALS)]}
    detector_type = "ssdlite" if detector in (None, "ssdlite") else detector
    cfg = make_pytorch_pose_config(project, f"{dataset}_{pose_model}/pytorch_config.yaml",
                                   net_type=pose_model, top_down=True,
                                   detector_type=detector_type)
    _superanimal_head(cfg["model"]["heads"]["bodypart"], pose_model, len(bodyparts),
                      int(cfg["model"].get("backbone_output_channels") or 0))
    if detector is None:
        cfg.pop("detector", None)
    elif detector.startswith("fasterrcnn"):
        cfg["detector"]["model"]["box_score_thresh"] = 0.6  # DeepLabCut's SuperAnimal value
    cfg["metadata"]["superanimal"] = {"dataset": dataset, "pose_model": pose_model,
                                      "detector": detector}
    return cfg


def _superanimal_head(head: dict, pose_model: str, k: int, channels: int) -> None:
    if pose_model == _HEATMAP_ONLY_1X1:
        head["heatmap_config"] = {"channels": [channels, k], "kernel_size": [1], "strides": [1]}
        head.pop("locref_config", None)
        head["predictor"]["location_refinement"] = False
        head["target_generator"]["generate_locref"] = False
        head["criterion"] = {"heatmap": head["criterion"]["heatmap"]}
    else:
        head["heatmap_config"] = {"channels": [channels, k], "kernel_size": [3], "strides": [2]}
        head["locref_config"] = {"channels": [channels, 2 * k], "kernel_size": [3],
                                 "strides": [2]}


def write_superanimal_model(name: str, folder: str | Path, detector: str | None = None,
                            overwrite: bool = False) -> Path:
    """Writes a SuperAnimal model as a train folder: ``pytorch_config.yaml``,
    ``snapshot-000.pt`` and (with a detector) ``snapshot-detector-000.pt``.

    The snapshots are loaded into the configured models with strict keys first, so a folder is
    written only for a model that builds and loads here. The folder appears complete or not at
    all; an existing one is replaced only with ``overwrite``.

    Args:
        name: the pose model, e.g. "superanimal_topviewmouse_hrnet_w32".
        folder: the folder to write.
        detector: the detector model, e.g. "fasterrcnn_resnet50_fpn_v2", or None.
    """
    from dlc_train.config import write_config
    from dlc_train.models.detectors import DETECTORS
    from dlc_train.models.loading import SnapshotError, build_model_from_snapshot, read_snapshot
    from dlc_train.models.loading import load_state_dict_strict

    dataset, pose_model, kind = parse_superanimal_name(name)
    if kind != "pose_models":
        raise PretrainedWeightsError(f"{name} is a detector; give the pose model's name and "
                                     f"detector={pose_model!r}")
    cfg = superanimal_pytorch_config(dataset, pose_model, detector)
    pose_path = fetch_superanimal(name)
    detector_path = fetch_superanimal(f"{dataset}_{detector}") if detector else None
    try:
        build_model_from_snapshot(copy.deepcopy(cfg), pose_path)
        if detector_path is not None:
            det = DETECTORS.build(dict(cfg["detector"]["model"]))
            load_state_dict_strict(det, read_snapshot(detector_path)["model"], detector)
    except SnapshotError as err:
        raise PretrainedWeightsError(f"{name}: {err}") from None
    folder = Path(folder)
    with staged_folder(folder, what="SuperAnimal model folder",
                       is_ours=lambda p: (p / "pytorch_config.yaml").is_file(),
                       overwrite=overwrite) as staging:
        cfg["metadata"]["pose_config_path"] = str(folder / "pytorch_config.yaml")
        write_config(staging / "pytorch_config.yaml", cfg)
        shutil.copyfile(pose_path, staging / "snapshot-000.pt")
        if detector_path is not None:
            shutil.copyfile(detector_path, staging / "snapshot-detector-000.pt")
    return folder
