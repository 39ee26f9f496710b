"""Architecture families: each module describes the ``model`` section (and the training defaults
that go with it) of the net_types it registers. Adding a family is one module and one import."""
from dlc_train.config.architectures.base import ARCHITECTURES, Architecture, ProjectShape, register
from dlc_train.config.architectures.heads import register_backbone
from dlc_train.config.architectures import (cspnext, ctd, dekr, dlcrnet, hrnet,  # noqa: F401
                                            resnet, rtmpose)

__all__ = ["ARCHITECTURES", "Architecture", "ProjectShape", "register", "register_backbone"]
