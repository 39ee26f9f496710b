from dlc_train.models.backbones.base import BACKBONES, BaseBackbone
from dlc_train.models.backbones.resnet import ResNet
