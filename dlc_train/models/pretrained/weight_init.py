"""``train_settings.weight_init``: starting a training run from another model's snapshots.

The config key and its fields are DeepLabCut 3's (``WeightInitialization``)::

    train_settings:
      weight_init:
        snapshot_path: .../superanimal_topviewmouse_hrnet_w32.pt   # pose model snapshot
        detector_snapshot_path: .../superanimal_topviewmouse_fasterrcnn_resnet50_fpn_v2.pt
        dataset: superanimal_topviewmouse
        with_decoder: false       # true: also the heads, mapped by conversion_array
        memory_replay: false
        conversion_array: null    # [7, 0, 1]: project bodypart i <- pretrained keypoint a[i]
        bodyparts: null

As in DeepLabCut, the pose snapshot always gives the backbone (and neck) weights, loaded with
strict keys; the heads keep their fresh initialization for the project's bodyparts (transfer
learning) unless ``with_decoder`` maps the pretrained heads' keypoints onto the project's
(fine-tuning). The detector snapshot is loaded whole. Here a snapshot path may also be a
SuperAnimal name (``superanimal_topviewmouse_hrnet_w32``), fetched through the Hub cache.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import nn

from dlc_train.models.pretrained.apply import load_strict
from dlc_train.models.pretrained.hub import PretrainedWeightsError
from dlc_train.models.pretrained.superanimal import (fetch_superanimal, parse_superanimal_name,
                                                     superanimal_names)


@dataclass
class WeightInit:
    """DeepLabCut's ``WeightInitialization`` fields (see the module docstring)."""

    snapshot_path: str | None = None
    detector_snapshot_path: str | None = None
    dataset: str | None = None
    with_decoder: bool = False
    memory_replay: bool = False
    conversion_array: list[int] | None = None
    bodyparts: list[str] | None = None

    @classmethod
    def from_dict(cls, data: dict) -> "WeightInit":
        """Validates a ``train_settings.weight_init`` mapping; bad input: one-line error."""
        if not isinstance(data, dict):
            raise PretrainedWeightsError(f"train_settings.weight_init must be a mapping, got "
                                         f"{type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise PretrainedWeightsError(f"train_settings.weight_init has unknown keys "
                                         f"{unknown}; known: {sorted(known)}")
        init = cls(**{k: (None if data[k] == "None" else data[k]) for k in data})
        if init.conversion_array is not None:
            init.conversion_array = [int(i) for i in init.conversion_array]
        if init.memory_replay and not init.with_decoder:
            raise PretrainedWeightsError("weight_init.memory_replay needs with_decoder: true")
        if init.with_decoder and init.conversion_array is None:
            raise PretrainedWeightsError("weight_init.with_decoder needs a conversion_array "
                                         "(project bodypart i <- pretrained keypoint a[i])")
        if init.bodyparts is not None and init.conversion_array is not None \
                and len(init.bodyparts) != len(init.conversion_array):
            raise PretrainedWeightsError(
                f"weight_init.bodyparts has {len(init.bodyparts)} entries and conversion_array "
                f"{len(init.conversion_array)}: they must pair up")
        return init

    def to_dict(self) -> dict:
        return asdict(self)


def superanimal_weight_init(name: str, detector: str | None = None, with_decoder: bool = False,
                            conversion_array: list[int] | None = None,
                            bodyparts: list[str] | None = None,
                            memory_replay: bool = False) -> dict:
    """The ``train_settings.weight_init`` mapping that starts from a SuperAnimal model, with
    its snapshots fetched (or found in the cache) and their local paths filled in.

    Args:
        name: the pose model, e.g. "superanimal_topviewmouse_hrnet_w32".
        detector: the dataset's detector to start the detector from, e.g.
            "fasterrcnn_resnet50_fpn_v2" (DeepLabCut's default), or None.
        with_decoder, conversion_array, bodyparts, memory_replay: see the module docstring.
    """
    dataset, _, kind = parse_superanimal_name(name)
    if kind != "pose_models":
        raise PretrainedWeightsError(f"{name} is a detector; name the pose model and pass "
                                     f"detector=")
    init = WeightInit(snapshot_path=str(fetch_superanimal(name)),
                      detector_snapshot_path=(str(fetch_superanimal(f"{dataset}_{detector}"))
                                              if detector else None),
                      dataset=dataset, with_decoder=with_decoder, memory_replay=memory_replay,
                      conversion_array=conversion_array, bodyparts=bodyparts)
    return WeightInit.from_dict(init.to_dict()).to_dict()


def resolve_snapshot(value: str | Path) -> Path:
    """A snapshot path, or a SuperAnimal name fetched through the cache."""
    path = Path(value).expanduser()
    if path.is_file():
        return path
    if str(value).startswith("superanimal_") and path.suffix != ".pt":
        return fetch_superanimal(str(value))
    raise PretrainedWeightsError(f"weight_init snapshot not found: {value} (a snapshot file, or "
                                 f"a SuperAnimal name such as {superanimal_names()[0]})")


def _model_state(value: str | Path) -> tuple[Path, dict[str, torch.Tensor]]:
    from dlc_train.models.loading import SnapshotError, read_snapshot

    path = resolve_snapshot(value)
    try:
        return path, read_snapshot(path)["model"]
    except SnapshotError as err:
        raise PretrainedWeightsError(str(err)) from None


def _sub_state(state: dict, prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def apply_pose_weight_init(model: nn.Module, weight_init: WeightInit | dict) -> None:
    """Loads a pose snapshot's backbone (+ neck, + converted heads) into a built PoseModel."""
    init = weight_init if isinstance(weight_init, WeightInit) else WeightInit.from_dict(weight_init)
    if not init.snapshot_path:
        return
    path, state = _model_state(init.snapshot_path)
    what = f"the backbone of {path}"
    load_strict(model.backbone, _sub_state(state, "backbone."), what, "the configured backbone")
    if model.neck is not None:
        load_strict(model.neck, _sub_state(state, "neck."), f"the neck of {path}",
                    "the configured neck")
    if not init.with_decoder:
        return
    index = torch.as_tensor(init.conversion_array, dtype=torch.long)
    for name, head in model.heads.items():
        head_state = _sub_state(state, f"heads.{name}.")
        if not init.memory_replay:
            head_state = convert_head_weights(head, head_state, index, name)
        load_strict(head, head_state, f"head {name!r} of {path}", f"head {name!r}")


def convert_head_weights(head: nn.Module, state: dict[str, torch.Tensor], index: torch.Tensor,
                         name: str = "bodypart") -> dict[str, torch.Tensor]:
    """Keeps, in a heatmap head's last layers, the output channels of the pretrained keypoints
    ``index`` (project bodypart i <- pretrained keypoint index[i]), as DeepLabCut converts
    SuperAnimal heads for fine-tuning. Locref channels follow (2 per keypoint)."""
    if type(head).__name__ != "HeatmapHead":
        raise PretrainedWeightsError(f"with_decoder converts HeatmapHead heads only; head "
                                     f"{name!r} is a {type(head).__name__}")
    state = dict(state)
    locref_index = torch.stack([2 * index, 2 * index + 1], dim=1).reshape(-1)
    for branch, idx in (("heatmap_head.", index), ("locref_head.", locref_index)):
        if f"{branch}final_conv.weight" in state:
            _check_index(state[f"{branch}final_conv.weight"].shape[0], idx, name)
            for key in ("weight", "bias"):
                state[f"{branch}final_conv.{key}"] = state[f"{branch}final_conv.{key}"][idx]
            continue
        last = -1
        while f"{branch}deconv_layers.{last + 1}.weight" in state:
            last += 1
        if last < 0:
            continue
        weight, bias = f"{branch}deconv_layers.{last}.weight", f"{branch}deconv_layers.{last}.bias"
        _check_index(state[weight].shape[1], idx, name)
        state[weight] = state[weight][:, idx]  # ConvTranspose2d: (in, out, kh, kw)
        state[bias] = state[bias][idx]
    return state


def _check_index(channels: int, idx: torch.Tensor, name: str) -> None:
    if idx.numel() and (int(idx.max()) >= channels or int(idx.min()) < 0):
        raise PretrainedWeightsError(f"weight_init.conversion_array picks channel "
                                     f"{int(idx.max())} of head {name!r}, which has {channels}")


def apply_detector_weight_init(detector: nn.Module, weight_init: WeightInit | dict) -> None:
    """Loads the weight_init's detector snapshot into a built detector (strict keys)."""
    init = weight_init if isinstance(weight_init, WeightInit) else WeightInit.from_dict(weight_init)
    if not init.detector_snapshot_path:
        return
    path, state = _model_state(init.detector_snapshot_path)
    load_strict(detector, state, f"detector snapshot {path}", "the configured detector")
