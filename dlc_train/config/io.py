"""Reading and writing YAML configs (safe loaders only, atomic writes)."""
from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

from dlc_io import atomic_write_text


class _SafeLoader(yaml.SafeLoader):
    """SafeLoader that reads YAML 1.2 floats like ``1e-05`` (DeepLabCut writes them) as floats.

    PyYAML follows YAML 1.1, where an exponent needs a dot (``1.0e-05``); without this, a learning
    rate of ``1e-05`` in a DeepLabCut config would load as the string "1e-05".
    """


_SafeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def safe_load_yaml(stream):
    """yaml.safe_load with YAML 1.2 floats."""
    return yaml.load(stream, Loader=_SafeLoader)  # noqa: S506 - _SafeLoader is a SafeLoader


class ConfigError(ValueError):
    """A config file is missing, unreadable or malformed."""


def read_config_as_dict(path: str | Path) -> dict:
    """Reads a YAML config into a dict, with a one-line error for a bad file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            cfg = safe_load_yaml(f)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(err, "problem", None) or type(err).__name__
        raise ConfigError(f"malformed YAML in {path}{where}: {problem}") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path} does not hold a YAML mapping (got {type(cfg).__name__})")
    return cfg


_POSE_CONFIG_HEADER = "# Config schema version. Do not edit manually.\n"


def write_config(path: str | Path, cfg: dict, header: str | None = _POSE_CONFIG_HEADER) -> Path:
    """Writes ``cfg`` as YAML, keeping key order, through a temp file + rename (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(cfg, sort_keys=False, default_flow_style=False, allow_unicode=True)
    return atomic_write_text(path, (header or "") + text)


def update_config(cfg: dict, updates: dict[str, Any]) -> dict:
    """Returns a copy of ``cfg`` with ``updates`` applied.

    Keys may be dotted paths (``{"train_settings.epochs": 5}``). Where both the old and the new
    value are mappings they merge recursively; any other value replaces the old one. Any key is
    created, known or not: callers taking keys from users check them first with
    ``dlc_train.config.overrides.check_override_keys`` (train_network does).
    """
    cfg = copy.deepcopy(cfg)
    for dotted, value in (updates or {}).items():
        node = cfg
        *parents, leaf = dotted.split(".")
        for key in parents:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        if isinstance(value, dict) and isinstance(node.get(leaf), dict):
            node[leaf] = update_config(node[leaf], value)
        else:
            node[leaf] = copy.deepcopy(value)
    return cfg
