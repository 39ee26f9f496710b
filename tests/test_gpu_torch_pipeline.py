"""The torch backend's GPU-resident pipeline (``dlc_runtime.backends.torch_cuda``).

Every test here needs a CUDA GPU visible to torch and skips without one (a skip is not a pass).
A tiny bottom-up model goes through the real exporter (torch artifacts traced on the GPU); the
pipeline must give the same keypoints with CUDA graphs on and off, whatever the batch sizes and
however many batches are in flight; fp16 and bf16 stay within their parity gates of fp32; a
device batch gives what the host batch gives; and ``analyze_video`` on CUDA writes what
onnxruntime on the CPU writes.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from dlc_export import export_bundle
from dlc_export.parity import ParityGate
from dlc_runtime import Bundle, analyze_video, make_backend
from helpers.frames import textured_frames
from helpers.shuffles import write_shuffle
from helpers.trained_like import train_heatmap_peaks

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(),
                                 reason="no CUDA GPU visible to torch")]

BODYPARTS = ["snout", "leftear", "rightear", "tailbase"]
H, W = 64, 96


def _px(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a[..., :2] - b[..., :2], axis=-1).max())


def _confident_peaks(model: torch.nn.Module) -> None:
    """Trained-like heatmaps: each keypoint's best cell stands clear of the next, so a reduced
    precision moves keypoints by its rounding, not by flipping between tied cells."""
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    x = torch.from_numpy(textured_frames(4, H, W, seed=9)).permute(0, 3, 1, 2).float() / 255
    train_heatmap_peaks(model, (x - mean) / std)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Bundle:
    folder = tmp_path_factory.mktemp("torch_cuda")
    made = write_shuffle(folder / "train", {"bodyparts": BODYPARTS, "multianimalproject": False},
                         prepare=_confident_peaks)
    precisions = ("fp32", "fp16", "bf16")
    result = export_bundle(made.config_path, made.snapshot, folder / "tiny.bundle",
                           frames=textured_frames(4, H, W, seed=1), torch_precisions=precisions,
                           device="cuda", simplify=False)
    return Bundle.load(result.bundle_dir)


def _run_all(backend, batches: list[np.ndarray]) -> list[np.ndarray]:
    return [backend.run(b)["keypoints"] for b in batches]


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_cuda_graphs_on_and_off_give_the_same_keypoints(bundle, precision):
    sizes = [8, 8, 3, 8, 1, 5]  # a smaller batch replays the batch-8 graph on its first rows
    batches = [textured_frames(n, H, W, seed=10 + i) for i, n in enumerate(sizes)]
    with make_backend(bundle, "torch", "cuda", precision=precision,
                      cuda_graphs=False) as eager, \
            make_backend(bundle, "torch", "cuda", precision=precision) as graphed:
        assert graphed.name == f"torch-cuda-{precision}"
        for a, b, n in zip(_run_all(eager, batches), _run_all(graphed, batches), sizes):
            assert a.shape == b.shape == (n, 1, len(BODYPARTS), 3)
            assert _px(a, b) <= 1e-3 and np.abs(a[..., 2] - b[..., 2]).max() <= 1e-4
        runner = graphed._runner
        assert len(runner.graphs) == 1 and runner.graphs[0].inputs[0].shape[0] == 8
        assert not runner.uncapturable


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_reduced_precision_within_its_parity_gate(bundle, precision):
    gate = ParityGate.for_precision(precision)
    frames = textured_frames(8, H, W, seed=3)
    with make_backend(bundle, "torch", "cuda", precision="fp32") as full, \
            make_backend(bundle, "torch", "cuda", precision=precision) as reduced:
        a, b = full.run(frames)["keypoints"], reduced.run(frames)["keypoints"]
    # The exporter's tolerance, on every keypoint (its gate judges only the detected ones).
    assert _px(a, b) <= gate.tolerance_px, (precision, _px(a, b))


def test_batches_in_flight_beyond_the_ring_come_back_in_order(bundle):
    batches = [textured_frames(8, H, W, seed=20 + i) for i in range(7)]
    with make_backend(bundle, "torch", "cuda", precision="fp16", ring=3) as backend:
        one_by_one = _run_all(backend, batches)
        pending = [backend.submit(b) for b in batches]  # 7 submitted, ring of 3: the oldest
        together = [p.result()["keypoints"] for p in pending]  # are collected on reuse
    for a, b in zip(one_by_one, together):
        np.testing.assert_array_equal(a, b)


def test_device_batch_gives_the_host_batch_keypoints(bundle):
    frames = textured_frames(6, H, W, seed=4)
    with make_backend(bundle, "torch", "cuda", precision="fp16") as backend:
        assert backend.accepts_device_frames
        host = backend.run(frames)["keypoints"]
        device = backend.run(torch.from_numpy(frames).cuda())["keypoints"]
    np.testing.assert_array_equal(host, device)


def test_channels_last_off_gives_the_same_keypoints(bundle):
    frames = textured_frames(4, H, W, seed=5)
    with make_backend(bundle, "torch", "cuda", precision="fp32") as nhwc, \
            make_backend(bundle, "torch", "cuda", precision="fp32",
                         channels_last=False) as nchw:
        assert _px(nhwc.run(frames)["keypoints"], nchw.run(frames)["keypoints"]) <= 1e-3


def test_analyze_video_on_cuda_matches_onnxruntime_on_cpu(bundle, tmp_path: Path):
    frames = textured_frames(21, H, W, seed=6)
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (W, H))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    cuda = analyze_video(bundle, video, tmp_path / "cuda", batch_size=8, backend="torch",
                         device="cuda", progress=False, backend_options={"precision": "fp32"})
    cpu = analyze_video(bundle, video, tmp_path / "cpu", batch_size=8, progress=False)
    a = pd.read_hdf(cuda.h5_path, "df_with_missing").to_numpy().reshape(21, -1, 3)
    b = pd.read_hdf(cpu.h5_path, "df_with_missing").to_numpy().reshape(21, -1, 3)
    assert _px(a, b) <= 0.5
    meta = pd.read_pickle(cuda.meta_path)["data"]["dlc-deploy"]
    assert meta["backend"] == "torch-cuda-fp32" and meta["device"] == "cuda"
