from dlc_train.models.predictors.base import PREDICTORS, BasePredictor
from dlc_train.models.predictors.heatmap import HeatmapPredictor
