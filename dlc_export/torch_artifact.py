"""Saving and loading torch artifacts: a graph's module, traced so that it loads without this
package or ``dlc_train`` (runtime backend ``torch``, GPUs without TensorRT).

- ``torchscript`` (default): ``torch.jit.trace`` + ``torch.jit.save``; loads with plain
  ``torch.jit.load``. Tracing records ``tensor.shape`` reads as graph ops, so batch and frame size
  stay dynamic (the torch format checks a second shape after saving). torch 2.13 marks
  ``torch.jit.trace`` deprecated (a warning, still fully working).
- ``export``: ``torch.export`` with ``Dim`` dynamic batch/height/width + ``torch.export.save``
  (``.pt2``). It handles the decoders' data-dependent gathers (the *indices* are data-dependent,
  the *shapes* are not), but covers one-input graphs only (the crops of top-down graphs read the
  frame size with ``torch._shape_as_tensor``, which it cannot trace), its programs are tied more
  closely to the torch version that wrote them, and frames must be at least
  :data:`MIN_FRAME_SIZE` px.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from dlc_export.errors import ExportError
from dlc_io import atomic_path
from dlc_runtime.backends.torch_backend import EXPORT_SUFFIX

MIN_FRAME_SIZE = 32  # torch.export Dim lower bound for height/width
MAX_FRAME_SIZE = 8192


def torch_artifact_file(precision: str, method: str = "torchscript", graph: str = "pose") -> str:
    """File name inside the bundle: ``pose.fp16.torchscript.pt`` or ``pose.fp16.pt2``."""
    return f"{graph}.{precision}.torchscript.pt" if method == "torchscript" \
        else f"{graph}.{precision}{EXPORT_SUFFIX}"


def load_torch_artifact(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Loads an artifact written by :func:`save_torch_artifact` (as the runtime does)."""
    path = Path(path)
    if path.suffix == EXPORT_SUFFIX:
        return torch.export.load(str(path)).module().to(device)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # jit.load, torch 2.13
        return torch.jit.load(str(path), map_location=device)


def save_torch_artifact(module: nn.Module, args: tuple[torch.Tensor, ...], path: str | Path,
                        method: str = "torchscript", max_batch: int = 64,
                        what: str = "") -> Path:
    """Traces/exports ``module`` on ``args`` (frames first; further inputs share the batch)
    and writes ``path`` atomically; ``what`` names the graph in errors."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # Keep the suffix: torch.export.load wants ".pt2", and the loader picks by it.
        with atomic_path(path, keep_suffix=True) as tmp, torch.no_grad(), \
                warnings.catch_warnings():
            # jit.trace's deprecation notice and tracer notes (shape checks inside GroupNorm)
            # are noise for users; the second-shape parity check guards dynamic shapes.
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            if method == "torchscript":
                # check_trace re-runs and compares; the format's parity check is stricter.
                torch.jit.save(torch.jit.trace(module.eval(), args, check_trace=False), str(tmp))
            else:
                torch.export.save(_exported_program(module.eval(), args, max_batch), str(tmp))
    except ExportError:
        raise
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ExportError(f"torch {method} export of {what or 'the graph'} failed: "
                          f"{type(err).__name__}: {first}") from err
    return path


def _exported_program(module: nn.Module, args: tuple[torch.Tensor, ...], max_batch: int):
    from torch.export import Dim

    if len(args) != 1:
        raise ExportError("torch.export covers one-input (frames) graphs only; use "
                          "torch_method='torchscript'")
    (example,) = args
    if example.shape[0] == 1:
        # torch.export specialises a size-1 example dimension to the constant 1.
        example = example.repeat(2, 1, 1, 1)
    dims = {0: Dim("batch", min=1, max=max(max_batch, int(example.shape[0]))),
            1: Dim("height", min=MIN_FRAME_SIZE, max=MAX_FRAME_SIZE),
            2: Dim("width", min=MIN_FRAME_SIZE, max=MAX_FRAME_SIZE)}
    return torch.export.export(module, (example,), dynamic_shapes=(dims,))
