from dlc_train.models.backbones.base import BACKBONES, BaseBackbone
