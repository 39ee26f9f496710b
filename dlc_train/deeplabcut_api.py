"""DeepLabCut 3's training names in one place, as ``deeplabcut.pose_estimation_pytorch`` offers
them, so a DeepLabCut script moves here by changing its import::

    import dlc_train.deeplabcut_api as dlc   # was: import deeplabcut.pose_estimation_pytorch

    loader = dlc.DLCLoader(config, trainset_index=0, shuffle=1)
    dataset = loader.create_dataset(dlc.build_transforms(aug), mode="train",
                                    task=dlc.Task.BOTTOM_UP)
    dlc.train_network(config, shuffle=1)
    dlc.evaluate_network(config, shuffles=[1])

Inference on exported bundles is ``dlc_runtime.deeplabcut_api`` (torch-free); differences from
DeepLabCut are listed in docs/dlc3_compatibility.md.
"""
from dlc_train.apis import evaluate_network, train, train_coco, train_network
from dlc_train.config.detectors import available_detectors
from dlc_train.config.make_pose_config import available_net_types as available_models
from dlc_train.data.base import Loader
from dlc_train.data.coco import COCOLoader
from dlc_train.data.dataset import PoseDataset
from dlc_train.data.dlcloader import DLCLoader
from dlc_train.data.transforms import build_transforms
from dlc_train.runners.train import PoseTrainingRunner
from dlc_train.runners.train import seed_everything as fix_seeds
from dlc_train.task import Task

__all__ = ["COCOLoader", "DLCLoader", "Loader", "PoseDataset", "PoseTrainingRunner", "Task",
           "available_detectors", "available_models", "build_transforms", "evaluate_network",
           "fix_seeds", "train", "train_coco", "train_network"]
