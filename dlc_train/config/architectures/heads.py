"""Head templates shared by the backbones: DeepLabCut's ``config/base/head_*.yaml``."""
from __future__ import annotations

import copy
from typing import Callable

from dlc_train.config.architectures.base import Architecture, ProjectShape, Template, register
from dlc_train.task import Task

LOCREF_STD = 7.2801


def heatmap_head(num_bodyparts: int, in_channels: int, top_down: bool) -> dict:
    """HeatmapHead: one stride-2 deconv (bottom-up, ``head_bodyparts.yaml``) or a 1x1
    ``final_conv`` (top-down, ``head_topdown.yaml``)."""

    def branch(out_channels: int) -> dict:
        if top_down:
            return {"channels": [in_channels], "kernel_size": [], "strides": [],
                    "final_conv": {"out_channels": out_channels, "kernel_size": 1}}
        return {"channels": [in_channels, out_channels], "kernel_size": [3], "strides": [2]}

    generator = {"type": "HeatmapGaussianGenerator", "num_heatmaps": num_bodyparts,
                 "pos_dist_thresh": 17, "heatmap_mode": "KEYPOINT",
                 "gradient_masking": top_down}
    if top_down:
        # Top-down crops hold one animal: the background is not penalized.
        generator["background_weight"] = 0.0
    generator.update({"generate_locref": True, "locref_std": LOCREF_STD})
    return {
        "type": "HeatmapHead",
        "weight_init": "normal",
        "predictor": {"type": "HeatmapPredictor", "apply_sigmoid": False, "clip_scores": True,
                      "location_refinement": True, "locref_std": LOCREF_STD},
        "target_generator": generator,
        "criterion": {"heatmap": {"type": "WeightedMSECriterion", "weight": 1.0},
                      "locref": {"type": "WeightedHuberCriterion", "weight": 0.05}},
        "heatmap_config": branch(num_bodyparts),
        "locref_config": branch(2 * num_bodyparts),
    }


def paf_predictor(shape: ProjectShape) -> dict:
    """PartAffinityFieldPredictor as in ``head_bodyparts_with_paf.yaml`` / ``dlcrnet/*.yaml``."""
    edges = shape.paf_edges_to_keep
    return {"type": "PartAffinityFieldPredictor", "num_animals": shape.num_individuals,
            "num_multibodyparts": shape.num_bodyparts, "num_uniquebodyparts": 0,
            "nms_radius": 5, "sigma": 1.0, "locref_stdev": LOCREF_STD, "min_affinity": 0.05,
            "graph": [list(e) for e in shape.paf_graph],
            "edges_to_keep": list(edges) if edges is not None else None}


def paf_generators(shape: ProjectShape, gradient_masking: bool | None) -> dict:
    plateau = {"type": "HeatmapPlateauGenerator", "num_heatmaps": shape.num_bodyparts,
               "pos_dist_thresh": 17, "heatmap_mode": "KEYPOINT"}
    if gradient_masking is not None:
        plateau["gradient_masking"] = gradient_masking
    plateau.update({"generate_locref": True, "locref_std": LOCREF_STD})
    return {"type": "SequentialGenerator",
            "generators": [plateau, {"type": "PartAffinityFieldGenerator",
                                     "graph": [list(e) for e in shape.paf_graph], "width": 20}]}


PAF_CRITERION = {"heatmap": {"type": "WeightedBCECriterion", "weight": 1.0},
                 "locref": {"type": "WeightedHuberCriterion", "weight": 0.05},
                 "paf": {"type": "WeightedHuberCriterion", "weight": 0.1}}


def paf_head(shape: ProjectShape, in_channels: int) -> dict:
    """DLCRNetHead on a plain backbone (``head_bodyparts_with_paf.yaml``): multi-animal BU."""
    predictor = paf_predictor(shape)
    predictor.update({"apply_sigmoid": True, "clip_scores": False})
    k, limbs = shape.num_bodyparts, len(shape.paf_graph)

    def branch(out_channels: int) -> dict:
        return {"channels": [in_channels, out_channels], "kernel_size": [3], "strides": [2]}

    return {"type": "DLCRNetHead", "predictor": predictor,
            "target_generator": paf_generators(shape, gradient_masking=False),
            "criterion": copy.deepcopy(PAF_CRITERION),
            "heatmap_config": branch(k), "locref_config": branch(2 * k),
            "paf_config": branch(2 * limbs), "num_stages": 5}


def unique_bodypart_head(num_unique: int, in_channels: int) -> dict:
    """``head_bodyparts.yaml`` for the unique bodyparts, reading ``keypoints_unique`` labels."""
    head = heatmap_head(num_unique, in_channels, top_down=False)
    head["target_generator"]["label_keypoint_key"] = "keypoints_unique"
    return head


def identity_head(num_individuals: int, in_channels: int) -> dict:
    """``head_identity.yaml``: one heatmap per individual, for re-identification."""
    return {"type": "HeatmapHead",
            "predictor": {"type": "IdentityPredictor", "apply_sigmoid": True},
            "target_generator": {"type": "HeatmapPlateauGenerator",
                                 "num_heatmaps": num_individuals, "pos_dist_thresh": 17,
                                 "heatmap_mode": "INDIVIDUAL", "generate_locref": False},
            "criterion": {"heatmap": {"type": "WeightedBCECriterion", "weight": 1.0}},
            "heatmap_config": {"channels": [in_channels, num_individuals], "kernel_size": [3],
                               "strides": [2]}}


def backbone_with_head(template: Template, shape: ProjectShape, task: Task) -> Template:
    """Completes a backbone template with DeepLabCut's head for the task.

    Multi-animal bottom-up takes the heatmap + PAF head; single animal and top-down the heatmap
    head (DeepLabCut's ``create_backbone_with_{paf,heatmap}_model``).
    """
    channels = template["model"]["backbone_output_channels"]
    if task == Task.BOTTOM_UP and shape.multi_animal:
        head = paf_head(shape, channels)
    else:
        head = heatmap_head(shape.num_bodyparts, channels, top_down=task == Task.TOP_DOWN)
    template["model"]["heads"] = {"bodypart": head}
    template["method"] = "td" if task == Task.TOP_DOWN else "bu"
    return template


def register_backbone(name: str, family: str, backbone_template: Callable[[], Template]) -> None:
    """Registers a plain backbone: its template is completed with a head by
    :func:`backbone_with_head` for the project's task."""

    def template(shape: ProjectShape, task: Task) -> Template:
        return backbone_with_head(backbone_template(), shape, task)

    register(Architecture(name, family, template, is_backbone=True))
