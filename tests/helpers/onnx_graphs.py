"""Writing one task graph to ONNX in a test, as the ONNX format does for a whole bundle."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dlc_export.onnx_export import export_onnx


def export_graph_onnx(module: torch.nn.Module, path: Path, frames: np.ndarray,
                      output_names: tuple[str, ...] = ("keypoints",),
                      **further: np.ndarray) -> Path:
    """``module`` traced on ``frames`` and the named ``further`` inputs (float32), with
    dynamic batch and frame size, to ``path`` (checked for TensorRT's operators)."""
    return export_onnx(module, torch.from_numpy(np.ascontiguousarray(frames)), path,
                       output_names=output_names, simplify=False,
                       extra_inputs={name: torch.from_numpy(np.ascontiguousarray(v, np.float32))
                                     for name, v in further.items()})


def export_detector_onnx(graph: torch.nn.Module, frames: np.ndarray, path: Path) -> Path:
    return export_graph_onnx(graph, path, frames, ("boxes", "scores"))
