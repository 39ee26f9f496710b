from dlc_train.models.target_generators.base import TARGET_GENERATORS, BaseGenerator
from dlc_train.models.target_generators.heatmap_targets import (
    HeatmapGaussianGenerator,
    HeatmapGenerator,
    HeatmapPlateauGenerator,
)
from dlc_train.models.target_generators.simcc_targets import SimCCGenerator
from dlc_train.models.target_generators.dekr_targets import DEKRGenerator
from dlc_train.models.target_generators.paf_targets import PartAffinityFieldGenerator, SequentialGenerator
