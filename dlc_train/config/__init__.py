"""Configs in DeepLabCut 3's layout: project config.yaml and per-shuffle pytorch_config.yaml."""
from dlc_train.config.io import (ConfigError, read_config_as_dict, safe_load_yaml, update_config,
                                 write_config)
from dlc_train.config.make_pose_config import available_net_types, make_pytorch_pose_config

__all__ = ["ConfigError", "read_config_as_dict", "safe_load_yaml", "write_config", "update_config",
           "make_pytorch_pose_config", "available_net_types"]
