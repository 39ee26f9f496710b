from dlc_train.models.heads.base import HEADS, BaseHead
from dlc_train.models.heads.simple_head import DeconvModule, HeatmapHead
