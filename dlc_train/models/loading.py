"""Snapshots: the one reader, strict loading with specific errors, and building models from
DeepLabCut's own configs.

A DeepLabCut 3 snapshot is a dict ``{metadata, model, scheduler[, optimizer]}`` whose ``model``
entry is the PoseModel state_dict. Loading is strict: a snapshot of another architecture or with
another number of bodyparts is refused with a message that says what differs, and, from the key
names and shapes, which architecture the snapshot is ("this snapshot is hrnet_w32 (bottom-up),
the config says resnet_50").
"""
from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from dlc_train.models.model import PoseModel


class SnapshotError(ValueError):
    """A snapshot file is unreadable or does not fit the model its config describes."""


def read_snapshot(path: str | Path) -> dict[str, Any]:
    """Reads a snapshot dict on the CPU with ``weights_only=True`` (no pickled code runs).

    A bare state_dict (all tensors) is wrapped as ``{"metadata": {}, "model": state_dict}``.
    """
    path = Path(path)
    if not path.is_file():
        raise SnapshotError(f"snapshot not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise SnapshotError(f"cannot read snapshot {path} (truncated or corrupt?): "
                            f"{type(err).__name__}: {_first_line(err)}") from None
    except Exception as err:  # weights_only unpickler refusals have their own types
        raise SnapshotError(f"cannot read snapshot {path} (not a weights-only PyTorch file?): "
                            f"{type(err).__name__}: {_first_line(err)}") from None
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        return data
    if isinstance(data, dict) and data and all(isinstance(v, torch.Tensor) for v in data.values()):
        return {"metadata": {}, "model": data}
    raise SnapshotError(f"{path} is not a DeepLabCut snapshot (no 'model' state_dict inside)")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ""


# -- what architecture is this state_dict? ----------------------------------------------------

_RESNET_DEPTHS = {(2, 2, 2, 2): 18, (3, 4, 6, 3): 50, (3, 4, 23, 3): 101, (3, 8, 36, 3): 152,
                  (1, 1, 1, 1): "tiny"}
_CSPNEXT_STEM = {16: "s", 24: "m", 40: "x"}  # stem width = 32 * widen_factor


def _shape(state: dict, key: str) -> tuple[int, ...] | None:
    value = state.get(key)
    return tuple(value.shape) if value is not None else None


def _resnet_name(state: dict, prefix: str) -> str | None:
    blocks = []
    for layer in range(1, 5):
        found = {int(m.group(1)) for k in state
                 if (m := re.match(rf"{re.escape(prefix)}layer{layer}\.(\d+)\.", k))}
        if not found:
            return None
        blocks.append(max(found) + 1)
    depth = _RESNET_DEPTHS.get(tuple(blocks))
    bottleneck = f"{prefix}layer1.0.conv3.weight" in state
    if depth == 50 and not bottleneck:
        depth = 34  # resnet34 has resnet50's block counts, with basic blocks
    if depth is None:
        return f"a ResNet with {blocks} blocks"
    batchnorm = f"{prefix}bn1.running_mean" in state
    if depth == 50:
        # DeepLabCut's resnet_50 is the GroupNorm variant: GN layers have no running stats.
        return "resnet_50" if not batchnorm else "resnet_50 with BatchNorm (timm resnet50)"
    return f"resnet_{depth}"


def _hrnet_width(state: dict, prefix: str) -> int | None:
    shape = _shape(state, f"{prefix}transition1.0.0.weight")
    return shape[0] if shape else None


def _cspnext_size(state: dict, prefix: str) -> str | None:
    shape = _shape(state, f"{prefix}stem.0.conv.weight")
    if not shape:
        return None
    return _CSPNEXT_STEM.get(shape[0], f"w{shape[0]}")


def _head_task(state: dict) -> str:
    head = "heads.bodypart."
    if any(k.startswith(head + "heatmap_head.final_conv") for k in state):
        return "top-down"
    if any(k.startswith(head + "gau.") for k in state):
        return "top-down"
    return "bottom-up"


def _num_bodyparts(state: dict) -> int | None:
    for key in ("heads.bodypart.heatmap_head.final_conv.weight",):
        if key in state:
            return int(state[key].shape[0])
    for key in ("heads.bodypart.heatmap_head.deconv_layers.0.weight",):
        if key in state and "heads.bodypart.convt1.weight" not in state:
            return int(state[key].shape[1])
    if "heads.bodypart.final_layer.weight" in state:  # RTMCC
        return int(state["heads.bodypart.final_layer.weight"].shape[0])
    if "heads.bodypart.convt1.weight" in state:  # DLCRNet / PAF head
        return int(state["heads.bodypart.convt1.weight"].shape[1])
    if "heads.bodypart.heatmap_head.head_heatmap.1.weight" in state:  # DEKR: + centre
        return int(state["heads.bodypart.heatmap_head.head_heatmap.1.weight"].shape[0]) - 1
    return None


def identify_architecture(state: dict[str, torch.Tensor]) -> str:
    """Guesses the net_type and task of a PoseModel state_dict from its key names and shapes.

    Returns e.g. "hrnet_w32 (bottom-up, 4 bodyparts)", "dekr_w18 (bottom-up, 4 bodyparts)" or
    "an unknown architecture".
    """
    head = "heads.bodypart."
    name: str | None = None
    task = _head_task(state)
    has = lambda fragment: any(k.startswith(fragment) for k in state)  # noqa: E731
    if has("backbone.coam_stages."):
        width = _hrnet_width(state, "backbone.model.")
        name, task = f"ctd_coam_w{width}", "conditional top-down"
    elif has("backbone.cond_preNet."):
        width = _hrnet_width(state, "backbone.backbone.model.")
        size = _cspnext_size(state, "backbone.backbone.")
        name = f"ctd_prenet_hrnet_w{width}" if width else f"ctd_prenet_rtmpose_{size}"
        task = "conditional top-down"
    elif has("backbone.conv_block1."):  # DLCRNet's multi-scale fusion
        # At output stride 32 its heads need a second deconv to reach stride 8.
        stride = 32 if has(head + "heatmap_head.deconv_layers.2") else 16
        name, task = f"dlcrnet_stride{stride}_ms5", "bottom-up"
    elif (width := _hrnet_width(state, "backbone.model.")) is not None:
        name = f"dekr_w{width}" if has(head + "offset_head.") else f"hrnet_w{width}"
    elif (size := _cspnext_size(state, "backbone.")) is not None:
        name = f"rtmpose_{size}" if has(head + "gau.") else f"cspnext_{size}"
    elif has("backbone.model.layer1."):
        name = _resnet_name(state, "backbone.model.")
    if name is None:
        return "an unknown architecture"
    details = [task]
    if has(head + "paf_head.") or has(head + "convt3."):
        details.append("with PAF")
    k = _num_bodyparts(state)
    if k is not None:
        details.append(f"{k} bodyparts")
    return f"{name} ({', '.join(details)})"


def _config_task(model_cfg: dict | None) -> str:
    heads = (model_cfg or {}).get("heads") or {}
    bodypart = heads.get("bodypart") or {}
    if (bodypart.get("heatmap_config") or {}).get("final_conv") or bodypart.get("type") == \
            "RTMCCHead":
        return "top-down"
    return "bottom-up"


def describe_mismatch(model: torch.nn.Module, state: dict[str, torch.Tensor],
                      net_type: str = "configured", model_cfg: dict | None = None) -> str:
    """One line: which architecture the snapshot is, then missing / unexpected / reshaped keys."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
                   for k, v in expected.items() if k in state and state[k].shape != v.shape]
    ours = identify_architecture(expected)
    theirs = identify_architecture(state)
    config_name = net_type if net_type != "configured" else ours.split(" (")[0]
    head = "the snapshot does not fit the config's model"
    if theirs.split(" (")[0] != ours.split(" (")[0] or missing or unexpected:
        head += f": this snapshot is {theirs}, the config says {config_name} " \
                f"({_config_task(model_cfg) if model_cfg else ours.split(' (')[1].rstrip(')')})"
    parts = [head]
    if missing or unexpected:
        parts.append(f"{len(missing)} missing keys, e.g. {missing[:3]}; "
                     f"{len(unexpected)} unexpected keys, e.g. {unexpected[:3]}")
    if wrong_shape:
        parts.append(f"{len(wrong_shape)} keys of another shape (another number of bodyparts "
                     f"or individuals?), e.g. {wrong_shape[:2]}")
    return "; ".join(parts)


def load_state_dict_strict(model: torch.nn.Module, state: dict[str, torch.Tensor],
                           net_type: str = "configured", model_cfg: dict | None = None) -> None:
    """``model.load_state_dict(state, strict=True)`` with a one-line, specific error."""
    expected = model.state_dict()
    if set(expected) != set(state) or any(state[k].shape != v.shape for k, v in expected.items()):
        raise SnapshotError(describe_mismatch(model, state, net_type, model_cfg))
    model.load_state_dict(state, strict=True)


def load_snapshot(path: str | Path, model: torch.nn.Module | None = None,
                  net_type: str = "configured") -> dict[str, Any]:
    """Reads a snapshot; with ``model``, also loads its weights into it with strict keys.

    Args:
        path: a ``snapshot-XXX.pt`` (ours or DeepLabCut's).
        model: a built PoseModel to load the weights into.
        net_type: the config's net_type, named in the error when the snapshot does not fit.

    Returns:
        the snapshot dict (``metadata``, ``model``, ...).
    """
    snapshot = read_snapshot(path)
    if model is not None:
        try:
            load_state_dict_strict(model, snapshot["model"], net_type,
                                   getattr(model, "cfg", None))
        except SnapshotError as err:
            raise SnapshotError(f"{path}: {err}") from None
    return snapshot


def build_model_from_config(config: str | Path | dict) -> PoseModel:
    """Builds the PoseModel a pytorch_config.yaml describes (one DeepLabCut wrote, or ours).

    Args:
        config: the config's path, or the config as a dict.
    """
    from dlc_train.config import ConfigError, available_net_types, read_config_as_dict

    cfg = read_config_as_dict(config) if isinstance(config, (str, Path)) else config
    where = f" in {config}" if isinstance(config, (str, Path)) else ""
    net_type = cfg.get("net_type")
    if net_type is not None and net_type not in available_net_types():
        raise ConfigError(f"net_type {net_type!r}{where} is not supported; supported: "
                          f"{', '.join(available_net_types())}")
    model_cfg = cfg.get("model")
    if not isinstance(model_cfg, dict) or not isinstance(model_cfg.get("backbone"), dict) \
            or not isinstance(model_cfg.get("heads"), dict) or not model_cfg["heads"]:
        raise ConfigError(f"the config{where} has no usable 'model' section (it needs a "
                          f"'backbone' mapping and at least one head)")
    try:
        return PoseModel.build(model_cfg)
    except KeyError as err:  # a component type the registries do not know (yet)
        message = err.args[0] if err.args else str(err)
        raise ConfigError(f"cannot build {net_type or 'the model'}{where}: {message}") from None


def build_model_from_snapshot(pytorch_config: dict, snapshot_path: str | Path) -> PoseModel:
    """Builds the configured PoseModel and loads the snapshot's weights into it (eval mode)."""
    model = build_model_from_config(pytorch_config)
    load_snapshot(snapshot_path, model, pytorch_config.get("net_type", "configured"))
    return model.eval()


def build_detector_from_snapshot(pytorch_config: dict, snapshot_path: str | Path | None = None,
                                 where: str = "the pytorch_config.yaml") -> torch.nn.Module:
    """The config's ``detector.model`` in eval mode, with the weights of ``snapshot_path`` (read
    with ``weights_only=True``, strict keys; None: its random initialization).

    Raises:
        ConfigError: no ``detector`` section with a ``model``, or one that cannot be built.
        SnapshotError: the snapshot does not fit the configured detector.
    """
    from dlc_train.config import ConfigError
    from dlc_train.models.detectors import DETECTORS  # registers the detectors

    section = pytorch_config.get("detector")
    if not isinstance(section, dict) or not isinstance(section.get("model"), dict):
        raise ConfigError(f"{where}: no 'detector' section with a 'model'; a top-down config "
                          "needs one (DeepLabCut writes it for top-down shuffles)")
    try:
        detector = DETECTORS.build(dict(section["model"]))
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"{where}: cannot build the detector: {err}") from None
    if snapshot_path is not None:
        snapshot = read_snapshot(snapshot_path)
        try:
            detector.load_state_dict(snapshot.get("model", snapshot), strict=True)
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0]
            raise SnapshotError(f"{snapshot_path}: does not fit the configured detector "
                                f"{section['model'].get('type')}: {first}") from None
    return detector.eval()
