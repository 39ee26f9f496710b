from dlc_train.models.criterions.base import CRITERIONS, LOSS_AGGREGATORS, BaseCriterion
from dlc_train.models.criterions.weighted import (
    WeightedBCECriterion,
    WeightedCriterion,
    WeightedHuberCriterion,
    WeightedMSECriterion,
)
from dlc_train.models.criterions.kl import KLDiscreteLoss
from dlc_train.models.criterions.dekr import DEKRHeatmapLoss, DEKROffsetLoss
