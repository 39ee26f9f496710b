"""Top-down detectors (DeepLabCut 3's torchvision detectors, rebuilt in plain torch)."""
from dlc_train.models.detectors.base import (DETECTORS, BaseDetector, deeplabcut_detector_input,
                                             pad_detections)
from dlc_train.models.detectors.fasterrcnn import FasterRCNN
from dlc_train.models.detectors.ssdlite import SSDLite

__all__ = ["DETECTORS", "BaseDetector", "SSDLite", "FasterRCNN", "deeplabcut_detector_input",
           "pad_detections"]
