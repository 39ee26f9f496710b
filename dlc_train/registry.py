"""Component registries: a name -> class map per component kind, built from config dicts.

A config dict names its class under ``type``; every other key is a constructor argument. This is
the layout DeepLabCut 3's ``pytorch_config.yaml`` uses, so its configs build here unchanged.
"""
from __future__ import annotations

import copy
from typing import Any, Callable


class Registry:
    """Maps component names to classes (or factories).

    Args:
        name: the component kind, used in error messages ("backbone", "head", ...).
        build_func: optional builder ``f(cfg, registry, **default_args)`` for kinds whose configs
            hold nested components (heads build their predictor, target generator, criterion).
    """

    def __init__(self, name: str, build_func: Callable | None = None):
        self.name = name
        self._modules: dict[str, Callable] = {}
        self._build_func = build_func

    def register_module(self, module: Callable | None = None, *, name: str | None = None,
                        force: bool = False):
        """Registers a class; usable as ``@REG.register_module`` or ``@REG.register_module()``."""

        def _register(obj: Callable) -> Callable:
            key = name or obj.__name__
            if key in self._modules and not force and self._modules[key] is not obj:
                raise KeyError(f"{key!r} is already registered as a {self.name}")
            self._modules[key] = obj
            return obj

        return _register(module) if module is not None else _register

    def get(self, key: str) -> Callable:
        try:
            return self._modules[key]
        except KeyError:
            known = ", ".join(sorted(self._modules)) or "none"
            raise KeyError(f"unknown {self.name} type {key!r} (registered: {known})") from None

    def build(self, cfg: dict[str, Any], **default_args):
        """Builds the component that ``cfg['type']`` names, with the other keys as arguments."""
        if not isinstance(cfg, dict) or "type" not in cfg:
            raise ValueError(f"a {self.name} config must be a mapping with a 'type' key, got {cfg!r}")
        if self._build_func is not None:
            return self._build_func(copy.deepcopy(cfg), self, **default_args)
        return build_from_cfg(cfg, self, **default_args)

    def __contains__(self, key: str) -> bool:
        return key in self._modules

    def keys(self) -> list[str]:
        return sorted(self._modules)

    def __repr__(self) -> str:
        return f"Registry({self.name!r}, {self.keys()})"


def build_from_cfg(cfg: dict[str, Any], registry: Registry, **default_args):
    """Instantiates ``registry.get(cfg['type'])`` with the remaining keys (defaults underneath)."""
    args = copy.deepcopy(cfg)
    cls = registry.get(args.pop("type"))
    for key, value in default_args.items():
        args.setdefault(key, value)
    try:
        return cls(**args)
    except TypeError as err:
        raise TypeError(f"cannot build {registry.name} {cfg['type']!r}: {err}") from err
