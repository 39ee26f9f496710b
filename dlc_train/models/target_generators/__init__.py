from dlc_train.models.target_generators.base import TARGET_GENERATORS, BaseGenerator
from dlc_train.models.target_generators.heatmap_targets import (
    HeatmapGaussianGenerator,
    HeatmapGenerator,
    HeatmapPlateauGenerator,
)
