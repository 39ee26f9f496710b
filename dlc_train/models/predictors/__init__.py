from dlc_train.models.predictors.base import PREDICTORS, BasePredictor
from dlc_train.models.predictors.heatmap import HeatmapPredictor
from dlc_train.models.predictors.simcc import SimCCPredictor
from dlc_train.models.predictors.dekr import DEKRPredictor
from dlc_train.models.predictors.paf import PartAffinityFieldPredictor
from dlc_train.models.predictors.identity import IdentityPredictor
