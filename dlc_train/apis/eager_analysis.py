"""DeepLabCut 3's own way of analyzing a video, as the baseline of ``dlc benchmark --baseline``.

What DeepLabCut 3's ``analyze_videos`` does per batch, kept as it is on purpose: OpenCV decodes
frame by frame in the calling thread, pre-processing runs in float32 on the CPU (/255, ImageNet
normalisation, ``auto_padding``), the eager PyTorch model runs on ``device``, and the heads'
outputs come back to the host, where the predictor decodes them. Same weights as the bundle,
so the keypoints agree with it; only the speed differs. Single-animal bottom-up models only.
"""
from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from dlc_train.config import read_config_as_dict
from dlc_train.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from dlc_train.models.loading import build_model_from_snapshot


class EagerAnalysis:
    """``run(video)`` -> keypoints (N, 1, K, 3) and the frames/s of the loop.

    Args:
        pytorch_config_path: the model's pytorch_config.yaml (a bundle's copy will do).
        snapshot: its ``snapshot-XXX.pt``.
    """

    def __init__(self, pytorch_config_path: str | Path, snapshot: str | Path,
                 device: str = "cpu", batch_size: int = 8):
        cfg = read_config_as_dict(pytorch_config_path)
        if str(cfg.get("method", "bu")).lower() not in ("bu", "bottom_up", "bottom-up") or \
                len((cfg.get("metadata") or {}).get("individuals") or [1]) != 1:
            raise ValueError(f"{pytorch_config_path}: the DeepLabCut-style baseline covers "
                             "single-animal bottom-up models")
        self.device = torch.device(device)
        self.model = build_model_from_snapshot(cfg, snapshot).to(self.device).eval()
        self.predictor = self.model.heads["bodypart"].predictor.cpu()
        self.stride = self.model.get_stride("bodypart")
        self.batch_size = int(batch_size)
        padding = ((cfg.get("data") or {}).get("inference") or {}).get("auto_padding") or {}
        self.divisors = (int(padding.get("pad_height_divisor") or 1),
                         int(padding.get("pad_width_divisor") or 1))

    def _preprocess(self, frames: list[np.ndarray]) -> torch.Tensor:
        batch = np.stack(frames).astype(np.float32) / 255.0
        batch = (batch - IMAGENET_MEAN) / IMAGENET_STD
        x = torch.from_numpy(batch).permute(0, 3, 1, 2)
        hdiv, wdiv = self.divisors
        x = F.pad(x, (0, -x.shape[-1] % wdiv, 0, -x.shape[-2] % hdiv))
        return x.to(self.device)

    @torch.no_grad()
    def _infer(self, frames: list[np.ndarray]) -> np.ndarray:
        outputs = self.model(self._preprocess(frames))["bodypart"]
        host = {name: t.float().cpu() for name, t in outputs.items()}
        return self.predictor(self.stride, host)["poses"].numpy()

    def run(self, video: str | Path, max_frames: int | None = None,
            warmup_batches: int = 1) -> tuple[np.ndarray, float]:
        """Keypoints of the first ``max_frames`` frames (all by default) and the loop's
        frames/s (decode included), the first ``warmup_batches`` batches not timed."""
        cap = cv2.VideoCapture(str(video))
        if not cap.isOpened():
            raise ValueError(f"cannot open video {video}")
        keypoints: list[np.ndarray] = []
        pending: list[np.ndarray] = []
        done = counted = 0
        start = None
        try:
            while max_frames is None or done < max_frames:
                if not pending and len(keypoints) == warmup_batches and start is None:
                    start = time.perf_counter()  # the first timed batch starts decoding
                ok, frame = cap.read()
                if ok:
                    pending.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
                if pending and (len(pending) == self.batch_size or not ok):
                    keypoints.append(self._infer(pending))
                    if len(keypoints) > warmup_batches:
                        counted += len(pending)
                    done += len(pending)
                    pending = []
                if not ok:
                    break
        finally:
            cap.release()
        stop = time.perf_counter()
        if start is None or counted == 0:
            raise ValueError(f"{video}: too short for {warmup_batches} warm-up batches of "
                             f"{self.batch_size} frames")
        out = np.concatenate(keypoints)
        return (out if max_frames is None else out[:max_frames]), counted / (stop - start)
