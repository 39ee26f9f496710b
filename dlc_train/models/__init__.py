"""Models: component registries and the PoseModel that assembles them.

Importing this package imports every component module, which registers it.
"""
from dlc_train.models.backbones import BACKBONES, BaseBackbone
from dlc_train.models.criterions import CRITERIONS, LOSS_AGGREGATORS, BaseCriterion
from dlc_train.models.heads import HEADS, BaseHead
from dlc_train.models.model import PoseModel
from dlc_train.models.loading import build_model_from_config  # noqa: F401
from dlc_train.models.necks import NECKS, BaseNeck
from dlc_train.models.predictors import PREDICTORS, BasePredictor
from dlc_train.models.target_generators import TARGET_GENERATORS, BaseGenerator
from dlc_train.models.detectors import DETECTORS, BaseDetector  # noqa: F401

__all__ = ["BACKBONES", "NECKS", "HEADS", "PREDICTORS", "TARGET_GENERATORS", "CRITERIONS",
           "LOSS_AGGREGATORS", "BaseBackbone", "BaseNeck", "BaseHead", "BasePredictor",
           "BaseGenerator", "BaseCriterion", "PoseModel"]
