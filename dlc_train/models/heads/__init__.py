from dlc_train.models.heads.base import HEADS, BaseHead
from dlc_train.models.heads.simple_head import DeconvModule, HeatmapHead
from dlc_train.models.heads.rtmcc import RTMCCHead
from dlc_train.models.heads.dekr import DEKRHead
from dlc_train.models.heads.dlcrnet import DLCRNetHead
