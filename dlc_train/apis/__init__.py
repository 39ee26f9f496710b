"""High-level entry points, named as in DeepLabCut."""
from dlc_train.apis.train import train_network

__all__ = ["train_network"]
