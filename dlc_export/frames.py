"""Real frames for parity checks: evenly spaced video frames or a project's labeled images."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import cv2
import numpy as np


def frames_from_video(path: str | Path, count: int = 8) -> np.ndarray:
    """``count`` evenly spaced RGB frames (count, H, W, 3) uint8 from a video."""
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise ValueError(f"cannot open video {path}")
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or count
        frames = []
        for index in np.linspace(0, max(total - 1, 0), num=min(count, total)).astype(int):
            cap.set(cv2.CAP_PROP_POS_FRAMES, int(index))
            ok, frame = cap.read()
            if ok:
                frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    finally:
        cap.release()
    if not frames:
        raise ValueError(f"no frame could be decoded from {path}")
    return np.stack(frames)


def frames_from_images(paths: list[str | Path], count: int = 8) -> np.ndarray:
    """Up to ``count`` RGB images of the most common size among ``paths`` (stacked)."""
    images = []
    for path in paths:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is not None:
            images.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    if not images:
        raise ValueError("none of the given images could be read")
    size, _ = Counter(im.shape for im in images).most_common(1)[0]
    same = [im for im in images if im.shape == size]
    picks = np.linspace(0, len(same) - 1, num=min(count, len(same))).astype(int)
    return np.stack([same[i] for i in picks])


def frames_from_project(project_dir: str | Path, count: int = 8) -> np.ndarray:
    """Frames from a DeepLabCut project's labeled-data folders."""
    paths = sorted(Path(project_dir).glob("labeled-data/*/*.png"))
    if not paths:
        raise ValueError(f"no labeled images under {Path(project_dir) / 'labeled-data'}")
    return frames_from_images(paths, count)
