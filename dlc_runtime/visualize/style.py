"""How results are drawn: colours per bodypart or individual, the skeleton's point pairs, and
the settings taken from the project (``config.yaml``), the bundle or the caller.

Colours follow DeepLabCut: ``n`` colours sampled evenly from a matplotlib colormap
(``cmap(linspace(0, 1, n))``). matplotlib is optional for the runtime: without it the
colormap of the same name in OpenCV (rainbow, jet, viridis, hsv, ...) is used.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from dlc_runtime.visualize.poses import PoseTable, VisualizeError

#: DeepLabCut's defaults (its project template and ``create_labeled_video``).
DEFAULT_PCUTOFF = 0.6
DEFAULT_DOTSIZE = 8
DEFAULT_COLORMAP = "rainbow"
DEFAULT_SKELETON_COLOR = "black"
DEFAULT_ALPHA = 0.7

_BASIC_COLORS = {  # used when matplotlib is not installed
    "black": (0, 0, 0), "white": (255, 255, 255), "red": (255, 0, 0), "green": (0, 128, 0),
    "lime": (0, 255, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0), "cyan": (0, 255, 255),
    "magenta": (255, 0, 255), "gray": (128, 128, 128), "grey": (128, 128, 128),
    "orange": (255, 165, 0), "k": (0, 0, 0), "w": (255, 255, 255), "r": (255, 0, 0),
    "g": (0, 128, 0), "b": (0, 0, 255), "y": (191, 191, 0), "c": (0, 191, 191),
    "m": (191, 0, 191),
}


def colormap_colors(name: str, n: int) -> np.ndarray:
    """(n, 3) uint8 RGB colours sampled evenly from colormap ``name``."""
    n = max(int(n), 1)
    try:
        import matplotlib
    except ImportError:
        return _opencv_colormap(name, n)
    try:
        cmap = matplotlib.colormaps[name]
    except KeyError:
        raise VisualizeError(f"unknown colormap {name!r}: use a matplotlib colormap name "
                             "such as rainbow, viridis, jet or tab10") from None
    return (np.asarray(cmap(np.linspace(0, 1, n)))[:, :3] * 255).astype(np.uint8)


def _opencv_colormap(name: str, n: int) -> np.ndarray:
    import cv2

    code = getattr(cv2, f"COLORMAP_{name.upper()}", None)
    if code is None:
        raise VisualizeError(f"colormap {name!r} needs matplotlib (pip install matplotlib); "
                             "without it use an OpenCV colormap such as rainbow, jet, viridis "
                             "or hsv")
    ramp = np.round(np.linspace(0, 255, n)).astype(np.uint8).reshape(n, 1)
    bgr = cv2.applyColorMap(ramp, code).reshape(n, 3)
    return np.ascontiguousarray(bgr[:, ::-1])


def parse_color(color: str | Sequence[float]) -> tuple[int, int, int]:
    """A colour name, ``#rrggbb`` or an (r, g, b) triple of 0-255 values -> RGB."""
    if not isinstance(color, str):
        values = list(color)
        if len(values) != 3 or not all(isinstance(v, (int, float)) and 0 <= v <= 255
                                       for v in values):
            raise VisualizeError(f"colour {color!r}: expected three values r, g, b in 0-255")
        return tuple(int(round(v)) for v in values)  # type: ignore[return-value]
    text = color.strip().lower()
    if text.startswith("#") and len(text) == 7:
        try:
            return tuple(int(text[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]
        except ValueError:
            pass
    try:
        from matplotlib.colors import to_rgb
    except ImportError:
        if text in _BASIC_COLORS:
            return _BASIC_COLORS[text]
    else:
        try:
            return tuple(int(round(v * 255)) for v in to_rgb(text))  # type: ignore[return-value]
        except ValueError:
            pass
    raise VisualizeError(f"unknown colour {color!r}: use a name such as black or white, or "
                         "#rrggbb")


def skeleton_pairs(table: PoseTable, edges: Sequence[Sequence[str]]) -> list[tuple[int, int]]:
    """Point index pairs of the skeleton ``edges`` (bodypart names), within each individual
    (as DeepLabCut draws it); edges naming a bodypart the table lacks are left out."""
    pairs = []
    for individual in table.unique_individuals:
        where = {bp: i for i, (ind, bp) in enumerate(zip(table.individuals, table.bodyparts))
                 if ind == individual}
        pairs += [(where[a], where[b]) for a, b in edges if a in where and b in where]
    return pairs


@dataclass
class DrawSettings:
    """What the drawing uses, after the caller, the project and the bundle had their say.

    ``sources`` says where each value came from (for the log and the report).
    """

    pcutoff: float = DEFAULT_PCUTOFF
    dotsize: int = DEFAULT_DOTSIZE
    colormap: str = DEFAULT_COLORMAP
    alpha: float = DEFAULT_ALPHA
    skeleton: list[tuple[str, str]] = field(default_factory=list)
    skeleton_color: str | Sequence[float] = DEFAULT_SKELETON_COLOR
    sources: dict[str, str] = field(default_factory=dict)


def resolve_settings(*, project: dict[str, Any] | None = None,
                     manifest_skeleton: list[tuple[str, str]] | None = None,
                     **given: Any) -> DrawSettings:
    """Each setting from the caller (``given``, None = not given), else the project's
    ``config.yaml`` (pcutoff, dotsize, colormap, alphavalue, skeleton, skeleton_color), else
    for the skeleton the bundle's PAF graph, else DeepLabCut's default."""
    settings = DrawSettings()
    project_keys = {"pcutoff": "pcutoff", "dotsize": "dotsize", "colormap": "colormap",
                    "alpha": "alphavalue", "skeleton": "skeleton",
                    "skeleton_color": "skeleton_color"}
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, key in project_keys.items():
        if given.get(name) is not None:
            values[name], sources[name] = given[name], "given"
        elif project and project.get(key) not in (None, []):
            values[name], sources[name] = project[key], "project config.yaml"
        elif name == "skeleton" and manifest_skeleton:
            values[name], sources[name] = manifest_skeleton, "bundle PAF graph"
        else:
            sources[name] = "default"
    settings = replace(settings, **values, sources=sources)
    try:
        settings.pcutoff = float(settings.pcutoff)
        settings.dotsize = int(settings.dotsize)
        settings.alpha = float(settings.alpha)
        settings.skeleton = [(str(a), str(b)) for a, b in settings.skeleton]
    except (TypeError, ValueError) as err:
        raise VisualizeError(f"invalid drawing setting ({err}); check pcutoff, dotsize, "
                             "alphavalue and skeleton (a list of [bodypart, bodypart])") from None
    if settings.dotsize < 1:
        raise VisualizeError(f"dotsize must be >= 1, got {settings.dotsize}")
    return settings


def read_project_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A DeepLabCut project's ``config.yaml`` as a dict (one-line error when unreadable)."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        reason = getattr(err, "strerror", None) or str(err).strip().splitlines()[0]
        raise VisualizeError(f"cannot read the project config {path}: {reason}") from None
    if not isinstance(data, dict):
        raise VisualizeError(f"{path} is not a DeepLabCut project config (not a mapping)")
    return data


__all__ = ["DEFAULT_PCUTOFF", "DEFAULT_DOTSIZE", "DEFAULT_COLORMAP", "DEFAULT_SKELETON_COLOR",
           "colormap_colors", "parse_color", "skeleton_pairs", "DrawSettings",
           "resolve_settings", "read_project_config"]
