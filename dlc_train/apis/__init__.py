"""High-level entry points, named as in DeepLabCut."""
from dlc_train.apis.evaluate import evaluate_network
from dlc_train.apis.train import train_network
from dlc_train.apis.train_loader import train, train_coco

__all__ = ["evaluate_network", "train", "train_coco", "train_network"]
