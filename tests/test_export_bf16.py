"""bf16 torch artifacts: the network in bfloat16, pre-processing and decoding fp32, beside the
fp16 ones (``dlc_export.half``). torch only: ONNX and TensorRT refuse bf16 in one line.

Checked on the CPU, where torch runs bf16, through the real exporter and the runtime's ``torch``
backend. The models have real heatmap peaks (``helpers/trained_like.py``), so the parity
measures the export, not ties between near-equal cells.
Skips here: ``test_cuda_default_stays_fp16`` (marked gpu; needs a CUDA GPU).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dlc_export import ExportError, export_bundle
from dlc_export.half import HalfPrecisionNetwork, half_precision, reduced_precision
from dlc_export.parity import DEFAULT_PCUTOFF, REDUCED_PRECISION_TOLERANCE_PX
from dlc_export.tasks.top_down_graph import parity_boxes
from dlc_export.torch_artifact import load_torch_artifact
from dlc_export.wrappers import BottomUpSingleAnimal
from dlc_runtime import Bundle, make_backend
from helpers.cli import invoke, one_error_line
from helpers.frames import textured_frames
from helpers.shuffles import write_shuffle
from helpers.trained_like import train_heatmap_peaks
# The top-down project (synthetic video, spread detector scores) and its peak-trained pose
# snapshot, as the top-down export tests build them.
from test_export_top_down import peaked_pose_snapshot, td_project  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

BODYPARTS = ["snout", "leftear", "rightear", "tailbase"]
BF16_GATE = REDUCED_PRECISION_TOLERANCE_PX["bf16"]
#: What these peak-trained tiny models may move in bf16 (measured: at most 0.006 px): far below
#: the gate, which has to admit neighbour-cell swaps of trained models. Decoding in bf16 instead
#: of fp32 would break it: bf16 coordinates between 64 and 128 px are 0.5 px apart.
TINY_MODEL_PX = 0.05


def _max_px(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a[..., :2] - b[..., :2], axis=-1).max())


def _artifact_dtypes(bundle: Bundle, graph: str) -> set[torch.dtype]:
    return {p.dtype for p in load_torch_artifact(bundle.graph_path(graph)).parameters()}


@pytest.fixture(scope="module")
def shuffle(tmp_path_factory):
    """A single-animal resnet_tiny whose heatmaps have clear peaks on ``frames``."""
    frames = textured_frames(4, 64, 96)

    def peaks(model):
        with torch.no_grad():
            inputs = BottomUpSingleAnimal(model).normalize.prepare(torch.from_numpy(frames))[0]
        train_heatmap_peaks(model, inputs)

    folder = tmp_path_factory.mktemp("bf16")
    made = write_shuffle(folder / "train", {"bodyparts": BODYPARTS, "multianimalproject": False},
                         prepare=peaks)
    return made, frames


def test_bottom_up_bf16_beside_fp16(shuffle, tmp_path):
    made, frames = shuffle
    result = export_bundle(made.config_path, made.snapshot, tmp_path / "b.bundle", frames=frames,
                           simplify=False, torch_precisions=("fp16", "bf16"))
    bundle = Bundle.load(result.bundle_dir)  # every listed file against its sha256
    graphs = bundle.manifest.graphs
    assert graphs["pose_torch_bf16"].file == "pose.bf16.torchscript.pt"
    assert graphs["pose_torch_fp16"].file == "pose.fp16.torchscript.pt"  # fp16 as before
    assert "pose_torch_fp32" not in graphs
    assert graphs["pose_torch_bf16"].outputs == graphs["pose"].outputs
    report = result.reports["torch_bf16"]
    assert report.passed and report.backend == "torch-torchscript-bf16-cpu", report.summary()
    assert report.tolerance_px == BF16_GATE and report.min_likelihood == DEFAULT_PCUTOFF
    assert report.gated_max_px <= TINY_MODEL_PX
    assert json.loads((result.bundle_dir / "parity.torch_bf16.json").read_text())["passed"]
    fp16 = result.reports["torch_fp16"]
    assert fp16.passed and fp16.tolerance_px == REDUCED_PRECISION_TOLERANCE_PX["fp16"]
    # Each artifact holds its own dtype (the decoding's few parameters stay fp32).
    assert torch.bfloat16 in _artifact_dtypes(bundle, "pose_torch_bf16")
    assert torch.float16 not in _artifact_dtypes(bundle, "pose_torch_bf16")
    assert torch.float16 in _artifact_dtypes(bundle, "pose_torch_fp16")
    assert torch.bfloat16 not in _artifact_dtypes(bundle, "pose_torch_fp16")

    wrapper = BottomUpSingleAnimal(made.model).eval()
    with make_backend(bundle, "torch", precision="bf16") as bf16:
        assert bf16.name == "torch-cpu-bf16"
        for x in (frames, np.ascontiguousarray(frames[:3, :56, :80])):  # another batch and size
            out = bf16.run(x)["keypoints"]  # uint8 in, float32 out
            assert out.dtype == np.float32 and out.shape == (len(x), 1, len(BODYPARTS), 3)
            with torch.no_grad():
                ref = wrapper(torch.from_numpy(x)).numpy()
            assert _max_px(out, ref) <= TINY_MODEL_PX


def test_bf16_torch_export_program(shuffle, tmp_path):
    made, frames = shuffle
    result = export_bundle(made.config_path, made.snapshot, tmp_path / "b.bundle",
                           frames=frames[:2], simplify=False, torch_precisions=("bf16",),
                           torch_method="export")
    bundle = Bundle.load(result.bundle_dir)
    assert bundle.graph("pose_torch_bf16").file == "pose.bf16.pt2"
    report = result.reports["torch_bf16"]
    assert report.passed and report.gated_max_px <= TINY_MODEL_PX, report.summary()
    with make_backend(bundle, "torch", precision="bf16") as bf16:
        assert bf16.name == "torch-cpu-bf16"


# slow: bf16 export stays in the fast tier through the bottom-up tests above.
@pytest.mark.slow
def test_top_down_bf16_pose_beside_fp32_detector(td_project, tmp_path):
    """bf16 is the pose network's precision; the detector keeps its one fp32 artifact."""
    from dlc_runtime.pipelines import make_pipeline

    frames = textured_frames(2, 120, 160)
    train = peaked_pose_snapshot(td_project[1], tmp_path / "train", frames)
    result = export_bundle(train / "pytorch_config.yaml", train / "snapshot-005.pt",
                           tmp_path / "td.bundle", frames=frames, simplify=False,
                           torch_precisions=("bf16",))
    report = result.reports["torch_bf16"]
    assert report.passed and report.gated_max_px <= TINY_MODEL_PX, report.summary()
    assert report.details["detector_min_matched_iou"] >= 0.99  # the fp32 detector's bar
    bundle = Bundle.load(result.bundle_dir)
    graphs = set(bundle.manifest.graphs)
    assert {"detector_torch_fp32", "pose_torch_bf16"} <= graphs
    assert not {"pose_torch_fp32", "detector_torch_bf16"} & graphs
    assert bundle.graph("pose_torch_bf16").file == "pose.bf16.torchscript.pt"
    boxes = parity_boxes(frames, 2)
    with make_backend(bundle, "torch", graph="pose", precision="bf16") as pose, \
            make_backend(bundle, "torch", graph="detector", precision="bf16") as detector, \
            make_backend(bundle, "onnxruntime", graph="pose") as ort:
        assert pose.name == "torch-cpu-bf16" and detector.name == "torch-cpu-fp32"
        out = pose.run(frames, boxes=boxes)["keypoints"]
        assert out.dtype == np.float32
        assert _max_px(out, ort.run(frames, boxes=boxes)["keypoints"]) <= TINY_MODEL_PX
        pipeline = make_pipeline(bundle, detector)  # opens the pose graph at bf16
        assert pipeline.backend_name == "torch-cpu-fp32 (detector), torch-cpu-bf16 (pose)"
        pipeline.close()


def test_reduced_precision_converts_a_copy_and_keeps_fp16():
    from dlc_train.config import make_pytorch_pose_config
    from dlc_train.models import PoseModel

    cfg = make_pytorch_pose_config({"bodyparts": BODYPARTS, "multianimalproject": False},
                                   "pytorch_config.yaml", "resnet_tiny")
    torch.manual_seed(0)
    wrapper = BottomUpSingleAnimal(PoseModel.build(cfg["model"])).eval()
    for precision, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        reduced = reduced_precision(wrapper, precision)
        network = {p.dtype for n, p in reduced.named_parameters() if ".predictor." not in n}
        assert network == {dtype}, precision
        decoding = {p.dtype for n, p in reduced.named_parameters() if ".predictor." in n}
        assert decoding <= {torch.float32}, precision
    assert {p.dtype for p in wrapper.parameters()} == {torch.float32}  # the caller's stays
    # The fp16 names keep their meaning.
    fp16 = {p.dtype for n, p in half_precision(wrapper).named_parameters()
            if ".predictor." not in n}
    assert fp16 == {torch.float16}
    assert HalfPrecisionNetwork(PoseModel.build(cfg["model"])).dtype == torch.float16
    with pytest.raises(ExportError, match="unknown reduced precision 'int8'; use one of fp16, "
                                          "bf16"):
        reduced_precision(wrapper, "int8")


def test_bf16_is_refused_for_onnx_and_tensorrt_in_one_line(shuffle, tmp_path):
    made, _ = shuffle
    for fmt in ("onnx", "tensorrt"):
        out = tmp_path / f"{fmt}.bundle"
        res = invoke(["export", made.snapshot, "-o", out, "--format", fmt,
                      "--precision", "bf16"])
        one_error_line(res, "no bf16 variant", "--format torch --precision bf16")
        assert not out.exists()
    res = invoke(["analyze", tmp_path / "b.bundle", tmp_path / "v.mp4", "--precision", "bf16"])
    one_error_line(res, "bf16 runs on the torch backend only")


@pytest.mark.gpu
def test_cuda_default_stays_fp16(shuffle, tmp_path):
    """With fp16 and bf16 artifacts, a CUDA device runs fp16 unless bf16 is asked for."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (this torch sees none)")
    made, frames = shuffle
    result = export_bundle(made.config_path, made.snapshot, tmp_path / "b.bundle",
                           frames=frames[:2], simplify=False, torch_precisions=("fp16", "bf16"),
                           device="cuda")
    assert result.reports["torch_bf16"].passed, result.reports["torch_bf16"].summary()
    bundle = Bundle.load(result.bundle_dir)
    with make_backend(bundle, "torch", device="cuda") as default:
        assert default.name == "torch-cuda-fp16"
    with make_backend(bundle, "torch", device="cuda", precision="bf16") as bf16:
        assert bf16.name == "torch-cuda-bf16"
        assert bf16.run(frames)["keypoints"].dtype == np.float32
