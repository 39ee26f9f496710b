"""The onnxruntime backend's IOBinding path (run here on the CPU execution provider with host
buffers: the same code as on CUDA) and its provider choice and assertion (on a simulated GPU
machine: onnxruntime's provider list is faked, the sessions are real CPU sessions)."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from dlc_runtime import Bundle, make_backend
from dlc_runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from dlc_runtime.errors import BackendError
from dlc_runtime.testing import make_toy_bundle
from helpers.frames import textured_frames


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Bundle:
    """A tiny exported bottom-up bundle with fp32 and fp16 ONNX graphs."""
    import torch

    from dlc_export import export_bundle
    from helpers.shuffles import write_shuffle

    folder = tmp_path_factory.mktemp("binding")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small convs on a loaded 2-core machine run faster on one
    try:
        shuffle = write_shuffle(folder / "train")
        result = export_bundle(shuffle.config_path, shuffle.snapshot, folder / "b.bundle",
                               frames=textured_frames(2, 64, 96), simplify=False,
                               onnx_precisions=("fp16",))
    finally:
        torch.set_num_threads(threads)
    return Bundle.load(result.bundle_dir)


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Bundle:
    return Bundle.load(make_toy_bundle(tmp_path_factory.mktemp("toy") / "toy.bundle"))


# Batches of several sizes and two frame sizes, with repeats of the same shape.
BATCHES = [(2, 64, 96, 0), (2, 64, 96, 1), (2, 64, 96, 2), (3, 64, 96, 3), (1, 64, 96, 4),
           (3, 64, 96, 5), (3, 64, 96, 6), (3, 64, 96, 7), (2, 48, 80, 8), (2, 48, 80, 9),
           (2, 64, 96, 10)]


def test_io_binding_equals_session_run(exported):
    """IOBinding on the CPU gives exactly session.run's outputs, batch after batch, and the
    arrays it returned earlier are not overwritten by later batches (they are copies)."""
    with make_backend(exported, "onnxruntime", io_binding=True) as bound, \
            make_backend(exported, "onnxruntime") as plain:
        assert bound.binding is not None and plain.binding is None
        assert bound.name == plain.name == "onnxruntime-cpu"
        assert not bound.accepts_device_frames  # device batches go to the host first
        returned, expected = [], []
        for n, h, w, seed in BATCHES:
            frames = textured_frames(n, h, w, seed=seed)
            got, want = bound.run(frames), plain.run(frames)
            assert sorted(got) == sorted(want) == sorted(plain.output_names)
            for name in want:
                np.testing.assert_array_equal(got[name], want[name])
            returned.append(got)
            expected.append({k: v.copy() for k, v in want.items()})
        for got, want in zip(returned, expected):
            for name in want:
                np.testing.assert_array_equal(got[name], want[name])


def test_io_binding_reuses_buffers_per_shape(exported):
    """Same input shapes: the same input and output OrtValues, refilled (the outputs are the
    buffers onnxruntime wrote into); a new shape: new ones of that shape."""
    with make_backend(exported, "onnxruntime", io_binding=True) as backend:
        binding = backend.binding
        backend.run(textured_frames(2, 64, 96, seed=0))
        inputs, outputs = dict(binding.input_values), dict(binding.output_values)
        assert list(inputs["images"].shape()) == [2, 64, 96, 3]
        for seed in (1, 2):
            got = backend.run(textured_frames(2, 64, 96, seed=seed))
            assert all(binding.input_values[k] is v for k, v in inputs.items())
            assert all(binding.output_values[k] is v for k, v in outputs.items())
            for name, value in outputs.items():  # this batch's outputs are in those buffers
                np.testing.assert_array_equal(value.numpy(), got[name])
        backend.run(textured_frames(3, 48, 80, seed=3))
        assert binding.input_values["images"] is not inputs["images"]
        assert list(binding.input_values["images"].shape()) == [3, 48, 80, 3]
        # made from this shape's first batch, for the next ones
        resized = dict(binding.output_values)
        assert all(resized[k] is not v for k, v in outputs.items())
        assert resized["keypoints"].shape()[0] == 3
        got = backend.run(textured_frames(3, 48, 80, seed=4))
        assert all(binding.output_values[k] is v for k, v in resized.items())
        np.testing.assert_array_equal(resized["keypoints"].numpy(), got["keypoints"])


def _two_input_graph(path):
    """images uint8 (B, H, W, 3) + boxes float32 (B, M, 4) -> score (B,) = mean(images) +
    sum(boxes); bright (B, n, ...) NonZero indices: a shape that depends on the content."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Cast", ["images"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["f"], ["m"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("ReduceSum", ["boxes", "axes"], ["s"], keepdims=0),
        helper.make_node("Add", ["m", "s"], ["score"]),
        helper.make_node("Greater", ["f", "threshold"], ["bright"]),
        helper.make_node("NonZero", ["bright"], ["where"]),
    ]
    graph = helper.make_graph(
        nodes, "two_inputs",
        [helper.make_tensor_value_info("images", TensorProto.UINT8, ["b", "h", "w", 3]),
         helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["b", "m", 4])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["b"]),
         helper.make_tensor_value_info("where", TensorProto.INT64, [4, "n"])],
        initializer=[helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2]),
                     helper.make_tensor("threshold", TensorProto.FLOAT, [], [200.0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_io_binding_further_inputs_and_content_dependent_shapes(tmp_path):
    """A second input (bound from its own reused buffer), and an output whose shape depends on
    the frames' content: the binding stops preallocating and stays equal to session.run."""
    path = _two_input_graph(tmp_path / "two.onnx")
    bound = OnnxRuntimeBackend(path, io_binding=True)
    plain = OnnxRuntimeBackend(path)
    rng = np.random.default_rng(0)
    for i in range(4):  # same shapes each time; the number of bright pixels varies
        frames = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
        boxes = rng.random((2, 3, 4), dtype=np.float32)
        got, want = bound.run(frames, boxes=boxes), plain.run(frames, boxes=boxes)
        for name in ("score", "where"):
            np.testing.assert_array_equal(got[name], want[name])
        if i == 0:
            boxes_buffer = bound.binding.input_values["boxes"]
        assert bound.binding.input_values["boxes"] is boxes_buffer
    assert bound.binding.dynamic_outputs and bound.binding.output_values is None
    with pytest.raises(BackendError, match="inputs after the frames are \\['boxes'\\]"):
        bound.run(frames, scores=boxes)


# ------------------------------------------------------------------------------------------
# Providers, on a simulated GPU machine
# ------------------------------------------------------------------------------------------


class FakeGpuMachine:
    """onnxruntime as on a machine with ``available`` providers, of which those in ``broken``
    fail to load (missing libraries): a session runs the asked providers that load, in order,
    as onnxruntime does, and computes on the real CPU session. ``calls`` records each
    ``providers`` list passed to ``InferenceSession``."""

    def __init__(self, monkeypatch, available, broken=()):
        self.calls: list[list] = []
        machine, real = self, ort.InferenceSession

        class Session(real):
            def __init__(self, path, sess_options=None, providers=None, **kwargs):
                machine.calls.append(providers)
                super().__init__(path, sess_options=sess_options,
                                 providers=["CPUExecutionProvider"], **kwargs)
                names = [p[0] if isinstance(p, tuple) else p for p in providers]
                self._loaded = [n for n in names if n in available and n not in broken]

            def get_providers(self):
                return list(self._loaded)

        monkeypatch.setattr(ort, "InferenceSession", Session)
        monkeypatch.setattr(ort, "get_available_providers", lambda: list(available))


CPU_ONLY = ["AzureExecutionProvider", "CPUExecutionProvider"]
GPU = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def _one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("provider, missing, install", [
    (None, "CUDAExecutionProvider", "pip install onnxruntime-gpu"),
    ("tensorrt", "TensorrtExecutionProvider", "pip install tensorrt"),
])
def test_gpu_provider_not_installed(monkeypatch, toy, provider, missing, install):
    machine = FakeGpuMachine(monkeypatch, CPU_ONLY)
    with pytest.raises(BackendError) as excinfo:
        make_backend(toy, "onnxruntime", "cuda", provider=provider)
    message = _one_line(excinfo)
    assert f"has no {missing}" in message and install in message
    assert machine.calls == []  # refused before any session is made


@pytest.mark.parametrize("provider, broken, runs, fix", [
    (None, {"CUDAExecutionProvider"}, "runs CPUExecutionProvider for", "cuDNN"),
    ("tensorrt", {"TensorrtExecutionProvider"},
     "runs CUDAExecutionProvider, CPUExecutionProvider for", "pip install tensorrt"),
])
def test_gpu_provider_falls_back(monkeypatch, toy, tmp_path, provider, broken, runs, fix):
    """Installed but not loading: onnxruntime would run the next provider; the backend says
    so in one line instead of analysing on the wrong device."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    FakeGpuMachine(monkeypatch, GPU, broken=broken)
    with pytest.raises(BackendError) as excinfo:
        make_backend(toy, "onnxruntime", "cuda", provider=provider)
    message = _one_line(excinfo)
    assert f"asked for {sorted(broken)[0]} on cuda" in message
    assert runs in message and fix in message


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")
@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(),
                    reason="CUDA loads here: no real fallback to provoke")
def test_real_cpu_fallback_is_refused(monkeypatch, toy):
    """The real onnxruntime CPU build, told CUDA exists, creates a CPU session (a warning
    only): the provider assertion is what catches it."""
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(BackendError) as excinfo:
        make_backend(toy, "onnxruntime", "cuda")
    assert "but runs CPUExecutionProvider" in _one_line(excinfo)


def _tf32_off(options: dict) -> dict:
    version = tuple(int(v) for v in ort.__version__.split(".")[:2])
    return {**options, "use_tf32": "0"} if version >= (1, 18) else options


@pytest.mark.parametrize("precision, fp16, name", [
    (None, "False", "onnxruntime-tensorrt"),
    ("fp16", "True", "onnxruntime-tensorrt-fp16"),
])
def test_tensorrt_provider_list(monkeypatch, exported, tmp_path, precision, fp16, name):
    """TensorRT first (engine cache in the user's cache, one folder per graph sha256, never
    in the bundle), then CUDA, then the CPU; IOBinding on, device batches accepted."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    machine = FakeGpuMachine(monkeypatch, GPU)
    graph = "pose" if precision is None else "pose_onnx_fp16"
    sha = exported.manifest.graphs[graph].sha256
    cache = tmp_path / "cache" / "dlc-deploy" / "onnxruntime-tensorrt" / sha[:16]
    backend = make_backend(exported, "onnxruntime", "cuda:1", provider="tensorrt",
                           precision=precision)
    assert machine.calls == [[
        ("TensorrtExecutionProvider", {"device_id": 1, "trt_fp16_enable": fp16,
                                       "trt_engine_cache_enable": "True",
                                       "trt_engine_cache_path": str(cache)}),
        ("CUDAExecutionProvider", _tf32_off({"device_id": 1})),
        "CPUExecutionProvider"]]
    assert cache.is_dir() and exported.path not in cache.parents
    assert backend.name == name
    assert backend.accepts_device_frames and backend.binding.device_type == "cuda"
    assert backend.binding.device_id == 1


def test_cuda_provider_list_and_io_binding_option(monkeypatch, toy):
    machine = FakeGpuMachine(monkeypatch, GPU)
    backend = make_backend(toy, "onnxruntime", "cuda")
    assert machine.calls[-1] == [("CUDAExecutionProvider", _tf32_off({"device_id": 0})),
                                 "CPUExecutionProvider"]
    assert backend.name == "onnxruntime-cuda" and backend.accepts_device_frames
    plain = make_backend(toy, "onnxruntime", "cuda", io_binding=False)
    assert plain.binding is None and not plain.accepts_device_frames
    # The fake session computes on the CPU, so the plain path runs for real.
    frames = textured_frames(2, 32, 48)
    np.testing.assert_array_equal(plain.run(frames)["keypoints"],
                                  make_backend(toy, "onnxruntime").run(frames)["keypoints"])


@pytest.mark.parametrize("device, provider, fragment", [
    ("cpu", "tensorrt", "does not run on device 'cpu'"),
    ("cuda", "cpu", "does not run on device 'cuda'"),
    ("cuda", "rocm", "unknown onnxruntime provider 'rocm'"),
])
def test_provider_device_mismatch(toy, device, provider, fragment):
    with pytest.raises(BackendError, match=fragment) as excinfo:
        make_backend(toy, "onnxruntime", device, provider=provider)
    _one_line(excinfo)


def test_tensorrt_cache_not_writable(monkeypatch, toy, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    FakeGpuMachine(monkeypatch, GPU)
    with pytest.raises(BackendError, match="cannot create the TensorRT engine cache") as excinfo:
        make_backend(toy, "onnxruntime", "cuda", provider="tensorrt")
    assert "trt_cache_dir" in _one_line(excinfo)
