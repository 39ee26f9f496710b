"""Build a PoseModel from a pytorch_config and load a snapshot into it with strict keys.

A DeepLabCut 3 snapshot is a dict ``{metadata, model, scheduler[, optimizer]}`` whose ``model``
entry is the PoseModel state_dict. Loading is strict: a snapshot of another architecture or with
another number of bodyparts is refused with a message that says what differs.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import torch

from dlc_train.models.model import PoseModel


class SnapshotError(ValueError):
    """A snapshot file is unreadable or does not fit the model its config describes."""


def read_snapshot(path: str | Path) -> dict:
    """Reads a snapshot dict with ``weights_only=True`` (no pickled code runs)."""
    path = Path(path)
    if not path.is_file():
        raise SnapshotError(f"snapshot not found: {path}")
    try:
        snapshot = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SnapshotError(f"cannot read snapshot {path} (truncated or not a PyTorch "
                            f"snapshot): {reason}") from None
    except Exception as err:  # weights_only unpickler refusals have their own types
        raise SnapshotError(f"cannot read snapshot {path}: {type(err).__name__}: "
                            f"{str(err).splitlines()[0] if str(err) else ''}") from None
    if isinstance(snapshot, dict) and "model" in snapshot and isinstance(snapshot["model"], dict):
        return snapshot
    if isinstance(snapshot, dict) and all(isinstance(v, torch.Tensor) for v in snapshot.values()):
        return {"metadata": {}, "model": snapshot}  # a bare state_dict
    raise SnapshotError(f"{path} is not a DeepLabCut snapshot (no 'model' state_dict inside)")


def _describe_mismatch(model: PoseModel, state: dict[str, torch.Tensor], net_type: str) -> str:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
                   for k, v in expected.items() if k in state and state[k].shape != v.shape]
    parts = []
    if missing or unexpected:
        hint = " (a snapshot of another architecture?)" if len(missing) > 10 else ""
        parts.append(f"{len(missing)} missing keys{hint}, e.g. {missing[:3]}; "
                     f"{len(unexpected)} unexpected keys, e.g. {unexpected[:3]}")
    if wrong_shape:
        parts.append(f"{len(wrong_shape)} keys of another shape (another number of bodyparts?), "
                     f"e.g. {wrong_shape[:2]}")
    return f"the snapshot does not fit the config's {net_type} model: " + "; ".join(parts)


def load_state_dict_strict(model: PoseModel, state: dict[str, torch.Tensor],
                           net_type: str = "configured") -> None:
    """``model.load_state_dict(state, strict=True)`` with a one-line, specific error."""
    expected = model.state_dict()
    if set(expected) != set(state) or any(state[k].shape != v.shape for k, v in expected.items()):
        raise SnapshotError(_describe_mismatch(model, state, net_type))
    model.load_state_dict(state, strict=True)


def build_model_from_snapshot(pytorch_config: dict, snapshot_path: str | Path) -> PoseModel:
    """Builds the configured PoseModel and loads the snapshot's weights into it (eval mode)."""
    model = PoseModel.build(pytorch_config["model"])
    snapshot = read_snapshot(snapshot_path)
    load_state_dict_strict(model, snapshot["model"], pytorch_config.get("net_type", "configured"))
    return model.eval()
