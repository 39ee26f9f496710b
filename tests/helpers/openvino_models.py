"""Small bottom-up shuffles with clear heatmap peaks, and a video of given frames, for the
OpenVINO tests (reduced precision needs detected keypoints to compare, as the fp16 tests do)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from dlc_export.wrappers import BottomUpSingleAnimal
from helpers.shuffles import Shuffle, write_shuffle
from helpers.trained_like import train_heatmap_peaks

BODYPARTS = ["snout", "leftear", "rightear", "tailbase"]


def peaked_shuffle(folder: Path, frames: np.ndarray, project: dict | None = None,
                   net_type: str = "resnet_tiny") -> Shuffle:
    """A single-animal shuffle (default) whose heatmaps peak clearly (likelihood > 0.9) on
    ``frames``."""

    def peaks(model):
        with torch.no_grad():
            inputs = BottomUpSingleAnimal(model).normalize.prepare(torch.from_numpy(frames))[0]
        train_heatmap_peaks(model, inputs)

    project = project or {"bodyparts": BODYPARTS, "multianimalproject": False}
    return write_shuffle(folder, project, net_type, prepare=peaks)


def frames_video(path: Path, frames: np.ndarray, fps: float = 10.0) -> Path:
    """An MJPG .avi of RGB ``frames`` (quality 100: decoded frames stay close to them)."""
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    writer.set(cv2.VIDEOWRITER_PROP_QUALITY, 100)
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[..., ::-1]))
    writer.release()
    return path
