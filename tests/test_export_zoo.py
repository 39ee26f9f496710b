"""Every bottom-up architecture of the zoo exports and passes parity with ONNX Runtime.

The cases come from the registered net types (``zoo_cases``), so a new bottom-up architecture
is covered as soon as it is registered. Random weights (seeded) at 64x64 frames: the point is
the graph, not the accuracy. Frames are textured noise so that heatmap maxima are not exactly
tied (a flat frame makes argmax order, not the model, pick the peak). Multi-animal models are checked after the runtime's host steps
(PAF assembly, identity order), as the exporter's parity gate does, and the PAF graph outputs are
compared directly too, also at an odd frame size the graph was not traced at. Last, a 2-animal
synthetic project goes export -> analyze_video.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dlc_export import export_bundle
from dlc_export.config_view import view_config
from dlc_export.tasks.bottom_up import make_plan
from dlc_export.wrappers import NormalizeFrames
from dlc_runtime import Bundle, analyze_video
from dlc_runtime.backends import OnnxRuntimeBackend
from dlc_train.config import (
    available_net_types,
    make_pytorch_pose_config,
    read_config_as_dict,
    write_config,
)
from dlc_train.config.architectures import ARCHITECTURES
from dlc_train.models import PoseModel
from dlc_train.task import Task
from helpers.variants import tiered
from helpers.shuffles import write_shuffle

BODYPARTS = ["snout", "leftear", "rightear", "tail"]
INDIVIDUALS = ["mouse1", "mouse2"]
TOLERANCE_PX = 0.5
SIZE = (64, 64)
ODD_SIZE = (79, 47)   # (height, width): not the traced size, and no larger (cost)

# Optional heads of DeepLabCut's multi-animal projects (unique bodyparts, identity), tried on one
# architecture per kind of bottom-up graph. Such a case replaces the plain multi-animal case of
# its net type: it exports everything the plain case does, plus the optional outputs.
HEAD_VARIANTS = {"dekr_w18": ("unique", "identity"),
                 "dlcrnet_stride16_ms5": ("unique", "identity")}


# The fast tier exports each family's smallest member (tests/helpers/variants.py); the larger ones, with
# the same graph structure, are ``slow`` (up to 13 s each on 2 cores) and run in the full suite.


def bottom_up_net_types() -> list[str]:
    """Every registered net type whose config is bottom-up (top-down and CTD models have their
    own exporters and tests): decided by the config's task, so a new architecture is included
    as soon as it is registered."""
    return [net_type for net_type in available_net_types()
            if Task.from_str(make_pytorch_pose_config(_project(True, ()), "pytorch_config.yaml",
                                                      net_type)["method"]) == Task.BOTTOM_UP]


def zoo_cases() -> list:
    """(net_type, multi-animal project, optional heads) for every bottom-up architecture.

    Plain backbones (``ARCHITECTURES[...].is_backbone``: a heatmap head on single-animal
    projects, a PAF head on multi-animal ones) are exported for both project kinds; every other
    bottom-up architecture (DEKR, DLCRNet) for the multi-animal projects it is made for, as
    tests/test_zoo.py's ``zoo_cases`` does.
    """
    cases = []
    for net_type in bottom_up_net_types():
        arch = ARCHITECTURES.get(net_type)
        if arch is not None and arch.is_backbone:
            cases.append((net_type, False, ()))
        cases.append((net_type, True, HEAD_VARIANTS.get(net_type, ())))
    return cases


def _case_id(net_type: str, multi_animal: bool, heads: tuple[str, ...]) -> str:
    return f"{net_type}-{'ma' if multi_animal else 'sa'}{''.join('-' + h for h in heads)}"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Two shared cores: intra-op threads oversubscribe them and slow the big models down a lot.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _frames(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    out = np.empty((n, height, width, 3), np.uint8)
    for i in range(n):
        for c in range(3):
            wave = 60 * np.sin(xx / (3 + c) + yy / (4 + c) + i)
            out[i, ..., c] = np.clip(100 + wave + rng.normal(0, 20, xx.shape), 0, 255)
    return out


def _project(multi_animal: bool, heads: tuple[str, ...]) -> dict:
    if not multi_animal:
        return {"bodyparts": BODYPARTS, "multianimalproject": False}
    return {"multianimalproject": True, "multianimalbodyparts": BODYPARTS,
            "individuals": INDIVIDUALS,
            "uniquebodyparts": ["corner"] if "unique" in heads else [],
            "identity": "identity" in heads}


def _tame_maps(model: PoseModel) -> None:
    """Brings random locref and PAF maps to a trained model's scale (|map| <= 1).

    Random weights on the wide, unnormalised HRNet/DEKR/DLCRNet features give locref and PAF maps
    of up to ~1e7, i.e. offsets of ~1e8 px or affinities of ~1e6, where float32 spacing alone is
    0.5-1: ONNX Runtime and PyTorch then differ by that much through summation order only.
    Trained maps are O(1) (locref targets are offset / locref_std, PAFs are unit vectors).
    Scaling a map's last layer scales the map exactly.
    """
    frames = torch.from_numpy(_frames(1, *SIZE))
    with torch.no_grad():
        outputs = model(NormalizeFrames()(frames))
        for name, head in model.heads.items():
            for key in ("locref", "paf"):
                layers = getattr(head, f"{key}_head", None)
                if layers is None or key not in outputs[name]:
                    continue
                peak = float(outputs[name][key].abs().max())
                last = [m for m in layers.modules()
                        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))][-1]
                if peak > 1.0:
                    last.weight.div_(peak)
                    if last.bias is not None:
                        last.bias.div_(peak)


def _make_shuffle(folder: Path, net_type: str, project: dict) -> tuple[Path, Path, PoseModel]:
    """A pytorch_config.yaml and a random-weight snapshot (seeded)."""
    made = write_shuffle(folder / "train", project, net_type, prepare=_tame_maps)
    return made.config_path, made.snapshot, made.model


def _fast_cases() -> list:
    """tiered(zoo_cases()), with one fast case per family: a plain backbone's single-animal
    case is slow beside its multi-animal one (the same backbone graph; single-animal heatmap
    exports are covered fast by the demo's and test_export_structure's bundles)."""
    params = tiered(zoo_cases(), net_type=lambda case: case[0],
                    ids=lambda case: _case_id(*case))
    with_ma = {p.values[0] for p in params if p.values[1]}
    return [pytest.param(*p.values, id=p.id, marks=(pytest.mark.slow,))
            if not p.values[1] and p.values[0] in with_ma else p for p in params]


@pytest.mark.parametrize("net_type,multi_animal,heads", _fast_cases())
def test_zoo_exports_with_parity(tmp_path, net_type, multi_animal, heads):
    config_path, snapshot, model = _make_shuffle(tmp_path, net_type,
                                                 _project(multi_animal, heads))
    frames = _frames(2, *SIZE)
    # onnxslim is exercised by the other export tests; skipping it here saves minutes.
    result = export_bundle(config_path, snapshot, tmp_path / "m.bundle", frames=frames,
                           tolerance_px=TOLERANCE_PX, simplify=False)
    assert result.parity.passed and result.parity.max_px <= TOLERANCE_PX, result.parity.summary()

    bundle = Bundle.load(result.bundle_dir)
    outputs = [o.name for o in bundle.graph("pose").outputs]
    assert bundle.task == "bottom_up"
    assert bundle.multi_animal is multi_animal
    if not multi_animal:
        assert bundle.manifest.decoder["type"] == "heatmap_argmax"
        assert outputs == ["keypoints"]
        return
    assert bundle.individuals == INDIVIDUALS
    decoder = bundle.manifest.decoder
    assert decoder["num_animals"] == len(INDIVIDUALS)
    if "unique" in heads:
        assert bundle.unique_bodyparts == ["corner"] and "unique_keypoints" in outputs
    if net_type.startswith("dekr"):
        assert decoder["type"] == "dekr"
        assert outputs[0] == "keypoints"
        assert ("identity_scores" in outputs) == ("identity" in heads)
        return
    assert decoder["type"] == "paf" and decoder["graph"] and "min_affinity" in decoder
    assert ("peak_identity" in outputs) == ("identity" in heads)
    # The graph was traced at 64x64: an odd frame size checks that nothing (e.g. DLCRNet
    # stride 32's antialiased resize weights) stayed fixed at the traced size.
    _check_paf_graph_outputs(result.bundle_dir, model, config_path,
                             [frames, _frames(1, *ODD_SIZE, seed=1)])


def _check_paf_graph_outputs(bundle_dir: Path, model: PoseModel, config_path: Path,
                             frame_sets: list[np.ndarray]) -> None:
    """The PAF graph's own outputs match the eager tensor half on each set of frames."""
    cfg = read_config_as_dict(config_path)
    view = view_config(cfg, config_path)
    plan = make_plan(view, model)
    # As export_bundle does: HRNet pads to multiples of 32 in the graph (auto_padding).
    plan.wrapper.normalize.pad_divisor = view.inference.pad_divisors
    backend = OnnxRuntimeBackend(bundle_dir / "pose.onnx")
    try:
        for frames in frame_sets:
            with torch.no_grad():
                ref = dict(zip(plan.output_names,
                               (t.numpy() for t in plan.wrapper(torch.from_numpy(frames)))))
            got = backend.run(frames)
            where = f"frames {frames.shape}"
            np.testing.assert_array_equal(got["peak_index"], ref["peak_index"], err_msg=where)
            np.testing.assert_allclose(got["peaks"], ref["peaks"], atol=2e-3, err_msg=where)
            np.testing.assert_allclose(got["scores"], ref["scores"], atol=2e-3, err_msg=where)
            np.testing.assert_allclose(got["affinities"], ref["affinities"], atol=2e-3,
                                       err_msg=where)
            if "peak_identity" in ref:
                np.testing.assert_allclose(got["peak_identity"], ref["peak_identity"],
                                           atol=1e-4, err_msg=where)
            assert (ref["peak_index"] >= 0).any(), f"{where}: no peak, a vacuous comparison"
    finally:
        backend.close()


def test_named_cases_are_bottom_up_architectures():
    """A renamed or removed net type must not silently drop the optional-head cases."""
    assert set(HEAD_VARIANTS) <= set(bottom_up_net_types())


def test_each_method_is_routed_to_its_task(tmp_path, monkeypatch):
    """method: td / ctd / bu each go to their task's builder (dlc_export.tasks.TASKS)."""
    from dlc_export import tasks
    from dlc_train.task import Task

    calls = []

    class Routed(Exception):
        pass

    def fake(source, options):
        calls.append((source.config.task, options.tolerance_px))
        raise Routed

    for task in (Task.TOP_DOWN, Task.BOTTOM_UP):
        monkeypatch.setitem(tasks.TASKS, task, fake)
    for net_type, task in (("top_down_resnet_50", Task.TOP_DOWN), ("resnet_50", Task.BOTTOM_UP)):
        config_path = tmp_path / net_type / "pytorch_config.yaml"
        config_path.parent.mkdir()
        write_config(config_path, make_pytorch_pose_config({"bodyparts": BODYPARTS},
                                                           config_path, net_type))
        with pytest.raises(Routed):
            export_bundle(config_path, tmp_path / "snapshot-001.pt", tmp_path / "x.bundle",
                          tolerance_px=0.25)
        assert calls[-1] == (task, 0.25)


def test_two_animal_project_exports_and_analyzes(tmp_path):
    """Synthetic 2-animal project -> a PAF model (random weights) -> bundle -> 4-level h5.

    resnet_tiny: every architecture's PAF graph is checked by the zoo cases above; this test is
    about the project -> export -> analyze_video path."""
    from dlc_train.synthetic import SyntheticSpec, generate_project

    spec = SyntheticSpec(num_animals=2, width=128, height=96, num_labeled_frames=3,
                         num_video_frames=5, seed=1)
    project = generate_project(tmp_path / "proj", spec)
    project_cfg = read_config_as_dict(project.config_path)
    project_cfg["project_path"] = str(project.project_dir)
    config_path, snapshot, _ = _make_shuffle(tmp_path / "shuffle", "resnet_tiny", project_cfg)
    result = export_bundle(config_path, snapshot, tmp_path / "ma.bundle",
                           frames=project.video_path, simplify=False)
    assert result.parity.passed, result.parity.summary()

    analysis = analyze_video(result.bundle_dir, project.video_path, dest_folder=tmp_path / "out",
                             progress=False)
    df = pd.read_hdf(analysis.h5_path, "df_with_missing")
    assert df.columns.names == ["scorer", "individuals", "bodyparts", "coords"]
    assert list(df.columns.get_level_values("individuals").unique()) == spec.individuals
    assert list(df.columns.get_level_values("bodyparts").unique()) == \
        project_cfg["multianimalbodyparts"]
    assert len(df) == spec.num_video_frames and list(df.index) == list(range(len(df)))


@pytest.mark.parametrize("net_type,heads", [
    ("resnet_tiny", ()),
    # 14 s on 2 cores: the full tier's (DEKR's graph export is covered by the zoo cases).
    pytest.param("dekr_w18", ("unique", "identity"), marks=pytest.mark.slow)])
def test_multi_animal_torch_artifacts_analyze_like_onnxruntime(tmp_path, net_type, heads):
    """Torch artifacts of multi-animal graphs (PAF tensors; DEKR poses with unique bodyparts
    and identity scores): checked through the runtime's host steps at export, then the same
    .h5 from analyze_video with backend torch as with onnxruntime."""
    from dlc_train.synthetic import SyntheticSpec, generate_project

    spec = SyntheticSpec(num_animals=2, width=128, height=96, num_labeled_frames=2,
                         num_video_frames=5, seed=2)
    project = generate_project(tmp_path / "proj", spec)
    config_path, snapshot, _ = _make_shuffle(tmp_path / "shuffle", net_type,
                                             _project(True, heads))
    result = export_bundle(config_path, snapshot, tmp_path / "ma.bundle",
                           frames=_frames(4, 96, 128, seed=3), simplify=False,
                           torch_precisions=("fp32",))
    bundle = Bundle.load(result.bundle_dir)
    artifact = bundle.graph("pose_torch_fp32")
    assert artifact.outputs == bundle.graph("pose").outputs and len(artifact.outputs) > 1
    report = __import__("json").loads((result.bundle_dir / "parity.torch_fp32.json").read_text())
    assert report["passed"] and report["backend"] == "torch-torchscript-fp32-cpu"
    h5 = {}
    for kind in ("onnxruntime", "torch"):
        run = analyze_video(result.bundle_dir, project.video_path, tmp_path / kind,
                            progress=False, backend=kind)
        h5[kind] = pd.read_hdf(run.h5_path, "df_with_missing")
    a, b = h5["onnxruntime"].to_numpy(), h5["torch"].to_numpy()
    assert h5["torch"].columns.equals(h5["onnxruntime"].columns)
    assert np.array_equal(np.isnan(a), np.isnan(b))
    assert (~np.isnan(a)).any()
    found = ~np.isnan(a)
    assert np.abs(a[found] - b[found]).max() <= TOLERANCE_PX
