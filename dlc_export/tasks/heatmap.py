"""Bottom-up single-animal heatmap models (resnet_*, hrnet_w*, cspnext_* on single-animal
projects): argmax + locref inside the graph, keypoints (B, 1, K, 3) out."""
from __future__ import annotations

from dlc_export.errors import ExportError
from dlc_export.config_view import PoseConfigView
from dlc_export.tasks.bottom_up_plan import BottomUpPlan
from dlc_export.wrappers import BottomUpSingleAnimal
from dlc_runtime.bundle import TensorSpec
from dlc_train.models.model import PoseModel


def build(config: PoseConfigView, model: PoseModel) -> BottomUpPlan:
    bodyparts, unique, individuals = (config.bodyparts, config.unique_bodyparts,
                                      config.individuals)
    where = config.where
    if len(individuals or [1]) != 1 or unique:
        raise ExportError(f"{where}: a heatmap (single-animal) model with "
                          f"{len(individuals)} individuals and {len(unique)} unique bodyparts; "
                          "multi-animal projects export PAF (resnet_50, dlcrnet_*) or DEKR models")
    predictor = config.predictor
    wrapper = BottomUpSingleAnimal(model).eval()
    return BottomUpPlan(
        kind="bottom_up_heatmap", wrapper=wrapper,
        outputs=[TensorSpec("keypoints", "float32", ["batch", 1, len(bodyparts), 3])],
        decoder={"type": "heatmap_argmax", "stride": wrapper.stride,
                 "locref_std": predictor.get("locref_std", 7.2801),
                 "location_refinement": predictor.get("location_refinement", True),
                 "apply_sigmoid": predictor.get("apply_sigmoid", False),
                 "clip_scores": predictor.get("clip_scores", False)},
        individuals=individuals or ["individual_1"])
