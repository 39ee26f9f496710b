"""Conditional top-down (BUCTD) models: the pose model also reads the keypoints a bottom-up model
predicted (its "conditions"), drawn as heatmaps by a keypoint encoder.

- ``ctd_prenet_*``: ``CondPreNet`` fuses image and condition maps in front of a plain backbone
  (keys ``backbone.backbone.*``, ``backbone.rgb_preNet.*``, ``backbone.cond_preNet.*``).
- ``ctd_coam_w*``: ``HRNetCoAM``, an HRNet with conditional attention modules.

DeepLabCut's ``config/ctd/*.yaml``. No DeepLabCut-written sample exists in ../shared, so these
templates follow those files and the key lists ``state_dict_keys/ctd_*.txt`` (heatmap + locref
1x1 heads for the HRNet variants).
"""
from __future__ import annotations

import copy

from dlc_train.config.architectures.base import Architecture, ProjectShape, register
from dlc_train.config.architectures.cspnext import CSPNEXTS, cspnext_backbone
from dlc_train.config.architectures.heads import LOCREF_STD
from dlc_train.config.architectures.hrnet import hrnet_backbone
from dlc_train.config.architectures.rtmpose import rtmcc_head
from dlc_train.task import Task

IMG_SIZE = 256

# GenSamplingConfig: how conditions are sampled from the ground truth during training.
GEN_SAMPLING = {"keypoint_sigmas": 0.1, "keypoints_symmetry": None, "jitter_prob": 0.16,
                "swap_prob": 0.08, "inv_prob": 0.03, "miss_prob": 0.1}

CTD_RTMPOSE_RUNNER = {
    "optimizer": {"type": "AdamW", "params": {"lr": 1e-05}},
    "scheduler": {"type": "LRListScheduler",
                  "params": {"lr_list": [[0.001], [0.0001], [1e-05]],
                             "milestones": [5, 300, 360]}},
}
CTD_RTMPOSE_TRAIN_SETTINGS = {"batch_size": 32, "dataloader_workers": 4,
                              "dataloader_pin_memory": False, "epochs": 400}


def _data() -> dict:
    crop = {"width": IMG_SIZE, "height": IMG_SIZE, "crop_with_context": False}
    return {"bbox_margin": 25, "gen_sampling": dict(GEN_SAMPLING),
            "inference": {"top_down_crop": dict(crop)}, "train": {"top_down_crop": dict(crop)}}


def _keypoint_encoder(num_bodyparts: int) -> dict:
    # One condition map per bodyparts: the conditional stems take num_bodyparts channels.
    return {"type": "StackedKeypointEncoder", "num_joints": num_bodyparts,
            "kernel_size": [15, 15]}


def _hrnet_ctd_head(num_bodyparts: int, channels: int) -> dict:
    def branch(out_channels: int) -> dict:
        return {"channels": [channels], "kernel_size": [], "strides": [],
                "final_conv": {"out_channels": out_channels, "kernel_size": 1}}

    return {"type": "HeatmapHead", "weight_init": "normal",
            "predictor": {"type": "HeatmapPredictor", "apply_sigmoid": False,
                          "clip_scores": True, "location_refinement": True,
                          "locref_std": LOCREF_STD},
            "target_generator": {"type": "HeatmapGaussianGenerator",
                                 "num_heatmaps": num_bodyparts, "pos_dist_thresh": 17,
                                 "heatmap_mode": "KEYPOINT", "generate_locref": True,
                                 "locref_std": LOCREF_STD},
            "criterion": {"heatmap": {"type": "WeightedMSECriterion", "weight": 1.0},
                          "locref": {"type": "WeightedHuberCriterion", "weight": 0.05}},
            "heatmap_config": branch(num_bodyparts),
            "locref_config": branch(2 * num_bodyparts)}


def _prenet_hrnet(width: int):
    def template(shape: ProjectShape, task: Task) -> dict:
        k = shape.num_bodyparts
        backbone = hrnet_backbone(f"hrnet_w{width}", freeze_bn_stats=False)
        return {"data": _data(), "method": "ctd",
                "model": {"backbone": {"type": "CondPreNet", "backbone": backbone,
                                       "kpt_encoder": _keypoint_encoder(k),
                                       "img_size": [IMG_SIZE, IMG_SIZE]},
                          "backbone_output_channels": width,
                          "heads": {"bodypart": _hrnet_ctd_head(k, width)}}}
    return template


def _coam(width: int):
    def template(shape: ProjectShape, task: Task) -> dict:
        k = shape.num_bodyparts
        backbone = {"type": "HRNetCoAM", "base_model_name": f"hrnet_w{width}",
                    "pretrained": True, "freeze_bn_stats": False, "freeze_bn_weights": False,
                    "coam_modules": [2], "channel_att_only": False, "att_heads": 1,
                    "kpt_encoder": _keypoint_encoder(k), "img_size": [IMG_SIZE, IMG_SIZE]}
        return {"data": _data(), "method": "ctd",
                "model": {"backbone": backbone, "backbone_output_channels": width,
                          "heads": {"bodypart": _hrnet_ctd_head(k, width)}}}
    return template


def _prenet_rtmpose(backbone_name: str):
    def template(shape: ProjectShape, task: Task) -> dict:
        k, channels = shape.num_bodyparts, CSPNEXTS[backbone_name][2]
        return {"data": _data(), "method": "ctd",
                "model": {"backbone": {"type": "CondPreNet",
                                       "backbone": cspnext_backbone(backbone_name),
                                       "kpt_encoder": _keypoint_encoder(k),
                                       "img_size": [IMG_SIZE, IMG_SIZE]},
                          "backbone_output_channels": channels,
                          "heads": {"bodypart": rtmcc_head(k, channels, IMG_SIZE, 5.66)}},
                "runner": copy.deepcopy(CTD_RTMPOSE_RUNNER),
                "train_settings": dict(CTD_RTMPOSE_TRAIN_SETTINGS)}
    return template


for _width in (32, 48):
    register(Architecture(f"ctd_prenet_hrnet_w{_width}", "ctd", _prenet_hrnet(_width),
                          task=Task.COND_TOP_DOWN))
    register(Architecture(f"ctd_coam_w{_width}", "ctd", _coam(_width), task=Task.COND_TOP_DOWN))
for _size in ("s", "m", "x"):
    register(Architecture(f"ctd_prenet_rtmpose_{_size}", "ctd", _prenet_rtmpose(f"cspnext_{_size}"),
                          task=Task.COND_TOP_DOWN))
