from dlc_train.models.criterions.base import CRITERIONS, LOSS_AGGREGATORS, BaseCriterion
