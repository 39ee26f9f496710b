from dlc_train.models.necks.base import NECKS, BaseNeck

__all__ = ["NECKS", "BaseNeck"]
