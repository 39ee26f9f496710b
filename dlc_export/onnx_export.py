"""Export a wrapper module to one self-contained ONNX file, checked and optionally simplified."""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import onnx
import torch

from dlc_export.errors import ExportError
from dlc_io import atomic_path

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17  # TensorRT 8.6+ and onnxruntime >= 1.14 both parse opset 17 fully


def export_onnx(module: torch.nn.Module, example: torch.Tensor, path: str | Path, *,
                input_name: str = "images", output_names: tuple[str, ...] = ("keypoints",),
                dynamic_size: bool = True, opset: int = DEFAULT_OPSET,
                simplify: bool = True, check_tensorrt: bool = True,
                extra_inputs: dict[str, torch.Tensor] | None = None,
                what: str = "ONNX export") -> Path:
    """Traces ``module`` on ``example`` (uint8 NHWC) and writes ``path`` (one file, no .data).

    ``extra_inputs`` are further named inputs after the frames (e.g. the top-down pose graph's
    ``boxes``), with a dynamic batch axis.

    With ``check_tensorrt`` the written graph must hold only operators TensorRT's ONNX parser
    imports (``dlc_export.tensorrt_ops``), so an export never yields a graph that cannot become
    an engine later.

    Uses the TorchScript-based exporter (``dynamo=False``): it handles our data-dependent
    gathers with dynamic batch and frame size in one graph, needs only ``onnx``, and never
    writes external-data files for models under 2 GB.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    axes = {0: "batch", 1: "height", 2: "width"} if dynamic_size else {0: "batch"}
    extra_inputs = dict(extra_inputs or {})
    dynamic_axes = {input_name: axes, **{name: {0: "batch"} for name in extra_inputs},
                    **{name: {0: "batch"} for name in output_names}}
    try:
        with atomic_path(path, keep_suffix=True) as tmp:
            with torch.no_grad(), warnings.catch_warnings():
                # The legacy exporter is chosen on purpose (see above); its deprecation and
                # tracer notes (shape checks inside GroupNorm) are noise for users.
                warnings.filterwarnings("ignore", category=DeprecationWarning)
                warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
                torch.onnx.export(module.eval(), (example, *extra_inputs.values()), tmp,
                                  dynamo=False, opset_version=opset,
                                  input_names=[input_name, *extra_inputs],
                                  output_names=list(output_names), dynamic_axes=dynamic_axes,
                                  do_constant_folding=True)
            graph = onnx.load(tmp)
            onnx.checker.check_model(graph, full_check=True)
            if simplify:
                graph = _simplify(graph)
            if check_tensorrt:
                # Imported here: tensorrt_ops subclasses this module's ExportError.
                from dlc_export.tensorrt_ops import check_tensorrt_operators
                check_tensorrt_operators(graph, where=path.name)
            onnx.save(graph, tmp)
    except Exception as err:
        if isinstance(err, ExportError):
            raise
        raise ExportError(f"{what} failed: {type(err).__name__}: {err}") from err
    return path


def _simplify(graph: onnx.ModelProto) -> onnx.ModelProto:
    """onnxslim folds constants and fuses patterns; optional, skipped when not installed."""
    try:
        import onnxslim
    except ImportError:
        log.info("onnxslim is not installed: the ONNX graph is saved unsimplified")
        return graph
    slim = onnxslim.slim(graph)
    onnx.checker.check_model(slim, full_check=True)
    return slim
