from dlc_train.models.backbones.base import BACKBONES, BaseBackbone
from dlc_train.models.backbones.resnet import ResNet
from dlc_train.models.backbones.hrnet import HRNet
from dlc_train.models.backbones.cspnext import CSPNeXt
from dlc_train.models.backbones.dlcrnet import DLCRNet
from dlc_train.models.backbones.ctd import CondPreNet, HRNetCoAM
