"""Synthetic test frames shared by the export tests."""
from __future__ import annotations

import cv2
import numpy as np


def textured_frames(n: int = 2, h: int = 120, w: int = 160, seed: int = 0) -> np.ndarray:
    """(n, h, w, 3) uint8 upsampled noise: smooth enough to look like an image, varied enough
    that random-weight models see no tied heatmap cells or detector scores."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 4, w // 4, 3 * n), dtype=np.uint8)
    big = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(big.reshape(h, w, n, 3).transpose(2, 0, 1, 3))


def read_video_frames(path, rgb: bool = False) -> list[np.ndarray]:
    """Every frame OpenCV decodes from ``path``, BGR as a camera loop gets them (``rgb``:
    converted), independently of the runtime's decoders."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if rgb else frame)
    cap.release()
    return frames
