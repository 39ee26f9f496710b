"""Bottom-up multi-animal PAF models (plain backbones on multi-animal projects, dlcrnet_*).

The graph holds the PAF predictor's tensor half (peak NMS, top-k, locref, line-integral
affinities, fixed shapes); the runtime's ``bottom_up_paf`` pipeline assembles animals on the
host with the decoder parameters recorded here. ``dlcrnet_stride32_ms5``'s antialiased
downscaling exports as two matmuls (``dlc_train.models.resize``), at any frame size.
"""
from __future__ import annotations

from dlc_export.errors import ExportError
from dlc_export.config_view import PoseConfigView
from dlc_export.tasks.bottom_up_plan import BottomUpPlan, optional_outputs
from dlc_export.wrappers import BottomUpPAF
from dlc_runtime.bundle import TensorSpec
from dlc_train.models.model import PoseModel


def build(config: PoseConfigView, model: PoseModel) -> BottomUpPlan:
    bodyparts, unique, individuals = (config.bodyparts, config.unique_bodyparts,
                                      config.individuals)
    where = config.where
    predictor = model.heads["bodypart"].predictor
    if predictor.num_uniquebodyparts:
        raise ExportError(f"{where}: a PAF predictor with num_uniquebodyparts > 0 (unique "
                          "bodyparts in the PAF heatmaps) is not exported; DeepLabCut 3 puts "
                          "them in a separate unique_bodypart head")
    if predictor.num_multibodyparts != len(bodyparts):
        raise ExportError(f"{where}: the PAF predictor decodes {predictor.num_multibodyparts} "
                          f"bodyparts but metadata lists {len(bodyparts)}")
    wrapper = BottomUpPAF(model).eval()
    k, p, e = len(bodyparts), predictor.max_peaks, len(predictor.edges_to_keep)
    outputs = [TensorSpec("peaks", "float32", ["batch", k, p, 2]),
               TensorSpec("scores", "float32", ["batch", k, p]),
               TensorSpec("peak_index", "int64", ["batch", k, p]),
               TensorSpec("affinities", "float32", ["batch", e, p, p])]
    outputs += optional_outputs(config, ["batch", k, p], wrapper.identity_output)
    decoder = {"type": "paf", "stride": wrapper.stride, "num_animals": predictor.num_animals,
               "max_peaks": p, "graph": [list(edge) for edge in predictor.graph],
               "edges_to_keep": list(predictor.edges_to_keep),
               "nms_radius": predictor.nms_radius, "sigma": predictor.sigma,
               "peak_threshold": predictor.peak_threshold,
               "locref_std": predictor.locref_stdev, "min_affinity": predictor.min_affinity,
               "num_samples": predictor.num_samples, "apply_sigmoid": predictor.apply_sigmoid,
               "clip_scores": predictor.clip_scores, "identity": wrapper.with_identity}
    return BottomUpPlan(kind="bottom_up_paf", wrapper=wrapper, outputs=outputs, decoder=decoder,
                      individuals=individuals or ["individual_1"], unique_bodyparts=unique,
                      multi_animal=True)
