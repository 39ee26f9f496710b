"""The ``detector`` section of top-down configs (DeepLabCut's ``config/detectors/*.yaml``).

Its layout is a small pose config of its own: model, device, data, runner, train_settings,
inference, resume_training_from.
"""
from __future__ import annotations

from dlc_train.config import defaults

# detector_type -> the ``detector.model`` section. DeepLabCut's default is SSDLite; its Faster
# R-CNN variants are torchvision's, named by ``variant``.
DETECTOR_MODELS = {
    "ssdlite": {"type": "SSDLite", "freeze_bn_stats": True, "freeze_bn_weights": False,
                "variant": None, "box_score_thresh": None},
    "fasterrcnn_mobilenet_v3_large_fpn": {"type": "FasterRCNN", "freeze_bn_stats": True,
                                          "freeze_bn_weights": False,
                                          "variant": "fasterrcnn_mobilenet_v3_large_fpn",
                                          "box_score_thresh": None},
    "fasterrcnn_resnet50_fpn_v2": {"type": "FasterRCNN", "freeze_bn_stats": True,
                                   "freeze_bn_weights": False,
                                   "variant": "fasterrcnn_resnet50_fpn_v2",
                                   "box_score_thresh": None},
}


def available_detectors() -> list[str]:
    return sorted(DETECTOR_MODELS)


def detector_config(detector_type: str = "ssdlite") -> dict:
    """The ``detector`` section for ``detector_type`` (see ``available_detectors()``)."""
    key = detector_type.lower()
    if key not in DETECTOR_MODELS:
        raise ValueError(f"unknown detector_type {detector_type!r}; available: "
                         f"{', '.join(available_detectors())}")
    train = defaults.transforms(
        hflip=True, affine={"p": 0.5, "rotation": 30, "scaling": [1.0, 1.0], "translation": 40},
        collate={"type": "ResizeFromDataSizeCollate", "min_scale": 0.4, "max_scale": 1.0,
                 "min_short_side": 128, "max_short_side": 1152, "multiple_of": 32,
                 "to_square": False})
    runner = defaults.runner("DetectorTrainingRunner")
    runner.update({"key_metric": "test.mAP@50:95",
                   "optimizer": {"type": "AdamW", "params": {"lr": 0.0001}},
                   "scheduler": {"type": "LRListScheduler",
                                 "params": {"milestones": [160], "lr_list": [[1e-05]]}}})
    settings = defaults.train_settings()
    settings.update({"batch_size": 16, "epochs": 250})
    return {"model": dict(DETECTOR_MODELS[key]),
            "device": "auto",
            "data": {"colormode": "RGB", "inference": defaults.transforms(), "train": train},
            "runner": runner,
            "train_settings": settings,
            "inference": defaults.inference(),
            "resume_training_from": None}
