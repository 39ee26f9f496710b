"""NVDEC on a real GPU against the CPU decoder: same frames, same keypoints.

Skips (a skip is not a pass) unless PyNvVideoCodec imports and torch sees a CUDA GPU, and where
this GPU's NVDEC cannot decode the test videos (MPEG-4 part 2, what OpenCV writes here; an H.264
copy is tried when an ``ffmpeg`` binary is on the PATH).

Tolerances, and why:
- ``colour="bt601"`` (default): the same YUV converted as the CPU decoder does (within 2 levels,
  measured in tests/test_nvdec.py), plus MPEG-4 part 2's IDCT, which the standard lets decoders
  round differently (drifting a little until the next key frame): mean difference <= 1 level,
  99.9th percentile <= 6 levels.
- ``colour="nvdec"`` (PyNvVideoCodec's RGB): BT.709 for streams that name no matrix where OpenCV
  uses BT.601; saturated colours differ by up to ~30 levels, so only "same pictures" is checked
  (mean difference <= 15 levels).
- Keypoints of a model trained here (the dlc demo's recipe, small) through
  ``make_backend(bundle, "torch", "cuda")`` with either decoder's batches, over keypoints the
  model is confident of (likelihood >= 0.5): 99th percentile of the distance <= 1 px, median
  <= 0.25 px. Not the maximum: an argmax sits near a tie now and then, and any pixel change can
  flip it (measured on the CPU with this recipe: +-1 level of random noise moved the 99th
  percentile 0.3 px but the maximum 2.9 px; BT.709 instead of BT.601 colours, simulated, moved
  the 99th percentile 4.8 px).
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from dlc_runtime.decoders import nvdec_missing, open_video
from dlc_runtime.errors import VideoError
from dlc_runtime.nvdec import NvdecVideoIterator
from dlc_runtime.testing import make_test_video
from dlc_runtime.video import VideoIterator
from helpers.frames import textured_frames

pytestmark = pytest.mark.gpu

KEYPOINT_TOLERANCE_PX = 1.0
CONFIDENT = 0.5
TRAIN_EPOCHS = 40


@pytest.fixture(scope="module", autouse=True)
def nvdec_here():
    missing = nvdec_missing()
    if missing is not None:
        pytest.skip(f"NVDEC cannot run here: {missing}")


def _h264_copy(video: Path) -> Path | None:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        return None
    out = video.with_name(video.stem + "_h264.mp4")
    proc = subprocess.run([ffmpeg, "-v", "error", "-y", "-i", str(video), "-c:v", "libx264",
                           "-pix_fmt", "yuv420p", "-g", "12", str(out)], capture_output=True)
    return out if proc.returncode == 0 else None


def _decodable(video: Path) -> Path:
    """``video``, or an H.264 copy of it, whichever this GPU's NVDEC decodes (else skip)."""
    try:
        NvdecVideoIterator(video).close()
        return video
    except VideoError as exc:
        first = exc
    h264 = _h264_copy(video)
    if h264 is not None:
        try:
            NvdecVideoIterator(h264).close()
            return h264
        except VideoError:
            pass
    pytest.skip(f"this GPU's NVDEC cannot decode the test video: {first}")


def _textured_video(path: Path, n: int = 24, height: int = 96, width: int = 128) -> Path:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (width, height))
    assert writer.isOpened()
    for frame in textured_frames(n, height, width, seed=3):
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def _decode(iterator) -> tuple[np.ndarray, np.ndarray]:
    indices, frames = [], []
    with iterator as it:
        for idx, batch in it:
            indices.append(idx)
            frames.append(np.asarray(batch.cpu().numpy() if hasattr(batch, "cpu") else batch))
    return np.concatenate(indices), np.concatenate(frames)


@pytest.fixture(scope="module", params=["uniform", "textured"])
def video(request, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("gpu_nvdec")
    made = make_test_video(folder / "uniform.mp4", n_frames=30) if request.param == "uniform" \
        else _textured_video(folder / "textured.mp4")
    return _decodable(made)


def test_device_batches_match_the_cpu_decoder(video):
    import torch

    cpu_idx, cpu = _decode(VideoIterator(video, batch_size=8))
    it = NvdecVideoIterator(video, batch_size=8)
    gpu_idx, gpu = [], []
    with it:
        assert (it.width, it.height) == (cpu.shape[2], cpu.shape[1])
        for idx, batch in it:
            assert isinstance(batch, torch.Tensor) and batch.is_cuda
            assert batch.dtype == torch.uint8 and batch.is_contiguous()
            assert hasattr(batch, "__cuda_array_interface__")
            gpu_idx.append(idx)
            gpu.append(batch.cpu().numpy())
    np.testing.assert_array_equal(np.concatenate(gpu_idx), cpu_idx)
    diff = np.abs(np.concatenate(gpu).astype(int) - cpu.astype(int))
    assert diff.mean() <= 1.0 and np.quantile(diff, 0.999) <= 6, (diff.mean(), diff.max())


def test_library_colours_are_the_same_pictures(video):
    cpu_idx, cpu = _decode(VideoIterator(video, batch_size=8))
    gpu_idx, gpu = _decode(NvdecVideoIterator(video, batch_size=8, colour="nvdec"))
    np.testing.assert_array_equal(gpu_idx, cpu_idx)
    assert np.abs(gpu.astype(int) - cpu.astype(int)).mean() <= 15


def test_start_stop_and_auto_selection(video, caplog):
    caplog.set_level("INFO", logger="dlc_runtime.decoders")
    it, reason = open_video(video, device="cuda", accepts_device_frames=True, batch_size=4,
                            start=3, stop=11)
    assert isinstance(it, NvdecVideoIterator) and reason.startswith("nvdec (")
    idx, _ = _decode(it)
    np.testing.assert_array_equal(idx, np.arange(3, 11))


@pytest.fixture(scope="module")
def trained_bundle(tmp_path_factory):
    """A tiny model trained on the GPU on a synthetic project, as a torch bundle, and the
    project's video (the dlc demo's path, smaller: 128x96, 60 labeled frames)."""
    from dlc_cli.demo import DEMO_BATCH_SIZE, DEMO_NET_TYPE, demo_training_overrides
    from dlc_export import export_from_project
    from dlc_train.apis import train_network
    from dlc_train.synthetic import SyntheticSpec, generate_project

    folder = tmp_path_factory.mktemp("nvdec_keypoints")
    spec = SyntheticSpec(seed=0, width=128, height=96, num_labeled_frames=60,
                         num_video_frames=60)
    project = generate_project(folder / "project", spec)
    train_network(project.config_path, shuffle=1, net_type=DEMO_NET_TYPE, epochs=TRAIN_EPOCHS,
                  batch_size=DEMO_BATCH_SIZE, device="cuda", progress=False,
                  pytorch_config_overrides=demo_training_overrides(TRAIN_EPOCHS))
    exported = export_from_project(project.config_path, shuffle=1, output=folder / "t.bundle",
                                   torch_precisions=("fp32",), simplify=False)
    return exported.bundle_dir, _decodable(project.video_path)


def test_keypoints_do_not_depend_on_the_decoder(trained_bundle):
    from dlc_runtime import Bundle, make_backend
    from dlc_runtime.pipelines import make_pipeline

    bundle_dir, video = trained_bundle
    bundle = Bundle.load(bundle_dir)
    backend = make_backend(bundle, "torch", "cuda")
    pipeline = make_pipeline(bundle, backend)
    try:
        results = {}
        for decoder in ("cpu", "nvdec"):
            it, _ = open_video(video, decoder=decoder, device="cuda",
                               accepts_device_frames=pipeline.accepts_device_frames,
                               batch_size=8)
            with it:
                results[decoder] = np.concatenate([pipeline(batch).keypoints for _, batch in it])
    finally:
        pipeline.close()
        backend.close()
    cpu, gpu = results["cpu"], results["nvdec"]
    assert cpu.shape == gpu.shape and len(cpu) == 60
    confident = cpu[..., 2] >= CONFIDENT
    assert confident.mean() >= 0.5, "the model is not confident enough for this check"
    distance = np.linalg.norm(cpu[..., :2] - gpu[..., :2], axis=-1)[confident]
    assert np.quantile(distance, 0.99) <= KEYPOINT_TOLERANCE_PX, np.quantile(distance, 0.99)
    assert np.median(distance) <= 0.25
    assert np.quantile(np.abs(cpu[..., 2] - gpu[..., 2]), 0.99) <= 0.05
