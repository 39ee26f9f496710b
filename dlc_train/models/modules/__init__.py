"""Small shared modules used by several model families (condition encoders, attention blocks)."""
from dlc_train.models.modules.conditions import (KEYPOINT_ENCODERS, BaseKeypointEncoder,
                                                 ColoredKeypointEncoder, StackedKeypointEncoder)

__all__ = ["KEYPOINT_ENCODERS", "BaseKeypointEncoder", "StackedKeypointEncoder",
           "ColoredKeypointEncoder"]
