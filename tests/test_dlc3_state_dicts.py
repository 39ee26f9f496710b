"""Our models have exactly the state_dict keys and shapes DeepLabCut 3.0.1's models have.

One test per ``../shared/dlc3/state_dict_keys/*.txt`` (detectors are tested elsewhere): the model
is built from ``make_pytorch_pose_config`` for that net_type and task, for a 4-bodypart project
(``_ma``: 2 individuals, PAF graph [[0,1],[1,2],[2,3],[0,3]]), with ``PoseModel.build``. An
architecture whose components are not registered yet fails with the registry's message.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from dlc_train.config import make_pytorch_pose_config
from dlc_train.models import PoseModel
from helpers.variants import key_file_net_type, tiered

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
KEYS_DIR = SHARED / "dlc3" / "state_dict_keys"
PAF_GRAPH = [[0, 1], [1, 2], [2, 3], [0, 3]]
SA_PROJECT = {"project_path": "PROJECT_PATH", "bodyparts": ["a", "b", "c", "d"],
              "multianimalproject": False}
MA_PROJECT = {"project_path": "PROJECT_PATH", "bodyparts": "MULTI!", "multianimalproject": True,
              "multianimalbodyparts": ["a", "b", "c", "d"], "uniquebodyparts": [],
              "individuals": ["i1", "i2"], "identity": False}


def _key_files() -> list[str]:
    if not KEYS_DIR.is_dir():
        return []
    return sorted(p.stem for p in KEYS_DIR.glob("*.txt") if not p.stem.startswith("detector_"))


def read_keys(path: Path) -> dict[str, tuple[int, ...]]:
    """``key<TAB>(shape)`` lines -> {key: shape}."""
    keys = {}
    for line in path.read_text().splitlines():
        if line.strip():
            key, shape = line.split("\t")
            keys[key] = tuple(ast.literal_eval(shape))
    return keys


def config_for(name: str) -> dict:
    net_type, task, animals = name.rsplit("_", 2)
    project = MA_PROJECT if animals == "ma" else SA_PROJECT
    return make_pytorch_pose_config(project, f"{name}.yaml", net_type=net_type,
                                    top_down=task == "TD", paf_graph=PAF_GRAPH)


def describe(ours: dict, theirs: dict) -> str:
    missing = [k for k in theirs if k not in ours]
    extra = [k for k in ours if k not in theirs]
    shapes = [f"{k}: ours {ours[k]} vs {theirs[k]}" for k in theirs
              if k in ours and ours[k] != theirs[k]]
    return (f"{len(missing)} keys missing, e.g. {missing[:5]}; {len(extra)} extra, e.g. "
            f"{extra[:5]}; {len(shapes)} shapes differ, e.g. {shapes[:5]}")


@pytest.mark.skipif(not KEYS_DIR.is_dir(), reason=f"{KEYS_DIR} is absent")
@pytest.mark.parametrize("name", tiered(_key_files(), net_type=key_file_net_type))
def test_state_dict_matches_deeplabcut(name):
    expected = read_keys(KEYS_DIR / f"{name}.txt")
    model = PoseModel.build(config_for(name)["model"])
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    # Key order is not compared: strict loading does not depend on it.
    assert ours == expected, f"{name}: {describe(ours, expected)}"
