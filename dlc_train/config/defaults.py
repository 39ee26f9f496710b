"""DeepLabCut 3's base sections of a pytorch_config.yaml (``config/base/*.yaml``), in its key order.

Every section is a fresh dict, so callers may change what they get.
"""
from __future__ import annotations

from typing import Any

from dlc_train.task import Task

TRANSFORM_KEYS = ("resize", "longest_max_size", "hflip", "affine", "random_bbox_transform",
                  "crop_sampling", "hist_eq", "motion_blur", "covering", "elastic_transform",
                  "grayscale", "gaussian_noise", "auto_padding", "normalize_images",
                  "scale_to_unit_range", "top_down_crop", "collate")

#: The options each mapping-valued transform key takes, with DeepLabCut 3's defaults (None:
#: required, or "not set" where DeepLabCut passes None on).
TRANSFORM_OPTIONS: dict[str, dict[str, Any]] = {
    "resize": {"height": None, "width": None, "keep_ratio": True},
    "hflip": {"p": 0.5, "symmetries": None},
    "affine": {"p": 0.9, "rotation": None, "scaling": None, "translation": None},
    "random_bbox_transform": {"shift_factor": 0.1, "shift_prob": 0.25,
                              "scale_factor": (0.75, 1.25), "scale_prob": 1.0, "p": 1.0},
    "crop_sampling": {"width": None, "height": None, "max_shift": 0.4, "method": "hybrid"},
    "auto_padding": {"min_height": None, "min_width": None, "pad_height_divisor": 1,
                     "pad_width_divisor": 1, "position": "random", "border_mode": "reflect_101",
                     "border_value": None, "border_mask_value": None},
}


def transforms(**values) -> dict:
    """A ``data.train`` / ``data.inference`` section: every transform, unset ones null."""
    out = {key: None for key in TRANSFORM_KEYS}
    out.update({"hist_eq": False, "motion_blur": False, "normalize_images": True,
                "scale_to_unit_range": False})
    unknown = set(values) - set(TRANSFORM_KEYS)
    if unknown:
        raise KeyError(f"unknown transforms {sorted(unknown)}")
    out.update(values)
    return out


def augmentation(task: Task) -> dict:
    """``aug_default.yaml`` (bottom-up) or ``aug_top_down.yaml`` (top-down and CTD)."""
    if task == Task.BOTTOM_UP:
        train = transforms(affine={"p": 0.5, "rotation": 30, "scaling": [0.5, 1.25],
                                   "translation": 0},
                           crop_sampling={"width": 448, "height": 448, "max_shift": 0.1,
                                          "method": "hybrid"},
                           motion_blur=True, gaussian_noise=12.75)
        return {"inference": transforms(), "train": train}
    crop = {"width": 256, "height": 256}
    train = transforms(affine={"p": 0.5, "rotation": 30, "scaling": [1.0, 1.0], "translation": 0},
                       motion_blur=True, gaussian_noise=12.75, top_down_crop=dict(crop))
    return {"inference": transforms(top_down_crop=dict(crop)), "train": train}


def runner(kind: str = "PoseTrainingRunner") -> dict:
    return {"type": kind, "gpus": None, "device": "auto", "key_metric": "test.mAP",
            "key_metric_asc": True, "eval_interval": 10,
            "optimizer": {"type": "AdamW", "params": {"lr": 0.0005}},
            "scheduler": {"type": "LRListScheduler",
                          "params": {"lr_list": [[0.0001], [1e-05]], "milestones": [90, 120]}},
            "snapshots": {"max_snapshots": 5, "save_epochs": 25, "save_optimizer_state": False},
            "snapshot_prefix": None, "load_weights_only": None}


def train_settings() -> dict:
    return {"batch_size": 8, "dataloader_workers": 0, "dataloader_pin_memory": False,
            "display_iters": 500, "epochs": 200, "seed": 42, "weight_init": None}


def inference() -> dict:
    return {"multithreading": {"enabled": True, "queue_length": 4, "timeout": 30.0},
            "compile": {"enabled": False, "backend": "inductor"},
            "autocast": {"enabled": False},
            "conditions": None,
            "snapshot": None,
            "eval": {"mode": "all", "pcutoff": 0.6, "comparison_bodyparts": "all",
                     "per_keypoint_evaluation": False, "force_multi_animal": False},
            "output_dir": None}


def pose_config(task: Task) -> dict:
    """The base pose config (``base.yaml`` + the task's augmentation), top-level keys in the
    order DeepLabCut writes them."""
    return {
        "config_version": 0,
        "model": {"backbone": None, "heads": None, "backbone_output_channels": None,
                  "neck": None, "pose_model": None},
        "net_type": None,
        "method": "bu",
        "device": "auto",
        "metadata": None,
        "data": {"bbox_margin": 20, "colormode": "RGB", "gen_sampling": None,
                 **augmentation(task), "loader": None},
        "runner": runner(),
        "train_settings": train_settings(),
        "inference": inference(),
        "logger": None,
        "with_center_keypoints": False,
        "detector": None,
        "resume_training_from": None,
    }
