"""The two test tiers for parametrised architectures: each family's smallest variant runs in the
fast tier (`pytest -m "not slow"`), its larger variants, full-size ones included, are `slow`.

A family is a net type without its size token: ``hrnet_w18/w32/w48`` -> ``hrnet``,
``cspnext_s/m/x`` -> ``cspnext``, ``resnet_tiny/18/.../152`` -> ``resnet``,
``dlcrnet_stride16_ms5/stride32_ms5`` -> ``dlcrnet_ms5``, ``top_down_resnet_*`` ->
``top_down_resnet``. Derived from the names, so a newly registered size joins its family.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable

import pytest

_SIZE = re.compile(r"_(tiny|[smx]|w\d+|\d+|stride\d+)(?=_ms\d+$|$)")
_NAMED_SIZES = {"tiny": 0, "s": 1, "m": 2, "x": 3}


def family_and_size(net_type: str) -> tuple[str, int]:
    """``"hrnet_w32"`` -> ``("hrnet", 32)``; a name without a size token is its own family."""
    match = _SIZE.search(net_type)
    if match is None:
        return net_type, 0
    token = match.group(1)
    size = _NAMED_SIZES[token] if token in _NAMED_SIZES else int(re.sub(r"\D", "", token))
    return net_type[:match.start()] + net_type[match.end():], size


def key_file_net_type(name: str) -> str:
    """The net type of a ../shared/dlc3 key or config file name, ``NET_TYPE_{BU,TD}_{sa,ma}``:
    ``"hrnet_w32_BU_sa"`` -> ``"hrnet_w32"``, ``"resnet_50_TD_ma"`` -> ``"top_down_resnet_50"``
    (RTMPose is top-down only: ``"rtmpose_m_TD_ma"`` -> ``"rtmpose_m"``). Other names are
    returned as they are."""
    parts = name.rsplit("_", 2)
    if len(parts) != 3 or parts[1] not in ("BU", "TD") or parts[2] not in ("sa", "ma"):
        return name
    net_type, task, _ = parts
    if task == "TD" and not net_type.startswith(("top_down_", "rtmpose")):
        return f"top_down_{net_type}"
    return net_type


def smallest_per_family(net_types: Iterable[str]) -> set[str]:
    """The smallest variant of each family among ``net_types``."""
    best: dict[str, tuple[int, str]] = {}
    for name in net_types:
        family, size = family_and_size(name)
        if family not in best or size < best[family][0]:
            best[family] = (size, name)
    return {name for _, name in best.values()}


def tiered(cases: Iterable, net_type: Callable = lambda case: case,
           ids: Callable | None = None) -> list:
    """``cases`` as pytest params, ``slow`` unless the case's net type is its family's smallest.

    Args:
        cases: parametrisation values (a tuple per case for several arguments).
        net_type: the net type of one case (default: the case itself).
        ids: the test id of one case (default: pytest's).
    """
    cases = list(cases)
    fast = smallest_per_family(net_type(case) for case in cases)
    return [pytest.param(*(case if isinstance(case, tuple) else (case,)),
                         id=ids(case) if ids else None,
                         marks=() if net_type(case) in fast else (pytest.mark.slow,))
            for case in cases]
