"""``make_pytorch_pose_config``: the pytorch_config.yaml DeepLabCut 3 writes for a shuffle.

The layout and defaults follow DeepLabCut 3.0.1 key for key (the tests compare against configs
DeepLabCut itself wrote), so a config made here trains in DeepLabCut and the other way round.
Architectures are described by small functions that return the ``model`` section; adding one is
one function and one entry in ``_MODEL_BUILDERS``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from dlc_train.task import Task

# ResNet net_types: DeepLabCut's resnet_50 is timm's resnet50_gn (GroupNorm); resnet_101 uses
# BatchNorm. resnet_18/34/tiny are ours: small backbones for CPU training (same head, layout).
_RESNETS = {
    "resnet_18": ("resnet18", 512),
    "resnet_34": ("resnet34", 512),
    "resnet_50": ("resnet50_gn", 2048),
    "resnet_101": ("resnet101", 2048),
    "resnet_152": ("resnet152", 2048),
    "resnet_tiny": ("resnet_tiny", 128),
}


def _heatmap_head(num_bodyparts: int, in_channels: int, top_down: bool) -> dict:
    """DeepLabCut's HeatmapHead: one stride-2 deconv (bottom-up) or a 1x1 conv (top-down)."""

    def branch(out_channels: int) -> dict:
        if top_down:
            return {"channels": [in_channels], "kernel_size": [], "strides": [],
                    "final_conv": {"out_channels": out_channels, "kernel_size": 1}}
        return {"channels": [in_channels, out_channels], "kernel_size": [3], "strides": [2]}

    generator = {"type": "HeatmapGaussianGenerator", "num_heatmaps": num_bodyparts,
                 "pos_dist_thresh": 17, "heatmap_mode": "KEYPOINT",
                 "gradient_masking": top_down}
    if top_down:
        generator["background_weight"] = 0.0
    generator.update({"generate_locref": True, "locref_std": 7.2801})
    return {
        "type": "HeatmapHead",
        "weight_init": "normal",
        "predictor": {"type": "HeatmapPredictor", "apply_sigmoid": False, "clip_scores": True,
                      "location_refinement": True, "locref_std": 7.2801},
        "target_generator": generator,
        "criterion": {"heatmap": {"type": "WeightedMSECriterion", "weight": 1.0},
                      "locref": {"type": "WeightedHuberCriterion", "weight": 0.05}},
        "heatmap_config": branch(num_bodyparts),
        "locref_config": branch(2 * num_bodyparts),
    }


def _resnet_model(net_type: str, num_bodyparts: int, top_down: bool) -> dict:
    model_name, channels = _RESNETS[net_type]
    return {
        "backbone": {"type": "ResNet", "model_name": model_name, "output_stride": 16,
                     "freeze_bn_stats": False, "freeze_bn_weights": False},
        "heads": {"bodypart": _heatmap_head(num_bodyparts, channels, top_down)},
        "backbone_output_channels": channels,
        "neck": None,
        "pose_model": None,
    }


_MODEL_BUILDERS: dict[str, Callable[[str, int, bool], dict]] = {
    name: _resnet_model for name in _RESNETS
}


def available_net_types() -> list[str]:
    return sorted(_MODEL_BUILDERS)


def _augmentation(top_down: bool, train: bool) -> dict:
    """DeepLabCut 3's default ``data.train`` / ``data.inference`` sections."""
    aug = {key: None for key in ("resize", "longest_max_size", "hflip", "affine",
                                 "random_bbox_transform", "crop_sampling")}
    aug.update({"hist_eq": False, "motion_blur": False, "covering": None,
                "elastic_transform": None, "grayscale": None, "gaussian_noise": None,
                "auto_padding": None, "normalize_images": True, "scale_to_unit_range": False,
                "top_down_crop": None, "collate": None})
    if top_down:
        aug["top_down_crop"] = {"width": 256, "height": 256}
    if train:
        aug["affine"] = {"p": 0.5, "rotation": 30,
                         "scaling": [1.0, 1.0] if top_down else [0.5, 1.25], "translation": 0}
        if not top_down:
            aug["crop_sampling"] = {"width": 448, "height": 448, "max_shift": 0.1,
                                    "method": "hybrid"}
        aug["motion_blur"] = True
        aug["gaussian_noise"] = 12.75
    return aug


def make_pytorch_pose_config(project_config: dict, pose_config_path: str | Path,
                             net_type: str | None = None, top_down: bool = False) -> dict:
    """Builds the pytorch_config.yaml dict for a shuffle of a DeepLabCut project.

    Args:
        project_config: the project's config.yaml as a dict (bodyparts, project_path, ...).
        pose_config_path: where the pytorch_config.yaml will live (recorded in ``metadata``).
        net_type: e.g. "resnet_50"; defaults to the project's ``default_net_type``.
        top_down: build the top-down variant of the architecture.
    """
    net_type = net_type or project_config.get("default_net_type") or "resnet_50"
    if net_type.startswith("top_down_"):
        net_type, top_down = net_type[len("top_down_"):], True
    if net_type not in _MODEL_BUILDERS:
        raise ValueError(f"unknown net_type {net_type!r}; available: "
                         f"{', '.join(available_net_types())}")
    multi_animal = bool(project_config.get("multianimalproject"))
    if multi_animal:
        bodyparts = list(project_config.get("multianimalbodyparts") or [])
        individuals = list(project_config.get("individuals") or [])
        unique = list(project_config.get("uniquebodyparts") or [])
    else:
        bodyparts = list(project_config.get("bodyparts") or [])
        individuals, unique = ["individual_1"], []
    if not bodyparts:
        raise ValueError("the project config lists no bodyparts")
    if multi_animal and not top_down:
        raise ValueError(f"multi-animal bottom-up {net_type} needs a PAF head: not available yet")
    if top_down:
        raise ValueError(f"top-down {net_type} needs a detector: not available yet")
    task = Task.TOP_DOWN if top_down else Task.BOTTOM_UP

    return {
        "config_version": 0,
        "model": _MODEL_BUILDERS[net_type](net_type, len(bodyparts), top_down),
        "net_type": net_type,
        "method": task.value.lower(),
        "device": "auto",
        "metadata": {
            "project_path": str(project_config.get("project_path", "")),
            "pose_config_path": str(pose_config_path),
            "bodyparts": bodyparts,
            "unique_bodyparts": unique,
            "individuals": individuals,
            "with_identity": (bool(project_config.get("identity")) if multi_animal else None),
        },
        "data": {
            "bbox_margin": 20,
            "colormode": "RGB",
            "gen_sampling": None,
            "inference": _augmentation(top_down, train=False),
            "train": _augmentation(top_down, train=True),
            "loader": None,
        },
        "runner": {
            "type": "PoseTrainingRunner",
            "gpus": None,
            "device": "auto",
            "key_metric": "test.mAP",
            "key_metric_asc": True,
            "eval_interval": 10,
            "optimizer": {"type": "AdamW", "params": {"lr": 0.0005}},
            "scheduler": {"type": "LRListScheduler",
                          "params": {"lr_list": [[0.0001], [1e-05]], "milestones": [90, 120]}},
            "snapshots": {"max_snapshots": 5, "save_epochs": 25, "save_optimizer_state": False},
            "snapshot_prefix": None,
            "load_weights_only": None,
        },
        "train_settings": {
            "batch_size": 8,  # DeepLabCut ignores config.yaml batch_size here
            "dataloader_workers": 0,
            "dataloader_pin_memory": False,
            "display_iters": 500,
            "epochs": 200,
            "seed": 42,
            "weight_init": None,
        },
        "inference": {
            "multithreading": {"enabled": True, "queue_length": 4, "timeout": 30.0},
            "compile": {"enabled": False, "backend": "inductor"},
            "autocast": {"enabled": False},
            "conditions": None,
            "snapshot": None,
            "eval": {"mode": "all", "pcutoff": 0.6, "comparison_bodyparts": "all",
                     "per_keypoint_evaluation": False, "force_multi_animal": False},
            "output_dir": None,
        },
        "logger": None,
        "with_center_keypoints": False,
        "detector": None,
        "resume_training_from": None,
    }
