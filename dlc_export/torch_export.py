"""Torch artifacts of the wrapped model, for GPUs without TensorRT (runtime backend ``torch``).

The artifact is the same module as ``pose.onnx`` (uint8 NHWC frames in, keypoints (B, N, K, 3)
float32 out), saved so that it loads without this package or ``dlc_train``:

- ``torchscript`` (default): ``torch.jit.trace`` + ``torch.jit.save``; loads with plain
  ``torch.jit.load``. Tracing records ``tensor.shape`` reads as graph ops, so batch and frame size
  stay dynamic (checked on a second shape after saving, see :func:`export_torch_artifact`).
  torch 2.13 marks ``torch.jit.trace`` deprecated (a warning, still fully working).
- ``export``: ``torch.export`` with ``Dim`` dynamic batch/height/width + ``torch.export.save``
  (``.pt2``). It handles the decoder's data-dependent argmax/gather fine (the *indices* are
  data-dependent, the *shapes* are not). It is the alternative, not the default: its
  programs are tied more closely to the torch version that wrote them, and the frame size must
  be at least :data:`MIN_FRAME_SIZE` (the stride-16 ResNet's guard is >= 17 px).

fp16: normalisation runs in fp32 on the uint8 frames, the network (backbone + heads) in half,
and its heatmaps/locref are cast back to fp32 before decoding. Decoding in half would put the
keypoint coordinates themselves in fp16, whose spacing is 0.5 px above 512 px and 1 px above
1024 px (measured on the tiny model at 160 px: 0.03 px all-half vs 1e-4 px mixed). The argmax
still runs over values computed in half: two cells whose scores tie (or nearly tie) in fp16 can
pick a different peak than fp32, i.e. a jump of one heatmap cell (``stride`` px). Trained models
with sharp peaks rarely hit this. fp16 artifacts are therefore gated at the reduced-precision
tolerance on the keypoints the fp32 model detects (``parity.ParityGate``); every report
gives the measured max and median over all keypoints.
"""
from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from dlc_export.onnx_export import ExportError
from dlc_io import atomic_path
from dlc_export.parity import (
    DEFAULT_PCUTOFF,
    DEFAULT_TOLERANCE_PX,
    ParityGate,
    ParityReport,
    enforce,
    run_parity,
)
from dlc_runtime.backends.torch_backend import EXPORT_SUFFIX, PRECISIONS, torch_graph_name
from dlc_runtime.bundle import Bundle, GraphSpec, TensorSpec, write_manifest

log = logging.getLogger(__name__)

METHODS = ("torchscript", "export")
MIN_FRAME_SIZE = 32  # torch.export Dim lower bound for height/width
MAX_FRAME_SIZE = 8192
R = TypeVar("R")


class HalfPrecisionNetwork(nn.Module):
    """A PoseModel's network in half precision behind the PoseModel interface a wrapper uses.

    fp32 input in, fp32 head outputs out; backbone, neck and heads compute in half, the
    predictors (the decoding, with buffers such as the PAF peak kernel) stay fp32. A wrapper
    (bottom-up single- or multi-animal, top-down crops, CTD) whose ``model`` is replaced by this
    keeps its own preprocessing (letterbox, padding) and decoding, so every export path gets
    fp16 the same way (see the module docstring for why decoding stays fp32).

    Args:
        model: the fp32 PoseModel, converted in place (pass a copy: see
            :func:`half_precision`).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.half().eval()
        for head in self.model.heads.values():
            head.predictor.float()

    @property
    def heads(self) -> nn.ModuleDict:
        return self.model.heads

    def get_stride(self, head_name: str) -> float:
        return self.model.get_stride(head_name)

    def forward(self, x: torch.Tensor, **kwargs: torch.Tensor
                ) -> dict[str, dict[str, torch.Tensor]]:
        # Keyword inputs (a CTD model's cond_kpts) stay fp32: the condition encoder draws its
        # maps from them in fp32 (crop coordinates in half would be 0.125 px apart at 256 px).
        outputs = self.model(x.half(), **kwargs)
        return {head: {name: t.float() for name, t in out.items()}
                for head, out in outputs.items()}


def half_precision(wrapper: nn.Module) -> nn.Module:
    """A copy of ``wrapper`` (any export wrapper holding its PoseModel as ``.model``) whose
    network runs in half; the caller's wrapper stays fp32."""
    if not isinstance(getattr(wrapper, "model", None), nn.Module) or \
            not hasattr(wrapper.model, "heads"):
        raise ExportError(f"fp16 export needs a wrapper holding its PoseModel as .model; "
                          f"{type(wrapper).__name__} does not")
    half = copy.deepcopy(wrapper)
    half.model = HalfPrecisionNetwork(half.model)
    return half.eval()


def _as_tensor(example: torch.Tensor | np.ndarray) -> torch.Tensor:
    if isinstance(example, np.ndarray):
        example = torch.from_numpy(np.ascontiguousarray(example))
    if example.dtype != torch.uint8 or example.ndim != 4 or example.shape[-1] != 3:
        raise ExportError(f"example must be uint8 (B, H, W, 3) frames, got {example.dtype} "
                          f"{tuple(example.shape)}")
    return example


def load_torch_artifact(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Loads an artifact written by :func:`export_torch_artifact` (as the runtime does)."""
    path = Path(path)
    if path.suffix == EXPORT_SUFFIX:
        return torch.export.load(str(path)).module().to(device)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # jit.load, torch 2.13
        return torch.jit.load(str(path), map_location=device)


def _save(module: nn.Module, args: tuple[torch.Tensor, ...], tmp: Path, method: str,
          max_batch: int) -> None:
    """Traces/exports ``module`` on ``args`` (frames first; further inputs share the batch)."""
    with torch.no_grad(), warnings.catch_warnings():
        # jit.trace's deprecation notice and tracer notes (shape checks inside GroupNorm) are
        # noise for users; the shape-change check after saving is what guards dynamic shapes.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        if method == "torchscript":
            # check_trace re-runs and compares; our own parity check below is stricter and
            # also covers a second shape, so skip the duplicate work.
            traced = torch.jit.trace(module, args, check_trace=False)
            torch.jit.save(traced, str(tmp))
        else:
            from torch.export import Dim

            if len(args) != 1:
                # The top-down crop reads the frame size with torch._shape_as_tensor, which
                # torch.export (2.13) cannot trace; those graphs are TorchScript only.
                raise ExportError("torch.export covers one-input (frames) graphs only; use "
                                  "method='torchscript'")
            (example,) = args
            if example.shape[0] == 1:
                # torch.export specialises a size-1 example dimension to the constant 1.
                example = example.repeat(2, 1, 1, 1)
            dims = {0: Dim("batch", min=1, max=max(max_batch, int(example.shape[0]))),
                    1: Dim("height", min=MIN_FRAME_SIZE, max=MAX_FRAME_SIZE),
                    2: Dim("width", min=MIN_FRAME_SIZE, max=MAX_FRAME_SIZE)}
            program = torch.export.export(module, (example,), dynamic_shapes=(dims,))
            torch.export.save(program, str(tmp))


def _second_shape(example: torch.Tensor) -> torch.Tensor | None:
    """A crop of the example with another batch and frame size, to prove they stay dynamic."""
    b, h, w, _ = example.shape
    h2, w2 = max(MIN_FRAME_SIZE, h * 3 // 4), max(MIN_FRAME_SIZE, w * 3 // 4)
    if (h2, w2) == (h, w):
        return None
    return example[: max(1, b - 1), :h2, :w2].contiguous()


def export_torch_artifact(wrapper: nn.Module, example: torch.Tensor | np.ndarray,
                          path: str | Path, precision: str = "fp32", method: str = "torchscript",
                          *, device: str = "cpu", tolerance_px: float = DEFAULT_TOLERANCE_PX,
                          max_batch: int = 64, pcutoff: float = DEFAULT_PCUTOFF,
                          allow_parity_failure: bool = False,
                          check: Callable[[Any], ParityReport] | None = None) -> ParityReport:
    """Saves ``wrapper`` as a torch artifact at ``path`` and checks it against the eager model.

    The file is written to a temporary sibling, reloaded the way the runtime loads it and
    compared with the eager fp32 ``wrapper`` on ``example`` and on a crop of another batch and
    frame size; only then is it renamed onto ``path``.

    Args:
        wrapper: the eager fp32 wrapper (uint8 NHWC frames -> keypoints), e.g.
            :class:`dlc_export.wrappers.BottomUpSingleAnimal`; fp32, on the CPU (copied to
            ``device`` for the check).
        example: uint8 (B, H, W, 3) frames to trace on and check with (real frames are best).
        path: the artifact file (``.pt`` for torchscript, ``.pt2`` for export).
        precision: "fp32" or "fp16" (input stays uint8, output keypoints stay float32).
        method: "torchscript" (default) or "export" (``torch.export``, ``.pt2``).
        device: where to trace and check ("cpu" or "cuda"); fp16 is best checked on CUDA.
        tolerance_px: largest keypoint difference (px) from the eager fp32 model accepted for
            fp32; fp16 has the reduced-precision gate (``parity.ParityGate.for_precision``:
            4 px unless larger, on the keypoints detected with likelihood >= ``pcutoff``).
        pcutoff: the project's detection threshold (config.yaml ``pcutoff``).
        allow_parity_failure: keep an artifact that fails its gate (its report says so).
        max_batch: upper batch bound for ``torch.export``'s dynamic batch dimension.
        check: ``check(loaded) -> ParityReport`` (raising ParityError to refuse) instead of the
            direct comparison of ``keypoints`` outputs: graphs with other outputs (multi-animal
            PAF or DEKR tensors) are checked after the runtime's host steps by the exporter.

    Returns:
        The parity report of the reloaded artifact against the eager model.

    Raises:
        ParityError: the reloaded artifact differs beyond ``tolerance_px`` (nothing is written).
        ExportError: tracing, exporting or saving failed.
    """
    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if method not in METHODS:
        raise ExportError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    path = Path(path)
    example = _as_tensor(example)
    device_t = torch.device(device)
    # On another device, check against a copy so the caller's wrapper stays where it is.
    reference = wrapper.eval() if device_t.type == "cpu" else \
        copy.deepcopy(wrapper).eval().to(device_t)
    module = (half_precision(reference) if precision == "fp16" else reference).eval()

    report = save_checked_artifact(
        module, (example.to(device_t),), path,
        check or (lambda loaded: _check(reference, loaded, example, device_t, precision,
                                        method, ParityGate.for_precision(precision,
                                                                         tolerance_px,
                                                                         pcutoff),
                                        allow_parity_failure)),
        method=method, device=device, max_batch=max_batch, what=f"({precision})")
    log.info("torch artifact %s written (%s)", path, report.summary())
    return report


def save_checked_artifact(module: nn.Module, args: tuple[torch.Tensor, ...], path: str | Path,
                          check: Callable[[Any], R], *, method: str = "torchscript",
                          device: str = "cpu", max_batch: int = 64, what: str = "") -> R:
    """Saves ``module`` traced on ``args`` to a temporary sibling of ``path``, reloads it the
    way the runtime does, runs ``check(loaded)`` (which raises, e.g. :class:`ParityError`, to
    refuse it) and only then renames it onto ``path``.

    Args:
        args: example inputs, frames first (the top-down pose graph also takes boxes).
        what: words for the error message, e.g. "(fp16)".

    Returns:
        What ``check`` returned (a parity report).
    """
    if method not in METHODS:
        raise ExportError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Keep the suffix: torch.export.load wants ".pt2", and the loader picks the format by it.
    with atomic_path(path, keep_suffix=True) as tmp:
        try:
            _save(module, args, tmp, method, max_batch)
            loaded = load_torch_artifact(tmp, device)
        except Exception as err:
            raise ExportError(f"torch {method} export {what} failed: "
                              f"{type(err).__name__}: {str(err).strip().splitlines()[0]}") from err
        result = check(loaded)
    return result


def _check(reference: nn.Module, loaded: Any, example: torch.Tensor, device: torch.device,
           precision: str, method: str, gate: ParityGate,
           allow_failure: bool = False) -> ParityReport:
    """Parity of the reloaded artifact vs the eager fp32 model, on two shapes."""

    def on(module: Any):
        # run_parity calls .numpy() on the reference output: bring it back to the host.
        return lambda frames: module(frames.to(device)).float().cpu()

    def candidate(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return on(loaded)(torch.from_numpy(np.ascontiguousarray(batch))).numpy()

    name = f"torch-{method}-{precision}-{device.type}"
    frames = [example.cpu().numpy()]
    second = _second_shape(example.cpu())
    if second is not None:  # traced shapes must generalise
        frames.append(second.numpy())
    report = run_parity(on(reference), candidate, frames, backend=name, tolerance_px=gate,
                        source="export example frames" + (" and a smaller crop of them"
                                                          if second is not None else ""))
    hint = ""
    if not report.passed and second is not None and run_parity(
            on(reference), candidate, frames[0], backend=name, source="export example frames",
            tolerance_px=gate).passed:
        hint = (f"it matches on the traced frames, not on {tuple(second.shape)} frames: the "
                "traced shapes do not generalise; ")
    return enforce(report, allow_failure, f"{hint}the torch artifact was not written")


def torch_artifact_file(precision: str, method: str = "torchscript", graph: str = "pose") -> str:
    """File name inside the bundle: ``pose.fp16.torchscript.pt`` or ``pose.fp16.pt2`` (top-down
    bundles add ``detector.fp32.torchscript.pt``)."""
    return f"{graph}.{precision}.torchscript.pt" if method == "torchscript" \
        else f"{graph}.{precision}{EXPORT_SUFFIX}"


def add_torch_artifact(bundle_dir: str | Path, wrapper: nn.Module,
                       example: torch.Tensor | np.ndarray, precision: str = "fp32", *,
                       method: str = "torchscript", device: str = "cpu",
                       tolerance_px: float = DEFAULT_TOLERANCE_PX,
                       pcutoff: float = DEFAULT_PCUTOFF, allow_parity_failure: bool = False,
                       check: Callable[[Any], ParityReport] | None = None) -> GraphSpec:
    """Adds a checked torch artifact to a bundle and lists it in the manifest.

    Writes ``pose.<precision>.torchscript.pt`` (or ``.pt2``), its parity report
    ``parity.torch_<precision>.json``, and graph ``pose_torch_<precision>`` in the manifest
    (read with ``Bundle.load``, rewritten with ``write_manifest``; an existing entry of the same
    name is replaced).

    Args:
        bundle_dir: a bundle folder (or an export's staging folder) with a manifest.
        wrapper, example, precision, method, device, tolerance_px, pcutoff,
            allow_parity_failure, check: see
            :func:`export_torch_artifact`.

    Returns:
        The :class:`GraphSpec` added under ``graphs["pose_torch_<precision>"]``.
    """
    bundle_dir = Path(bundle_dir)
    bundle = Bundle.load(bundle_dir)
    file = torch_artifact_file(precision, method)
    report = export_torch_artifact(wrapper, example, bundle_dir / file, precision, method,
                                   device=device, tolerance_px=tolerance_px,
                                   max_batch=bundle.input.batch.max, pcutoff=pcutoff,
                                   allow_parity_failure=allow_parity_failure, check=check)
    report.to_json(bundle_dir / f"parity.torch_{precision}.json")
    pose = bundle.graph("pose")
    spec = GraphSpec(file=file, opset=None,
                     inputs=[TensorSpec(t.name, t.dtype, list(t.shape)) for t in pose.inputs],
                     outputs=[TensorSpec(t.name, t.dtype, list(t.shape)) for t in pose.outputs])
    bundle.manifest.graphs[torch_graph_name(precision)] = spec
    write_manifest(bundle_dir, bundle.manifest)  # fills spec.sha256
    return spec
