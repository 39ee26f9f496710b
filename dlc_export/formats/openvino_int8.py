"""int8 OpenVINO IR of one ONNX graph: NNCF post-training quantization calibrated on frames of
the user's videos (the graph's further inputs, boxes or conditions, from the task, as for
TensorRT int8), saved as ``<name>.xml`` + ``<name>.bin``.

Only the network is quantized (:data:`NOT_THE_NETWORK`): pre-processing, crops and the
decoding inside the graph stay fp32. The manifest's sha256 covers the xml only, so the xml
records the sha256 of its weights (rt_info ``dlc_deploy_weights_sha256``), which the runtime
checks before loading them.
NNCF is imported here only (``pip install 'dlc-deploy[openvino]'``). :func:`check_tools` refuses
what this machine cannot make before an export starts.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from dlc_export.errors import ExportError
from dlc_runtime.backends.openvino_backend import (WEIGHTS_SHA256_KEY, cpu_has_bf16,
                                                   import_openvino)
from dlc_runtime.bundle import sha256_file

log = logging.getLogger(__name__)

#: Graph node names NNCF leaves in fp32: everything outside the PoseModel (the ONNX export names
#: its nodes ``/model/...``, ``/pose/model/...`` for the crop graphs: ``dlc_export.half`` finds
#: the network the same way) and its predictors (the decoding).
NOT_THE_NETWORK = (r"^(?!.*/model/).*$", r".*predictor.*")

NNCF_MISSING = ("NNCF is not installed: pip install 'dlc-deploy[openvino]' (OpenVINO int8 "
                "export quantizes with NNCF)")


def import_nncf() -> Any:
    try:
        import nncf
    except ImportError:
        raise ExportError(NNCF_MISSING) from None
    return nncf


def calibration_items(input_names: list[str], frames: np.ndarray,
                      further: dict[str, np.ndarray] | None = None) -> list[dict[str, np.ndarray]]:
    """One feed per calibration frame: {input name: (1, ...) array}, frames first."""
    further = further or {}
    missing = [name for name in input_names[1:] if name not in further]
    if missing:
        raise ExportError(f"no calibration data for the graph's inputs {missing}")
    return [{input_names[0]: frames[i:i + 1],
             **{name: np.ascontiguousarray(further[name][i:i + 1], dtype=np.float32)
                for name in input_names[1:]}}
            for i in range(len(frames))]


def quantize_to_ir(onnx_path: Path, xml_path: Path, items: list[dict[str, np.ndarray]],
                   what: str = "the pose graph") -> Path:
    """Quantizes ``onnx_path`` on ``items`` (feeds by input name) and writes the int8 IR.

    Weights keep fp32 where they are not quantized (no fp16 compression: the runtime's fp32
    layers must compute what the checked model computed).
    """
    ov = import_openvino_for_export()
    nncf = import_nncf()
    model = ov.Core().read_model(str(onnx_path))
    # Only the network is quantized: NNCF would otherwise put int8 on the decoding's
    # arithmetic (keypoint coordinates in 256 steps) and on the crop and letterbox maths.
    scope = nncf.IgnoredScope(patterns=list(NOT_THE_NETWORK), validate=False)
    try:
        quantized = nncf.quantize(model, nncf.Dataset(items), subset_size=len(items),
                                  ignored_scope=scope)
    except Exception as exc:  # NNCF raises many types; one line says which graph failed
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"int8 quantization of {what} failed: {first}") from exc
    if not any(op.get_type_name() == "FakeQuantize" for op in quantized.get_ops()):
        raise ExportError(f"int8 quantization of {what} quantized no layer (no node of the "
                          "network found under '/model/'); the graph cannot run in int8")
    ov.save_model(quantized, str(xml_path), compress_to_fp16=False)
    weights = xml_path.with_suffix(".bin")
    digest = sha256_file(weights)
    quantized.set_rt_info(digest, WEIGHTS_SHA256_KEY)
    ov.save_model(quantized, str(xml_path), compress_to_fp16=False)
    if sha256_file(weights) != digest:  # the second save must not change the weights
        raise ExportError(f"{weights} changed when its xml was rewritten; re-run the export")
    log.info("%s: int8 IR %s calibrated on %d frames", what, xml_path.name, len(items))
    return xml_path


def import_openvino_for_export() -> Any:
    """openvino, or an ExportError naming the extra (the runtime's message)."""
    from dlc_runtime.errors import BackendError

    try:
        return import_openvino()
    except BackendError as err:
        raise ExportError(str(err)) from None


def check_tools(precisions: tuple[str, ...]) -> None:
    """Refuses, in one line, OpenVINO variants this machine cannot make or check: OpenVINO (or
    for int8 NNCF) missing, bf16 on a CPU without bf16 units."""
    ov = import_openvino_for_export()
    if "int8" in precisions:
        import_nncf()
    if "bf16" in precisions and not cpu_has_bf16(ov.Core()):
        raise ExportError("this CPU has no bf16 units (AVX512-BF16 or AMX): OpenVINO would run "
                          "fp32, so bf16 cannot be checked here; export bf16 on a CPU that "
                          "has them (the one that will analyze)")


__all__ = ["NNCF_MISSING", "NOT_THE_NETWORK", "calibration_items", "check_tools", "import_nncf",
           "import_openvino_for_export", "quantize_to_ir"]
