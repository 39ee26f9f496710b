"""Which pytorch_config.yaml keys an override may set (``dlc train --set``, train_network).

update_config creates any key it is given, so a typo (``runner.eval_intervl``) used to be
written into the config and then ignored by the trainer. check_override_keys refuses such keys
before anything is written. A key is known when
- its dotted path exists in the config being overridden, or
- it is in OPTIONAL_KEYS: a key the trainer reads with a default, which DeepLabCut's configs may
  omit (collected from the ``.get(...)`` calls of dlc_train/runners, dlc_train/apis and
  dlc_train/data/transforms.py; tests/test_cli_train.py checks that none is missing), or
- it lies under a FREE_FORM mapping, whose keys are handed on as keyword arguments (optimizer
  and scheduler params) and so are not ours to know.
"""
from __future__ import annotations

import difflib
from typing import Any, Iterator

from dlc_train.config.defaults import TRANSFORM_KEYS, TRANSFORM_OPTIONS
from dlc_train.config.io import ConfigError

# The keys build_transforms reads in a ``data.train`` / ``data.inference`` section, with the
# options of those that are mappings (both tables live in config/defaults.py, so a transform
# added there is settable here). The unsupported augmentations are read too (to refuse them
# when set), so setting them back to null must stay possible.
_AUGMENTATION_KEYS = (*TRANSFORM_KEYS, *(f"{key}.{option}" for key, options in
                                         TRANSFORM_OPTIONS.items() for option in options))

OPTIONAL_KEYS: frozenset[str] = frozenset({
    # dlc_train/apis/train.py
    "data", "data.train", "data.inference", "resume_training_from",
    "train_settings", "train_settings.batch_size", "train_settings.epochs",
    "train_settings.seed", "train_settings.dataloader_workers",
    "train_settings.dataloader_pin_memory", "train_settings.display_iters",
    "train_settings.weight_init",
    # dlc_train/runners/train.py (PoseTrainingRunner.from_config) and runners/schedulers.py
    "device", "runner", "runner.device", "runner.key_metric", "runner.key_metric_asc",
    "runner.eval_interval", "runner.grad_clip_norm", "runner.snapshot_prefix",
    "runner.amp", "runner.channels_last",  # ours (runners/precision.py); DeepLabCut has none
    "runner.snapshots", "runner.snapshots.max_snapshots", "runner.snapshots.save_epochs",
    "runner.snapshots.save_optimizer_state",
    "runner.optimizer", "runner.optimizer.type", "runner.optimizer.params",
    "runner.scheduler", "runner.scheduler.type", "runner.scheduler.params",
    "inference", "inference.eval", "inference.eval.pcutoff",
    # dlc_train/apis/train_loader.py, data/base.py, data/top_down.py (top-down training)
    "method", "data.bbox_margin", "data.gen_sampling", "detector", "detector.model",
    "detector.model.pretrained",
    "detector.train_settings.epochs", "detector.train_settings.batch_size",
    *(f"data.gen_sampling.{key}" for key in ("keypoint_sigmas", "keypoints_symmetry",
                                             "jitter_prob", "swap_prob", "inv_prob",
                                             "miss_prob")),
    *(f"data.{section}.top_down_crop.{key}" for section in ("train", "inference")
      for key in ("width", "height", "margin", "crop_with_context")),
    # dlc_train/data/transforms.py (build_transforms)
    *(f"data.{section}.{key}" for section in ("train", "inference")
      for key in _AUGMENTATION_KEYS),
})

# Mappings passed on as keyword arguments (torch.optim / torch.optim.lr_scheduler classes).
FREE_FORM: tuple[str, ...] = (
    "runner.optimizer.params", "runner.scheduler.params", "train_settings.weight_init",
    "detector.runner.optimizer.params", "detector.runner.scheduler.params",
)


class UnknownConfigKeyError(ConfigError):
    """An override names a key that the config does not have and the trainer does not read.

    Attributes:
        key: the dotted key as given.
        suggestion: the closest known key, or None.
    """

    def __init__(self, key: str, suggestion: str | None):
        self.key, self.suggestion = key, suggestion
        hint = f"; did you mean {suggestion}?" if suggestion else ""
        super().__init__(f"{key}: no such key in pytorch_config.yaml{hint}")


def check_override_keys(cfg: dict, overrides: dict[str, Any] | None) -> None:
    """Raises UnknownConfigKeyError for the first override key that is not known (see above).

    Args:
        cfg: the pytorch_config dict the overrides will be applied to (update_config).
        overrides: dotted keys (``"runner.eval_interval"``) or nested mappings, as update_config
            takes them.
    """
    for dotted, value in (overrides or {}).items():
        # "a.b": {"c": 1} is the same override as "a": {"b": {"c": 1}}.
        *parents, leaf = str(dotted).split(".")
        nested: Any = {leaf: value}
        for key in reversed(parents):
            nested = {key: nested}
        bad = _first_unknown(cfg, "", nested)
        if bad is not None:
            raise UnknownConfigKeyError(bad, _closest(bad, cfg))


def _first_unknown(node: Any, prefix: str, value: dict) -> str | None:
    for key, sub_value in value.items():
        path = f"{prefix}{key}"
        if _is_free_form(path):
            continue
        if "." in str(key):
            # update_config splits only the top-level keys; deeper down it would be a literal key.
            raise ConfigError(f"override key {key!r} under {prefix.rstrip('.')}: dotted keys "
                              "work at the top level only; nest mappings below it")
        exists = isinstance(node, dict) and key in node
        if not exists and path not in OPTIONAL_KEYS:
            return path
        if not isinstance(sub_value, dict):
            continue
        sub_node = node.get(key) if exists else None
        # A mapping merges into a mapping key by key, so each of its keys must be known. One
        # that replaces a null (``affine: null`` -> {p: 0.5, ...}) is checked where we know its
        # keys, and taken whole elsewhere (a model component's arguments, say).
        if isinstance(sub_node, dict) or _has_known_children(path):
            bad = _first_unknown(sub_node if isinstance(sub_node, dict) else {}, f"{path}.",
                                 sub_value)
            if bad is not None:
                return bad
    return None


def _is_free_form(path: str) -> bool:
    return any(path.startswith(prefix + ".") for prefix in FREE_FORM)


def _has_known_children(path: str) -> bool:
    return any(key.startswith(path + ".") for key in OPTIONAL_KEYS)


def _paths(node: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{prefix}{key}"
            yield path
            yield from _paths(value, f"{path}.")


def _closest(key: str, cfg: dict) -> str | None:
    known = sorted(set(_paths(cfg)) | OPTIONAL_KEYS)
    matches = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return matches[0] if matches else None
