from dlc_train.models.heads.base import HEADS, BaseHead
