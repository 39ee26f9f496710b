"""RTMPose: CSPNeXt + RTMCC (SimCC) head, top-down (DeepLabCut's ``config/rtmpose/*.yaml``)."""
from __future__ import annotations

import copy

from dlc_train.config.architectures.base import Architecture, ProjectShape, register
from dlc_train.config.architectures.cspnext import CSPNEXTS, cspnext_backbone
from dlc_train.task import Task

# net_type -> (backbone, crop size, SimCC sigma); the backbone's stride is 32.
RTMPOSES = {
    "rtmpose_s": ("cspnext_s", 256, 5.66),
    "rtmpose_m": ("cspnext_m", 256, 5.66),
    "rtmpose_x": ("cspnext_x", 384, 6.93),
}

RTMPOSE_RUNNER = {
    "optimizer": {"type": "AdamW", "params": {"lr": 0.001}},
    "scheduler": {"type": "SequentialLR", "params": {
        "schedulers": [
            {"type": "LinearLR",
             "params": {"start_factor": 0.001, "end_factor": 1.0, "total_iters": 5}},
            {"type": "CosineAnnealingLR", "params": {"T_max": 200, "eta_min": 5e-05}},
            {"type": "LRListScheduler", "params": {"milestones": [0], "lr_list": [[5e-05]]}},
        ],
        "milestones": [200, 400]}},
}
RTMPOSE_TRAIN_SETTINGS = {"batch_size": 32, "dataloader_workers": 4,
                          "dataloader_pin_memory": False, "epochs": 400}
RANDOM_BBOX_TRANSFORM = {"shift_factor": 0.16, "shift_prob": 0.3, "scale_factor": [0.75, 1.25],
                         "scale_prob": 1.0, "p": 1.0}


def rtmcc_head(num_bodyparts: int, in_channels: int, size: int, sigma: float) -> dict:
    """RTMCCHead: a 7x7 conv to one token per keypoint, a GAU block, SimCC x/y classifiers."""
    return {
        "type": "RTMCCHead",
        "weight_init": "RTMPose",
        "target_generator": {"type": "SimCCGenerator", "input_size": [size, size],
                             "smoothing_type": "gaussian", "sigma": [sigma, sigma],
                             "simcc_split_ratio": 2.0, "label_smooth_weight": 0.0,
                             "normalize": False},
        "criterion": {axis: {"type": "KLDiscreteLoss", "use_target_weight": True, "beta": 10.0,
                             "label_softmax": True} for axis in ("x", "y")},
        "predictor": {"type": "SimCCPredictor", "simcc_split_ratio": 2.0,
                      "sigma": [sigma, sigma], "decode_beta": 150.0, "apply_softmax": True,
                      "normalize_outputs": False},
        "input_size": [size, size],
        "in_channels": in_channels,
        "out_channels": num_bodyparts,
        "in_featuremap_size": [size // 32, size // 32],
        "simcc_split_ratio": 2.0,
        "final_layer_kernel_size": 7,
        "gau_cfg": {"hidden_dims": 256, "s": 128, "expansion_factor": 2, "dropout_rate": 0,
                    "drop_path": 0.0, "act_fn": "SiLU", "use_rel_bias": False,
                    "pos_enc": False},
    }


def _template(backbone: str, size: int, sigma: float):
    def template(shape: ProjectShape, task: Task) -> dict:
        channels = CSPNEXTS[backbone][2]
        crop = {"width": size, "height": size}
        return {"data": {"inference": {"top_down_crop": dict(crop)},
                         "train": {"random_bbox_transform": copy.deepcopy(RANDOM_BBOX_TRANSFORM),
                                   "top_down_crop": dict(crop)}},
                "method": "td",
                "model": {"backbone": cspnext_backbone(backbone),
                          "backbone_output_channels": channels,
                          "heads": {"bodypart": rtmcc_head(shape.num_bodyparts, channels, size,
                                                           sigma)}},
                "runner": copy.deepcopy(RTMPOSE_RUNNER),
                "train_settings": dict(RTMPOSE_TRAIN_SETTINGS)}
    return template


for _name, (_backbone, _size, _sigma) in RTMPOSES.items():
    register(Architecture(_name, "rtmpose", _template(_backbone, _size, _sigma),
                          task=Task.TOP_DOWN))
