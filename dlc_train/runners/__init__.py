"""Training: the runner, snapshots, optimizers / schedulers and metrics."""
from dlc_train.runners.schedulers import LRListScheduler, build_optimizer, build_scheduler
from dlc_train.runners.snapshots import SnapshotError, SnapshotManager, load_snapshot
from dlc_train.runners.train import PoseTrainingRunner, resolve_device

__all__ = ["LRListScheduler", "build_optimizer", "build_scheduler", "SnapshotError",
           "SnapshotManager", "load_snapshot", "PoseTrainingRunner", "resolve_device"]
