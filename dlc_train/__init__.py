"""dlc_train: DeepLabCut-3-compatible pose models, data loaders and training in plain PyTorch."""
__version__ = "0.1.0"
