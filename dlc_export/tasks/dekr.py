"""DEKR models (dekr_w18/32/48): the whole DEKRPredictor (centres, offsets, pose NMS) in the
graph; keypoints (B, num_animals, K, 3) out, padded slots x = y = -1, score 0."""
from __future__ import annotations

from dlc_export.config_view import PoseConfigView
from dlc_export.tasks.bottom_up_plan import BottomUpPlan, optional_outputs
from dlc_export.wrappers import BottomUpPoses
from dlc_runtime.bundle import TensorSpec
from dlc_train.models.model import PoseModel


def build(config: PoseConfigView, model: PoseModel) -> BottomUpPlan:
    bodyparts, unique, individuals = (config.bodyparts, config.unique_bodyparts,
                                      config.individuals)
    where = config.where
    predictor = model.heads["bodypart"].predictor
    wrapper = BottomUpPoses(model).eval()
    n, k = predictor.num_animals, len(bodyparts)
    outputs = [TensorSpec("keypoints", "float32", ["batch", n, k, 3])]
    outputs += optional_outputs(config, ["batch", n, k], wrapper.identity_output)
    decoder = {"type": "dekr", "stride": wrapper.stride, "num_animals": n,
               "apply_sigmoid": predictor.apply_sigmoid, "clip_scores": predictor.clip_scores,
               "use_heatmap": predictor.use_heatmap,
               "keypoint_score_type": predictor.keypoint_score_type,
               "max_absorb_distance": predictor.max_absorb_distance,
               "apply_pose_nms": predictor.apply_pose_nms,
               "nms_threshold": predictor.nms_threshold,
               "nms_keypoint_fraction": predictor.nms_keypoint_fraction,
               "identity": wrapper.with_identity}
    multi_animal = len(individuals) > 1 or bool(unique) or n > 1
    return BottomUpPlan(kind="bottom_up_dekr", wrapper=wrapper, outputs=outputs, decoder=decoder,
                      individuals=individuals or ["individual_1"], unique_bodyparts=unique,
                      multi_animal=multi_animal)
