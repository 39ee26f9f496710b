"""Every bottom-up architecture of the zoo exports and passes parity with ONNX Runtime.

Random weights (seeded) at 64x64 frames: the point is the graph, not the accuracy. Frames are
textured noise so that heatmap maxima are not exactly tied (a flat frame makes argmax order,
not the model, pick the peak). Multi-animal models are checked after the runtime's host steps
(PAF assembly, identity order), as the exporter's parity gate does, and the PAF graph outputs are
compared directly too. Last, a 2-animal synthetic project goes export -> analyze_video.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dlc_export import export_bundle
from dlc_export.onnx_export import ExportError
from dlc_export.plans import make_plan
from dlc_export.wrappers import NormalizeFrames
from dlc_runtime import Bundle, analyze_video
from dlc_runtime.backends import OnnxRuntimeBackend
from dlc_train.config import make_pytorch_pose_config, read_config_as_dict, write_config
from dlc_train.models import PoseModel

BODYPARTS = ["snout", "leftear", "rightear", "tail"]
INDIVIDUALS = ["mouse1", "mouse2"]
TOLERANCE_PX = 0.5
SIZE = (64, 64)

# (net_type, multi-animal project, optional heads)
ZOO = [
    ("resnet_50", False, ()),
    ("resnet_50", True, ()),                    # PAF head on a plain backbone
    ("resnet_101", False, ()),
    ("hrnet_w18", False, ()),
    ("hrnet_w32", False, ()),
    ("hrnet_w48", False, ()),
    ("cspnext_s", False, ()),
    ("cspnext_m", False, ()),
    ("cspnext_x", False, ()),
    ("dekr_w18", True, ("unique", "identity")),
    ("dekr_w32", True, ()),
    ("dekr_w48", True, ()),
    ("dlcrnet_stride16_ms5", True, ("unique", "identity")),
]


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


def _tame_locref(model: PoseModel) -> None:
    """Brings random locref maps to a trained model's scale (|locref| <= 1).

    Random weights on the wide, unnormalised HRNet/DEKR/DLCRNet features give locref maps of up
    to ~1e6, i.e. offsets of ~1e7 px, where float32 spacing alone is 0.5-1 px: ONNX Runtime and
    PyTorch then differ by pixels through summation order only. Trained locref maps are O(1)
    (targets are offset / locref_std). Scaling the last layer scales the map exactly.
    """
    frames = torch.from_numpy(_frames(1, *SIZE))
    with torch.no_grad():
        outputs = model(NormalizeFrames()(frames))
        for name, head in model.heads.items():
            locref_head = getattr(head, "locref_head", None)
            if locref_head is None or "locref" not in outputs[name]:
                continue
            peak = float(outputs[name]["locref"].abs().max())
            last = [m for m in locref_head.modules()
                    if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))][-1]
            if peak > 1.0:
                last.weight.div_(peak)
                if last.bias is not None:
                    last.bias.div_(peak)


def _make_shuffle(folder: Path, net_type: str, project: dict) -> tuple[Path, Path, PoseModel]:
    """A pytorch_config.yaml and a random-weight snapshot (seeded)."""
    config_path = folder / "train" / "pytorch_config.yaml"
    config_path.parent.mkdir(parents=True)
    cfg = make_pytorch_pose_config(project, config_path, net_type)
    write_config(config_path, cfg)
    torch.manual_seed(0)
    model = PoseModel.build(cfg["model"]).eval()
    _tame_locref(model)
    snapshot = config_path.parent / "snapshot-001.pt"
    torch.save({"metadata": {}, "model": model.state_dict()}, snapshot)
    return config_path, snapshot, model


@pytest.mark.parametrize("net_type,multi_animal,heads", ZOO,
                         ids=[f"{n}-{'ma' if m else 'sa'}{''.join('-' + h for h in x)}"
                              for n, m, x in ZOO])
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
    _check_paf_graph_outputs(result.bundle_dir, model, config_path, frames)


def _check_paf_graph_outputs(bundle_dir: Path, model: PoseModel, config_path: Path,
                             frames: np.ndarray) -> None:
    """The PAF graph's own outputs match the eager tensor half, and assembly finds animals."""
    plan = make_plan(read_config_as_dict(config_path), model, config_path)
    with torch.no_grad():
        ref = dict(zip(plan.output_names,
                       (t.numpy() for t in plan.wrapper(torch.from_numpy(frames)))))
    backend = OnnxRuntimeBackend(bundle_dir / "pose.onnx")
    got = backend.run(frames)
    backend.close()
    np.testing.assert_array_equal(got["peak_index"], ref["peak_index"])
    np.testing.assert_allclose(got["peaks"], ref["peaks"], atol=2e-3)
    np.testing.assert_allclose(got["scores"], ref["scores"], atol=2e-3)
    np.testing.assert_allclose(got["affinities"], ref["affinities"], atol=2e-3)
    if "peak_identity" in ref:
        np.testing.assert_allclose(got["peak_identity"], ref["peak_identity"], atol=1e-4)
    assert (ref["peak_index"] >= 0).any(), "no peak at all: the comparison would be vacuous"


def test_dlcrnet_stride32_is_refused_clearly(tmp_path):
    config_path, snapshot, _ = _make_shuffle(tmp_path, "dlcrnet_stride32_ms5",
                                             _project(True, ()))
    with pytest.raises(ExportError, match="dlcrnet_stride32_ms5 cannot be exported: .*"
                                          "antialiased bilinear resize"):
        export_bundle(config_path, snapshot, tmp_path / "m.bundle", frames=_frames(2, *SIZE))
    assert not (tmp_path / "m.bundle").exists()


def test_top_down_is_routed_away_from_the_bottom_up_plans(tmp_path, monkeypatch):
    """method: td goes to dlc_export.top_down.export_top_down_bundle (another module)."""
    import sys
    import types

    calls = []
    fake = types.ModuleType("dlc_export.top_down")
    fake.export_top_down_bundle = lambda cfg, snap, out, **kw: calls.append((cfg, snap, out, kw))
    monkeypatch.setitem(sys.modules, "dlc_export.top_down", fake)
    config_path = tmp_path / "pytorch_config.yaml"
    cfg = make_pytorch_pose_config({"bodyparts": BODYPARTS}, config_path, "top_down_resnet_50")
    write_config(config_path, cfg)
    export_bundle(config_path, tmp_path / "snapshot-001.pt", tmp_path / "td.bundle")
    assert len(calls) == 1 and calls[0][0] == config_path and "tolerance_px" in calls[0][3]


def test_two_animal_project_exports_and_analyzes(tmp_path):
    """Synthetic 2-animal project -> resnet_50 PAF (random weights) -> bundle -> 4-level h5."""
    from dlc_train.synthetic import SyntheticSpec, generate_project

    spec = SyntheticSpec(num_animals=2, width=128, height=96, num_labeled_frames=3,
                         num_video_frames=5, seed=1)
    project = generate_project(tmp_path / "proj", spec)
    project_cfg = read_config_as_dict(project.config_path)
    project_cfg["project_path"] = str(project.project_dir)
    config_path, snapshot, _ = _make_shuffle(tmp_path / "shuffle", "resnet_50", project_cfg)
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
