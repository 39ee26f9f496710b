"""Optimization profiles and engine fingerprints for TensorRT builds: pure shape logic.

Nothing here imports TensorRT, so profiles are validated (and derived from a bundle's manifest)
on any machine; ``dlc_export.tensorrt_build`` uses them to build engines. Only
:func:`engine_fingerprint` touches the machine, through the runtime's query (which itself needs
TensorRT and a GPU), so that builder and runtime record the same fields.

A profile is ``{"min", "opt", "max"}``: (B, H, W, 3) uint8 frame shapes, plus
``"extra_inputs": {name: {"min", "opt", "max"}}`` for a graph's further inputs (top-down
``boxes``)::

    profiles = default_profiles(manifest, frame_size=(480, 640), graph="pose")
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dlc_export.errors import ExportError
from dlc_runtime.bundle import Manifest

#: {"min", "opt", "max"}: (B, H, W, 3) frame shapes; optionally "extra_inputs": {name: {...}}.
Profile = dict[str, Any]


class ProfileError(ExportError):
    """Optimization profiles that TensorRT cannot use (missing, out of order, wrong rank...).

    ``dlc_export.tensorrt_build`` raises it as its ``TensorRTBuildError``, with the same message.
    """


def _checked_shapes(profile: Any, where: str, rank: int | None) -> dict[str, tuple[int, ...]]:
    try:
        shapes = {k: tuple(int(v) for v in profile[k]) for k in ("min", "opt", "max")}
    except (KeyError, TypeError, ValueError):
        raise ProfileError(f"{where}: needs 'min', 'opt' and 'max' shapes of integers, "
                                 f"got {profile!r}") from None
    for key, shape in shapes.items():
        if (rank is not None and len(shape) != rank) or not shape or min(shape) < 1:
            raise ProfileError(f"{where}: {key} {shape} must have "
                                     f"{rank or 'some'} positive sizes")
    lo, opt, hi = shapes["min"], shapes["opt"], shapes["max"]
    if len({len(lo), len(opt), len(hi)}) != 1 or \
            not all(a <= b <= c for a, b, c in zip(lo, opt, hi)):
        raise ProfileError(f"{where}: need min <= opt <= max on every axis, got "
                                 f"min {lo}, opt {opt}, max {hi}")
    return shapes


def normalize_profiles(profiles: Sequence[dict[str, Any]]) -> list[Profile]:
    """Validates optimization profiles for the (B, H, W, 3) uint8 input.

    Each profile is ``{"min": (B, H, W, 3), "opt": ..., "max": ...}`` with min <= opt <= max on
    every axis; ``opt`` is what TensorRT tunes for (the usual batch and the video's frame size).
    A graph with further inputs (the top-down pose graph's ``boxes`` (B, M, 4)) gives their
    shapes in ``"extra_inputs": {name: {"min", "opt", "max"}}``, with the frames' batch sizes.
    """
    if not profiles:
        raise ProfileError("at least one optimization profile is needed "
                                 "({'min': (1, H, W, 3), 'opt': ..., 'max': ...})")
    out = []
    for i, profile in enumerate(profiles):
        shapes: dict[str, Any] = _checked_shapes(profile, f"profile {i}", 4)
        for key, shape in shapes.items():
            if shape[3] != 3:
                raise ProfileError(f"profile {i}: {key} {shape} must be (batch, height, "
                                         "width, 3) with positive sizes")
        extra = (profile.get("extra_inputs") or {}) if isinstance(profile, dict) else {}
        if extra:
            shapes["extra_inputs"] = {}
            for name, sub in extra.items():
                checked = _checked_shapes(sub, f"profile {i} input '{name}'", None)
                if any(checked[k][0] != shapes[k][0] for k in ("min", "opt", "max")):
                    raise ProfileError(f"profile {i} input '{name}': its batch sizes "
                                             "must be the frames' (min, opt, max)")
                shapes["extra_inputs"][name] = checked
        out.append(shapes)
    return out


def extra_input_profile(inputs: Sequence[Any], profile: dict[str, Any]) -> dict[str, Any]:
    """Shapes for a graph's inputs after the frames, from their manifest specs.

    Args:
        inputs: the manifest graph's further inputs (:class:`TensorSpec`, e.g. ``boxes``
            ``["batch", M, 4]``): their batch follows the frames', every other axis is fixed.
        profile: the frames' ``{"min", "opt", "max"}``.
    """
    extra = {}
    for spec in inputs:
        rest = list(spec.shape[1:])
        if any(not isinstance(v, int) for v in rest):
            raise ProfileError(f"input '{spec.name}' has symbolic axes {spec.shape}: only "
                                     "its batch may vary in a TensorRT profile; re-export")
        extra[spec.name] = {k: (int(profile[k][0]), *rest) for k in ("min", "opt", "max")}
    return extra


def default_profiles(manifest: Manifest, frame_size: tuple[int, int] | None = None,
                     graph: str = "pose") -> list[Profile]:
    """One profile from the manifest's batch range and the frame size.

    Args:
        manifest: the bundle's manifest (``input.batch`` and, when fixed, height/width).
        frame_size: (height, width) of the videos to analyse; needed when the graph takes any
            frame size, since an engine is tuned for (and limited to) the sizes it was built for.
        graph: the manifest graph the profile is for; its inputs after the frames (top-down
            ``boxes``) get shapes with the same batch range (:func:`extra_input_profile`).
    """
    spec = manifest.input
    if spec.height is not None and spec.width is not None:
        if frame_size is not None and tuple(frame_size) != (spec.height, spec.width):
            raise ProfileError(f"frame size {frame_size} differs from the graph's fixed "
                                     f"input {spec.height}x{spec.width}")
        height, width = spec.height, spec.width
    elif frame_size is None:
        raise ProfileError("the graph takes any frame size: pass the videos' frame size "
                                 "(frame_size=(height, width) / --frame-size HxW) or profiles")
    else:
        height, width = (int(v) for v in frame_size)
    b = spec.batch
    profile: dict[str, Any] = {"min": (b.min, height, width, 3),
                               "opt": (b.opt, height, width, 3),
                               "max": (b.max, height, width, 3)}
    further = manifest.graphs[graph].inputs[1:] if graph in manifest.graphs else []
    if further:
        profile["extra_inputs"] = extra_input_profile(further, profile)
    return normalize_profiles([profile])


# ----------------------------------------------------------------------------------------------
# Fingerprint
# ----------------------------------------------------------------------------------------------


def engine_fingerprint(precision: str, profiles: Sequence[Profile], device_index: int = 0,
                       input_name: str = "images") -> dict[str, Any]:
    """What the runtime compares before loading an engine, plus how it was built.

    Returns:
        ``{tensorrt_version, gpu_name, compute_capability, cuda_driver, precision, profiles}``;
        the runtime owns the machine query, so builder and checker cannot disagree on format.

    Raises:
        BackendError: TensorRT, CUDA or the device is missing (the machine query needs them).
    """
    from dlc_runtime.backends.tensorrt_backend import machine_fingerprint

    machine = machine_fingerprint(device_index)

    def record(p: Profile) -> dict[str, Any]:
        out: dict[str, Any] = {"input": input_name,
                               **{k: list(p[k]) for k in ("min", "opt", "max")}}
        if p.get("extra_inputs"):
            out["extra_inputs"] = {name: {k: list(v) for k, v in sub.items()}
                                   for name, sub in p["extra_inputs"].items()}
        return out

    return {**machine, "precision": precision, "profiles": [record(p) for p in profiles]}


__all__ = ["Profile", "ProfileError", "default_profiles", "engine_fingerprint",
           "extra_input_profile", "normalize_profiles"]
