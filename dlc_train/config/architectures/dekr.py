"""DEKR: HRNet with all branches upsampled and concatenated, heatmap (+ centre) and offset heads.

Bottom-up multi-animal; the centre keypoint is an extra heatmap channel, hence
``with_center_keypoints: true``. DeepLabCut's ``config/dekr/dekr_w*.yaml``.
"""
from __future__ import annotations

from dlc_train.config.architectures.base import Architecture, ProjectShape, register
from dlc_train.config.architectures.hrnet import AUTO_PADDING, WIDTHS, hrnet_backbone
from dlc_train.task import Task

# keypoint_score_type differs per variant in DeepLabCut's files (w48 scores by the centre).
_SCORE_TYPE = {18: "combined", 32: "combined", 48: "center"}
NUM_OFFSETS_PER_KEYPOINT = 15


def _template(width: int):
    def template(shape: ProjectShape, task: Task) -> dict:
        channels = 15 * width  # the four branches concatenated: w + 2w + 4w + 8w
        k = shape.num_bodyparts
        head = {
            "type": "DEKRHead",
            "weight_init": "dekr",
            "target_generator": {"type": "DEKRGenerator", "num_joints": k,
                                 "pos_dist_thresh": 17, "bg_weight": 0.1},
            "criterion": {"heatmap": {"type": "DEKRHeatmapLoss", "weight": 1},
                          "offset": {"type": "DEKROffsetLoss", "weight": 0.03}},
            "predictor": {"type": "DEKRPredictor", "apply_sigmoid": False, "use_heatmap": False,
                          "clip_scores": True, "num_animals": shape.num_individuals,
                          "keypoint_score_type": _SCORE_TYPE[width],
                          "max_absorb_distance": 75, "nms_threshold": 0.05,
                          "apply_pose_nms": True},
            "heatmap_config": {"channels": [channels, width, k + 1], "num_blocks": 1,
                               "dilation_rate": 1, "final_conv_kernel": 1},
            "offset_config": {"channels": [channels, NUM_OFFSETS_PER_KEYPOINT * k, k],
                              "num_offset_per_kpt": NUM_OFFSETS_PER_KEYPOINT, "num_blocks": 2,
                              "dilation_rate": 1, "final_conv_kernel": 1},
        }
        # DeepLabCut pads only at inference: training crops are 448x448 already.
        return {"data": {"inference": {"auto_padding": dict(AUTO_PADDING)}},
                "method": "bu",
                "model": {"backbone": hrnet_backbone(f"hrnet_w{width}", interpolate_branches=True,
                                                     freeze_bn_stats=False),
                          "backbone_output_channels": channels,
                          "heads": {"bodypart": head}},
                "with_center_keypoints": True}
    return template


for _width in WIDTHS.values():
    register(Architecture(f"dekr_w{_width}", "dekr", _template(_width), task=Task.BOTTOM_UP))
