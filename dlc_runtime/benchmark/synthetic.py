"""A synthetic video for ``dlc benchmark`` when none is given: textured frames with a moving
blob (no flat areas, so every backend does real work), written with OpenCV."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from dlc_runtime.errors import VideoError


def write_synthetic_video(path: str | Path, n_frames: int = 256, width: int = 640,
                          height: int = 480, fps: float = 30.0, seed: int = 0) -> Path:
    """Writes ``n_frames`` RGB frames (``mp4v``) to ``path``."""
    path = Path(path)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise VideoError(f"OpenCV cannot write {path} (mp4v); pass a VIDEO instead")
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([40 * np.sin(xx / (5 + 3 * c) + yy / (7 + c)) for c in range(3)], -1)
    try:
        for i in range(n_frames):
            cx = (0.2 + 0.6 * (i % 60) / 59) * width
            cy = (0.3 + 0.4 * ((i // 60) % 3) / 2) * height
            blob = 200 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * (0.08 * width) ** 2))
            frame = np.clip(60 + base + blob[..., None] + rng.normal(0, 4, base.shape), 0, 255)
            writer.write(cv2.cvtColor(frame.astype(np.uint8), cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path
