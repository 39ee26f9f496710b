"""onnxruntime on CUDA through IOBinding (and the TensorRT execution provider) against the CPU
session, on a tiny exported bundle. Needs onnxruntime-gpu and a CUDA GPU."""
from __future__ import annotations

import importlib.util

import numpy as np
import onnxruntime as ort
import pytest

from dlc_runtime import Bundle, make_backend
from helpers.frames import textured_frames

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif("CUDAExecutionProvider" not in ort.get_available_providers(),
                       reason="onnxruntime has no CUDAExecutionProvider (needs onnxruntime-gpu)"),
]

# Batches of several sizes, the same shape several times in a row, and another frame size.
BATCHES = [(2, 64, 96, 0), (2, 64, 96, 1), (2, 64, 96, 2), (3, 64, 96, 3), (1, 48, 80, 4)]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Bundle:
    pytest.importorskip("torch", reason="exporting the test bundle needs torch")
    from dlc_export import export_bundle
    from helpers.shuffles import write_shuffle

    folder = tmp_path_factory.mktemp("gpu-ort")
    shuffle = write_shuffle(folder / "train")
    result = export_bundle(shuffle.config_path, shuffle.snapshot, folder / "b.bundle",
                           frames=textured_frames(2, 64, 96), simplify=False)
    return Bundle.load(result.bundle_dir)


def _torch_cuda():
    torch = pytest.importorskip("torch", reason="device batches are torch CUDA tensors")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA device")
    return torch


def test_cuda_io_binding_matches_cpu(bundle):
    with make_backend(bundle, "onnxruntime", "cuda") as gpu, \
            make_backend(bundle, "onnxruntime", "cpu") as cpu:
        assert gpu.name == "onnxruntime-cuda" and gpu.session.get_providers()[0] == \
            "CUDAExecutionProvider"
        assert gpu.binding is not None and gpu.accepts_device_frames
        for n, h, w, seed in BATCHES:
            frames = textured_frames(n, h, w, seed=seed)
            got, want = gpu.run(frames)["keypoints"], cpu.run(frames)["keypoints"]
            assert got.shape == want.shape
            assert np.abs(got[..., :2] - want[..., :2]).max() <= 1e-3  # pixels
            np.testing.assert_allclose(got[..., 2], want[..., 2], atol=1e-4)


def test_cuda_buffers_reused(bundle):
    with make_backend(bundle, "onnxruntime", "cuda") as backend:
        binding = backend.binding
        backend.run(textured_frames(2, 64, 96, seed=0))
        inputs, outputs = dict(binding.input_values), dict(binding.output_values)
        assert all(v.device_name().lower() == "cuda" for v in [*inputs.values(),
                                                              *outputs.values()])
        for seed in (1, 2):
            got = backend.run(textured_frames(2, 64, 96, seed=seed))
            assert all(binding.input_values[k] is v for k, v in inputs.items())
            assert all(binding.output_values[k] is v for k, v in outputs.items())
            np.testing.assert_array_equal(outputs["keypoints"].numpy(), got["keypoints"])


def test_device_batch_equals_host_batch(bundle):
    """A torch CUDA tensor is bound by pointer; it is written on a side stream right before
    the run, so a missing synchronisation would read a half-written batch."""
    torch = _torch_cuda()
    with make_backend(bundle, "onnxruntime", "cuda") as backend:
        for n, h, w, seed in BATCHES:
            frames = textured_frames(n, h, w, seed=seed)
            want = backend.run(frames)["keypoints"]
            device = torch.empty(frames.shape, dtype=torch.uint8, device="cuda")
            side = torch.cuda.Stream()
            with torch.cuda.stream(side):
                busy = torch.randn(4096, 4096, device="cuda")
                for _ in range(50):  # keep the side stream busy before the frames land
                    busy = busy @ busy / 4096
                device.copy_(torch.from_numpy(frames).cuda(non_blocking=True))
            got = backend.run(device)["keypoints"]
            np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.tensorrt
@pytest.mark.skipif("TensorrtExecutionProvider" not in ort.get_available_providers()
                    or importlib.util.find_spec("tensorrt") is None,
                    reason="needs onnxruntime's TensorrtExecutionProvider and TensorRT")
def test_tensorrt_provider_runs_and_caches(bundle, tmp_path):
    frames = textured_frames(2, 64, 96, seed=0)
    with make_backend(bundle, "onnxruntime", "cuda", provider="tensorrt",
                      trt_cache_dir=tmp_path) as trt, \
            make_backend(bundle, "onnxruntime", "cpu") as cpu:
        assert trt.name == "onnxruntime-tensorrt"
        assert trt.session.get_providers()[0] == "TensorrtExecutionProvider"
        got, want = trt.run(frames)["keypoints"], cpu.run(frames)["keypoints"]
        # TensorRT's fp32 may use TF32 (no onnxruntime option turns it off): a looser bound.
        assert np.median(np.abs(got[..., :2] - want[..., :2])) <= 0.05
        assert any(p.is_file() for p in tmp_path.rglob("*")), "no engine was cached"
