from dlc_train.models.criterions.base import CRITERIONS, LOSS_AGGREGATORS, BaseCriterion
from dlc_train.models.criterions.weighted import (
    WeightedBCECriterion,
    WeightedCriterion,
    WeightedHuberCriterion,
    WeightedMSECriterion,
)
