from dlc_train.models.predictors.base import PREDICTORS, BasePredictor
