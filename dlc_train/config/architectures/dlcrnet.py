"""DLCRNet: ResNet-50 with multi-scale fusion and a multi-stage heatmap + locref + PAF head.

DeepLabCut's ``config/dlcrnet/dlcrnet_stride{16,32}_ms5.yaml``; bottom-up multi-animal.
"""
from __future__ import annotations

import copy

from dlc_train.config.architectures.base import Architecture, ProjectShape, register
from dlc_train.config.architectures.heads import PAF_CRITERION, paf_generators, paf_predictor
from dlc_train.task import Task

CHANNELS = 2304  # ResNet-50's 2048 + the 256 fused multi-scale channels

DLCRNET_RUNNER = {
    "eval_interval": 25,
    "optimizer": {"type": "AdamW", "params": {"lr": 0.0001}},
    "scheduler": {"type": "LRListScheduler",
                  "params": {"lr_list": [[1e-05], [1e-06]], "milestones": [160, 190]}},
}


def _template(output_stride: int):
    # At output stride 32 two stride-2 deconvs bring the maps back to stride 8.
    hidden = [CHANNELS // 2] if output_stride == 32 else []
    kernels = [3] * (len(hidden) + 1)

    def template(shape: ProjectShape, task: Task) -> dict:
        k, limbs = shape.num_bodyparts, len(shape.paf_graph)

        def branch(out: int) -> dict:
            return {"channels": [CHANNELS, *hidden, out], "kernel_size": list(kernels),
                    "strides": [2] * len(kernels)}

        head = {"type": "DLCRNetHead", "predictor": paf_predictor(shape),
                "target_generator": paf_generators(shape, gradient_masking=None),
                "criterion": copy.deepcopy(PAF_CRITERION),
                "heatmap_config": branch(k), "locref_config": branch(2 * k),
                "paf_config": branch(2 * limbs), "num_stages": 5}
        return {"method": "bu",
                "model": {"backbone": {"type": "DLCRNet", "model_name": "resnet50",
                                       "pretrained": True, "output_stride": output_stride},
                          "backbone_output_channels": CHANNELS,
                          "pose_model": {"stride": 8},
                          "heads": {"bodypart": head}},
                "runner": copy.deepcopy(DLCRNET_RUNNER)}
    return template


for _stride in (16, 32):
    register(Architecture(f"dlcrnet_stride{_stride}_ms5", "dlcrnet", _template(_stride),
                          task=Task.BOTTOM_UP))
