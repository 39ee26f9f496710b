"""Torch artifacts in a bundle and the runtime's ``torch`` backend.

A tiny resnet_tiny model (random weights, seeded) goes through the real ``export_bundle``; the
torch artifact must give the onnxruntime backend's keypoints on a video, take any batch and frame
size, load without dlc_train/dlc_export, and fail loudly when missing or wrong.
Skips here: ``test_cuda_fp16_matches_onnxruntime`` (marked gpu; needs a CUDA GPU).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from dlc_export import ParityError, export_bundle
from dlc_export.options import ExportOptions
from dlc_export.parity import run_parity
from dlc_export.tasks.base import FRAMES, ExportGraph, ExportTask, TaskManifest
from dlc_export.wrappers import BottomUpSingleAnimal
from dlc_runtime import BackendError, Bundle, analyze_video, make_backend
from dlc_runtime.backends.torch_backend import TorchBackend
from dlc_runtime.bundle import TensorSpec
from helpers.shuffles import write_shuffle
from helpers.trained_like import calibrate_batchnorm, train_heatmap_peaks

pytestmark = pytest.mark.usefixtures("one_thread")


REPO = Path(__file__).resolve().parents[1]
BODYPARTS = ["snout", "leftear", "rightear", "tailbase"]
TOLERANCE_PX = 0.5


def _frames(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth textured RGB frames with a moving bright blob (no flat areas: a uniform frame
    would give exactly tied heatmap cells, and then argmax order decides, not the model)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    out = np.empty((n, height, width, 3), np.uint8)
    for i in range(n):
        cx, cy = (0.2 + 0.6 * i / max(n - 1, 1)) * width, (0.3 + 0.4 * (i % 3) / 2) * height
        blob = 200 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * (0.1 * width) ** 2))
        for c in range(3):
            wave = 40 * np.sin(xx / (5 + 3 * c) + yy / (7 + c) + i)
            out[i, ..., c] = np.clip(30 + 20 * c + wave + blob + rng.normal(0, 4, xx.shape), 0, 255)
    return out


def _write_video(path: Path, frames_rgb: np.ndarray, fps: float = 10.0) -> Path:
    h, w = frames_rgb.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened(), "OpenCV cannot write mp4v here"
    for frame in frames_rgb:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(bundle without torch artifact, pytorch_config.yaml, snapshot) from the real exporter."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("torch_artifact")
    made = write_shuffle(folder / "train", {"bodyparts": BODYPARTS, "multianimalproject": False})
    config_path, snapshot = made.config_path, made.snapshot
    result = export_bundle(config_path, snapshot, folder / "tiny.bundle",
                           frames=_frames(4, 64, 96, seed=1))
    return result.bundle_dir, config_path, snapshot


@pytest.fixture
def bundle_dir(exported, tmp_path) -> Path:
    """A fresh copy of the exported bundle (ONNX only)."""
    return Path(shutil.copytree(exported[0], tmp_path / "tiny.bundle"))


def export_torch(exported, out: Path, precisions: tuple[str, ...] = ("fp32",),
                 frames: np.ndarray | None = None, **options) -> Path:
    """The exported shuffle again, with torch artifacts (through the real pipeline)."""
    _, config_path, snapshot = exported
    frames = _frames(2, 64, 96) if frames is None else frames
    return export_bundle(config_path, snapshot, out, frames=frames,
                         torch_precisions=precisions, simplify=False, **options).bundle_dir


@pytest.fixture(scope="module")
def wrapper(exported) -> BottomUpSingleAnimal:
    from dlc_train.config import read_config_as_dict
    from dlc_train.models.loading import build_model_from_snapshot

    _, config_path, snapshot = exported
    model = build_model_from_snapshot(read_config_as_dict(config_path), snapshot)
    return BottomUpSingleAnimal(model).eval()


def _eager(wrapper: nn.Module, frames: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return wrapper(torch.from_numpy(frames)).numpy()


def _px(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a[..., :2] - b[..., :2], axis=-1).max())


def _h5(path: Path) -> np.ndarray:
    return pd.read_hdf(path, "df_with_missing").to_numpy().reshape(-1, len(BODYPARTS), 3)


def test_fp32_torchscript_matches_onnxruntime_on_video(exported, wrapper, tmp_path):
    bundle_dir = export_torch(exported, tmp_path / "tiny.bundle")
    bundle = Bundle.load(bundle_dir)  # sha256 of every graph checked
    spec = bundle.graph("pose_torch_fp32")
    assert spec.file == "pose.fp32.torchscript.pt" and spec.sha256
    assert bundle.graph("pose_torch_fp32").outputs == bundle.graph("pose").outputs
    assert (bundle_dir / "parity.torch_fp32.json").is_file()
    assert not list(bundle_dir.glob(".*"))  # no temporary left behind

    video = _write_video(tmp_path / "clip.mp4", _frames(11, 64, 96, seed=2))
    ort = analyze_video(bundle_dir, video, tmp_path / "ort", batch_size=4, progress=False)
    pt = analyze_video(bundle_dir, video, tmp_path / "torch", batch_size=4, backend="torch",
                       progress=False)
    a, b = _h5(ort.h5_path), _h5(pt.h5_path)
    assert a.shape == b.shape == (11, len(BODYPARTS), 3)  # 11 = 2 full batches + a batch of 3
    assert _px(a, b) <= TOLERANCE_PX
    assert np.abs(a[..., 2] - b[..., 2]).max() < 1e-3
    meta = pd.read_pickle(pt.meta_path)
    assert meta["data"]["dlc-deploy"]["backend"] == "torch-cpu-fp32"


def test_dynamic_batch_and_frame_size(exported, wrapper, tmp_path):
    bundle_dir = export_torch(exported, tmp_path / "tiny.bundle")
    bundle = Bundle.load(bundle_dir)
    with make_backend(bundle, "torch") as backend, make_backend(bundle, "onnxruntime") as ort:
        for n, h, w in [(1, 64, 96), (5, 64, 96), (3, 80, 128), (2, 48, 60), (1, 97, 65)]:
            frames = _frames(n, h, w, seed=n + h)
            out = backend.run(frames)["keypoints"]
            assert out.dtype == np.float32 and out.shape == (n, 1, len(BODYPARTS), 3)
            assert _px(out, _eager(wrapper, frames)) <= 1e-3, (n, h, w)
            assert _px(out, ort.run(frames)["keypoints"]) <= TOLERANCE_PX, (n, h, w)


def test_fp16_on_cpu(exported, wrapper, tmp_path):
    frames = _frames(3, 64, 96, seed=3)
    bundle_dir = export_torch(exported, tmp_path / "tiny.bundle", ("fp16", "fp32"), frames)
    bundle = Bundle.load(bundle_dir)
    assert bundle.graph("pose_torch_fp16").file == "pose.fp16.torchscript.pt"
    assert {"pose", "pose_torch_fp16", "pose_torch_fp32"} <= set(bundle.manifest.graphs)
    with make_backend(bundle, "torch", precision="fp16") as half:
        assert half.name == "torch-cpu-fp16"
        for n, h, w in [(3, 64, 96), (2, 72, 100)]:
            x = _frames(n, h, w, seed=h)
            out = half.run(x)["keypoints"]  # uint8 in, float32 out, network in half
            assert out.dtype == np.float32
            # Decoding is fp32: only the half network can move a keypoint (a peak flip would be
            # a whole heatmap cell; this seeded model has none on these frames).
            assert _px(out, _eager(wrapper, x)) <= TOLERANCE_PX
    with make_backend(bundle, "torch") as default:  # CPU prefers fp32 when both exist
        assert default.name == "torch-cpu-fp32"


def test_torch_export_pt2_alternative(exported, wrapper, tmp_path):
    bundle_dir = export_torch(exported, tmp_path / "tiny.bundle", frames=_frames(1, 64, 96),
                              torch_method="export")
    path = bundle_dir / "pose.fp32.pt2"
    assert Bundle.load(bundle_dir).graph("pose_torch_fp32").file == path.name
    assert json.loads((bundle_dir / "parity.torch_fp32.json").read_text())["passed"]
    backend = TorchBackend(path)
    for n, h, w in [(1, 64, 96), (4, 80, 112), (2, 33, 47)]:
        x = _frames(n, h, w, seed=w)
        assert _px(backend.run(x)["keypoints"], _eager(wrapper, x)) <= 1e-3, (n, h, w)
    backend.close()


def test_missing_artifact_is_a_clear_error(exported, bundle_dir):
    bundle = Bundle.load(bundle_dir)
    with pytest.raises(BackendError, match="no torch artifact: re-export with --format torch"):
        make_backend(bundle, "torch")
    bundle_dir = export_torch(exported, bundle_dir.parent / "torch.bundle")
    with pytest.raises(BackendError, match="no fp16 torch artifact"):
        make_backend(Bundle.load(bundle_dir), "torch", precision="fp16")
    with pytest.raises(BackendError, match="unknown device"):
        make_backend(Bundle.load(bundle_dir), "torch", device="tpu")


class _ShapeBranch(nn.Module):
    """Eager code that branches on the frame size: tracing bakes one branch in."""

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.float().mean(dim=(1, 2))  # (B, 3)
        x = x * 2 if frames.shape[1] > 56 else x
        return torch.stack([x, x], dim=1)[:, None]  # (B, 1, 2, 3)


class _ShapeBranchTask(ExportTask):
    """A task around ``_ShapeBranch``: the formats and the pipeline's check work on any task's
    graphs, so a toy one shows what happens to an artifact whose traced shapes are wrong."""

    manifest_fields = TaskManifest(task="bottom_up", decoder={"type": "heatmap_argmax"},
                                   individuals=["individual_1"])

    def __init__(self, frames: np.ndarray):
        self.graphs = {"pose": ExportGraph(
            "pose", _ShapeBranch(), [FRAMES],
            [TensorSpec("keypoints", "float32", ["batch", 1, 2, 3])], (frames[:2],))}

    def check(self, ctx, fmt, backends, frame_sets):
        return run_parity(self.graphs["pose"].module, backends["pose"].run, frame_sets,
                          source="toy frames", backend=fmt.backend_label(ctx),
                          tolerance_px=ctx.gate(fmt.precision))


def _toy_torch_export(out: Path, **options) -> None:
    from types import SimpleNamespace

    from dlc_export.tasks.base import ExportContext
    from dlc_export.formats import TorchFormat
    from dlc_export.manifest_builder import build_manifest
    from dlc_export.pipeline import check_artifacts, staged_bundle

    frames = _frames(2, 64, 96)
    task = _ShapeBranchTask(frames)
    options = ExportOptions.build(**options)
    source = SimpleNamespace(frames=frames, frames_source="toy frames", pcutoff=0.6,
                             scorer="toy", snapshot=out, config=SimpleNamespace(
                                 bodyparts=["a", "b"], net_type="toy"))
    with staged_bundle(out) as staging:
        ctx = ExportContext(staging, task, source, options,
                            build_manifest(task.manifest_fields, source, options,
                                           record_snapshot=False))
        fmt = TorchFormat("fp32")
        fmt.write(ctx)
        ctx.save_manifest()
        check_artifacts(ctx, fmt)


def test_artifact_that_does_not_generalise_is_refused(tmp_path):
    with pytest.raises(ParityError, match="do not generalise"):
        _toy_torch_export(tmp_path / "bad.bundle")
    assert not list(tmp_path.iterdir())  # neither the artifact nor a temporary


def test_allow_parity_failure_keeps_the_artifact_and_says_so(tmp_path):
    """--allow-parity-failure applies to torch artifacts as to the ONNX graph and engines."""
    _toy_torch_export(tmp_path / "kept.bundle", allow_parity_failure=True)
    report = json.loads((tmp_path / "kept.bundle" / "parity.torch_fp32.json").read_text())
    assert (tmp_path / "kept.bundle" / "pose.fp32.torchscript.pt").is_file()
    assert report["passed"] is False and report["max_px"] > 0.5
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_artifact_runs_without_exporting_code(exported, tmp_path):
    bundle_dir = export_torch(exported, tmp_path / "tiny.bundle")
    video = _write_video(tmp_path / "v.mp4", _frames(5, 64, 96, seed=5))
    script = textwrap.dedent("""
        import sys

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("dlc_train", "dlc_export"):
                    raise ImportError(f"{name} is blocked in this test")
                return None

        sys.meta_path.insert(0, Block())
        import torch
        torch.set_num_threads(1)
        from dlc_runtime import analyze_video

        res = analyze_video(sys.argv[1], sys.argv[2], sys.argv[3], backend="torch",
                            progress=False)
        assert res.n_frames == 5, res
        print("OK")
        """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH",
                                                                                     "")]))
    proc = subprocess.run([sys.executable, "-c", script, str(bundle_dir), str(video),
                           str(tmp_path / "out")], env=env, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("OK")



def test_torch_not_installed_is_a_clear_error(exported, tmp_path):
    bundle_dir = export_torch(exported, tmp_path / "tiny.bundle")
    script = textwrap.dedent("""
        import sys

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "dlc_train", "dlc_export"):
                    raise ImportError(f"No module named {name!r}")
                return None

        sys.meta_path.insert(0, Block())
        from dlc_runtime import BackendError, Bundle, make_backend

        try:
            make_backend(Bundle.load(sys.argv[1]), "torch")
        except BackendError as err:
            print(err)
        """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH",
                                                                                     "")]))
    proc = subprocess.run([sys.executable, "-c", script, str(bundle_dir)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "backend 'torch' needs PyTorch" in proc.stdout


@pytest.mark.gpu
def test_cuda_fp16_matches_onnxruntime(exported, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU visible to torch")
    frames = _frames(4, 64, 96, seed=7)
    bundle_dir = export_torch(exported, tmp_path / "tiny.bundle", ("fp16",), frames,
                              device="cuda")
    bundle = Bundle.load(bundle_dir)
    with make_backend(bundle, "torch", device="cuda") as half, \
            make_backend(bundle, "onnxruntime") as ort:
        assert half.name == "torch-cuda-fp16"  # CUDA prefers fp16
        for n, h, w in [(4, 64, 96), (1, 96, 128), (7, 72, 100)]:
            x = _frames(n, h, w, seed=n)
            out = half.run(x)["keypoints"]
            assert out.dtype == np.float32 and out.shape[0] == n
            assert _px(out, ort.run(x)["keypoints"]) <= TOLERANCE_PX


@pytest.mark.parametrize("net_type, multi_animal", [
    ("resnet_tiny", False),   # heatmap + locref keypoints
    ("resnet_tiny", True),    # PAF tensor half: peaks, scores, peak_index, affinities
    ("dekr_w18", True),       # DEKR poses
])
def test_half_precision_keeps_every_wrappers_outputs(net_type, multi_animal):
    """fp16 swaps only the network: each wrapper keeps its own preprocessing and decoding, so
    multi-animal graphs keep their named outputs (before, an fp16 artifact decoded every model
    as single-animal); predictors stay fp32 and the caller's wrapper is not converted."""
    from dlc_export.config_view import view_config
    from dlc_export.half import half_precision
    from dlc_export.tasks.bottom_up import make_plan
    from dlc_train.config import make_pytorch_pose_config
    from dlc_train.models import PoseModel

    project = {"bodyparts": BODYPARTS, "multianimalproject": False} if not multi_animal else \
        {"multianimalproject": True, "multianimalbodyparts": BODYPARTS,
         "individuals": ["m1", "m2"], "uniquebodyparts": [], "identity": False}
    cfg = make_pytorch_pose_config(project, "pytorch_config.yaml", net_type)
    torch.manual_seed(0)
    model = PoseModel.build(cfg["model"])
    wrapper = make_plan(view_config(cfg, "x"), model).wrapper.eval()
    frames = torch.from_numpy(_frames(2, 64, 64))
    with torch.no_grad():
        calibrate_batchnorm(model, wrapper.normalize.prepare(frames)[0])  # else fp16 overflows
    half = half_precision(wrapper)
    dtypes = {n: p.dtype for n, p in half.named_parameters()}
    assert {d for n, d in dtypes.items() if ".predictor." not in n} == {torch.float16}
    assert {p.dtype for p in wrapper.parameters()} == {torch.float32}
    assert {b.dtype for n, b in half.named_buffers() if ".predictor." in n and
            b.is_floating_point()} <= {torch.float32}
    with torch.no_grad():
        ref = wrapper(frames)
        got = half(frames)
    ref = ref if isinstance(ref, tuple) else (ref,)
    got = got if isinstance(got, tuple) else (got,)
    assert [(t.shape, t.dtype) for t in got] == [(t.shape, t.dtype) for t in ref]
    assert all(torch.isfinite(t.float()).all() for t in got)


def test_fp16_with_a_letterboxed_network_size(exported, tmp_path):
    """--input-size with an fp16 torch artifact: the half network runs at the network size and
    keypoints come back in frame pixels, like the ONNX graph's."""
    from dlc_export.wrappers import Letterbox
    from dlc_train.config import read_config_as_dict
    from dlc_train.models.loading import build_model_from_snapshot

    _, config_path, snapshot = exported
    frames = _frames(4, 64, 96, seed=1)
    # Heatmaps with real peaks (see helpers/trained_like.py): the export decides the parity, not ties.
    model = build_model_from_snapshot(read_config_as_dict(config_path), snapshot)
    letterboxed = BottomUpSingleAnimal(model)
    letterboxed.normalize.letterbox = Letterbox((48, 48))
    with torch.no_grad():
        inputs = torch.cat([letterboxed.normalize.prepare(torch.from_numpy(f))[0]
                            for f in (frames, _frames(3, 90, 60, seed=90))])
    train_heatmap_peaks(model, inputs)
    peaked = tmp_path / "snapshot-002.pt"
    torch.save({"metadata": {}, "model": model.state_dict()}, peaked)
    result = export_bundle(config_path, peaked, tmp_path / "lb.bundle", frames=frames,
                           input_size=(48, 48), torch_precisions=("fp16",))
    bundle = Bundle.load(result.bundle_dir)
    assert bundle.manifest.input.network_size == (48, 48)
    with make_backend(bundle, "torch", precision="fp16") as half, \
            make_backend(bundle, "onnxruntime") as ort:
        for n, h, w in [(2, 64, 96), (3, 90, 60)]:  # wide and tall frames, both letterboxed
            frames = _frames(n, h, w, seed=h)
            a, b = half.run(frames)["keypoints"], ort.run(frames)["keypoints"]
            assert a.dtype == np.float32 and a.shape == b.shape == (n, 1, len(BODYPARTS), 3)
            # The ONNX graph's letterbox and mapping back to frame pixels are checked against a
            # hand-made reference in test_export_letterbox.py.
            assert _px(a, b) <= TOLERANCE_PX
