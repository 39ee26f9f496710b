"""Artifact formats, one module each (see ``base.py``). ``formats_for`` lists what an export
writes, in order: the fp32 ONNX graphs first (every bundle has them, and TensorRT builds from
them), then what the options ask for. A TensorRT fp16 build on TensorRT 11 (strongly typed
networks) builds from the fp16 ONNX graphs, so they are written (and checked) before it."""
from __future__ import annotations

from dlc_export.formats.base import ArtifactFormat
from dlc_export.formats.onnx import OnnxFormat
from dlc_export.formats.openvino import OpenVinoFormat
from dlc_export.formats.tensorrt import TensorRTFormat
from dlc_export.formats.torchscript import TorchFormat
from dlc_export.options import ExportOptions
from dlc_export.tensorrt_build import strongly_typed_only


def formats_for(options: ExportOptions) -> list[ArtifactFormat]:
    formats: list[ArtifactFormat] = [OnnxFormat("fp32")]
    formats += [OnnxFormat(p) for p in options.onnx_precisions]
    formats += [TorchFormat(p, options.torch_method) for p in options.torch_precisions]
    formats += [OpenVinoFormat(p) for p in options.openvino_precisions]
    if options.tensorrt_precision:
        if options.tensorrt_precision == "fp16" and "fp16" not in options.onnx_precisions \
                and strongly_typed_only():
            formats.append(OnnxFormat("fp16"))
        formats.append(TensorRTFormat(options.tensorrt_precision))
    return formats


__all__ = ["ArtifactFormat", "OnnxFormat", "OpenVinoFormat", "TensorRTFormat", "TorchFormat",
           "formats_for"]
