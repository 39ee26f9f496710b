"""OpenVINO backend: a bundle's ONNX graphs on the CPU, in fp32, bf16 or int8.

- fp32 runs the graph's ONNX file as it is (every bundle has it), with OpenVINO's inference
  precision pinned to f32: on CPUs with bf16 units OpenVINO would otherwise pick bf16 itself.
- bf16 runs the same file with the inference precision hint bf16 (convolutions and matrix
  products in bf16 on AVX512-BF16 / AMX units; pre-processing and the decoding inside the graph
  stay f32). On a CPU without bf16 units OpenVINO runs f32; the log and :attr:`name` say so.
- int8 runs the NNCF-quantized OpenVINO IR that ``dlc export --format openvino --precision int8``
  wrote (``<graph>.int8.xml`` + ``.bin``, manifest ``<graph>_openvino_int8``); the rest of the
  graph runs f32.

A reduced precision runs only where the export checked it: the manifest lists
``<graph>_openvino_<precision>`` and the reports beside the graph's file
(:func:`report_files`) say it passed; otherwise :class:`BackendError` says what to export.
Graphs without a reduced variant (top-down detectors) run in fp32 beside a reduced pose graph,
as on the other backends.

Throughput mode (the default) compiles with OpenVINO's THROUGHPUT hint, which picks the number
of streams for the cores, and splits each batch over that many infer requests running at once;
:meth:`OpenVinoBackend.submit` returns while they run (two batches may be in flight). Latency mode (``mode="latency"``, for the
live API) runs each batch as one request on every core.

openvino is imported when a backend is made: a missing install is one line naming the extra.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dlc_runtime.backends.base import Backend, PendingOutputs, check_inputs, register_backend
from dlc_runtime.errors import BackendError
from dlc_runtime.frames import Frames

if TYPE_CHECKING:
    from dlc_runtime.bundle import Bundle

log = logging.getLogger(__name__)

OPENVINO_MISSING = ("OpenVINO is not installed: pip install 'dlc-deploy[openvino]' (or use "
                    "the onnxruntime backend)")
PRECISIONS = ("fp32", "bf16", "int8")
MODES = ("throughput", "latency")
#: The manifest names ``<graph>_openvino_<precision>`` of reduced-precision variants.
GRAPH_INFIX = "_openvino_"
#: rt_info key of an IR's xml holding its .bin's sha256 (the manifest checks the xml only).
WEIGHTS_SHA256_KEY = "dlc_deploy_weights_sha256"
#: Batches a backend may have in flight at once (one set of infer requests each).
RING = 2
#: OpenVINO's names of the inference precisions.
_OV_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


def import_openvino() -> Any:
    """The ``openvino`` module, or :class:`BackendError` naming the extra when it is absent."""
    try:
        import openvino
    except ImportError:
        raise BackendError(OPENVINO_MISSING) from None
    return openvino


def openvino_graph_name(graph: str, precision: str) -> str:
    """The manifest name of ``graph``'s OpenVINO variant of ``precision`` (fp32: the graph)."""
    if precision not in PRECISIONS:
        raise BackendError(f"unknown OpenVINO precision {precision!r}; use one of "
                           f"{', '.join(PRECISIONS)}")
    return graph if precision == "fp32" else f"{graph}{GRAPH_INFIX}{precision}"


def report_files(precision: str) -> tuple[str, str]:
    """The two reports of a precision, beside its graph's file: the task's parity harness vs
    the PyTorch model, and the keypoints vs the fp32 graph (median and p95 gate)."""
    return f"parity.openvino_{precision}.json", f"parity.openvino_{precision}.vs_fp32.json"


def cpu_has_bf16(core: Any) -> bool:
    """OpenVINO's CPU plugin lists BF16 among its capabilities (AVX512-BF16 or AMX)."""
    return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def check_reports(folder: Path, precision: str) -> None:
    """Refuses a reduced precision whose export check is missing or failed (one line)."""
    export = (f"export it with `dlc export --format openvino --precision {precision}` (int8: "
              "with --calibration-video)")
    for name in report_files(precision):
        path = folder / name
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BackendError(f"{path} is missing: the OpenVINO {precision} keypoints of this "
                               f"bundle were never checked against fp32; {export}") from None
        except (OSError, ValueError) as exc:
            raise BackendError(f"{path} cannot be read ({exc}); {export}") from None
        if not report.get("passed"):
            raise BackendError(f"{path}: the OpenVINO {precision} check failed (median "
                               f"{report.get('median_px')} px, max {report.get('max_px')} px); "
                               "it was kept with --allow-parity-failure: pass "
                               "require_parity=False to run it anyway, or use fp32")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_graph(core: Any, path: Path) -> Any:
    """``path`` (an ONNX file or an OpenVINO IR ``.xml``) as an ``openvino.Model``; an IR's
    weights are checked against the sha256 its xml records."""
    if not path.is_file():
        raise BackendError(f"{path} is missing; copy the whole bundle folder or re-export it")
    try:
        model = core.read_model(str(path))
    except Exception as exc:  # OpenVINO raises RuntimeError subclasses with long texts
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BackendError(f"OpenVINO cannot read {path}: {first}; re-export the bundle or "
                           "check the openvino version") from exc
    if path.suffix == ".xml":
        if not model.has_rt_info(WEIGHTS_SHA256_KEY):
            raise BackendError(f"{path} records no sha256 of its weights; re-export the bundle "
                               "with `dlc export --format openvino`")
        expected = model.get_rt_info(WEIGHTS_SHA256_KEY).astype(str)
        weights = path.with_suffix(".bin")
        if not weights.is_file() or _sha256(weights) != expected:
            raise BackendError(f"{weights}: missing, or its sha256 does not match {path.name}'s "
                               "(corrupt or replaced); re-copy or re-export the bundle")
    return model


class OpenVinoBackend(Backend):
    """Runs one ONNX graph or OpenVINO IR on the CPU.

    Args:
        model_path: the ``.onnx`` file or the IR's ``.xml``.
        device: "cpu" (the only device this backend drives).
        precision: "fp32", "bf16" or "int8": the inference precision (int8 is the quantized
            IR's; its remaining layers run f32).
        mode: "throughput" (streams for the cores, each batch split over them) or "latency"
            (one request on every core: batch 1, the live API).
        streams: number of streams in throughput mode (None: OpenVINO's choice for the cores).
        threads: CPU threads in all (None: every core).
        input_names, output_names: the graph's inputs (frames first) and outputs by manifest
            name; None: the model's own, in order.
    """

    def __init__(self, model_path: str | os.PathLike[str], device: str = "cpu",
                 precision: str = "fp32", mode: str = "throughput", streams: int | None = None,
                 threads: int | None = None, input_names: list[str] | None = None,
                 output_names: list[str] | None = None) -> None:
        if device != "cpu":
            raise BackendError(f"the openvino backend runs on the CPU: device must be 'cpu', "
                               f"got {device!r} (use onnxruntime, torch or tensorrt on a GPU)")
        if precision not in PRECISIONS:
            raise BackendError(f"unknown OpenVINO precision {precision!r}; use one of "
                               f"{', '.join(PRECISIONS)}")
        if mode not in MODES:
            raise BackendError(f"unknown OpenVINO mode {mode!r}; use one of {', '.join(MODES)}")
        ov = import_openvino()
        core = ov.Core()
        model = read_graph(core, Path(model_path))
        config: dict[str, Any] = {"PERFORMANCE_HINT": mode.upper(),
                                  "INFERENCE_PRECISION_HINT": _OV_PRECISION[precision]}
        if precision == "bf16" and not cpu_has_bf16(core):
            # OpenVINO would refuse the hint; run f32 and say so rather than fail a video.
            config["INFERENCE_PRECISION_HINT"] = "f32"
            log.warning("this CPU has no bf16 units (AVX512-BF16 / AMX): OpenVINO runs %s in "
                        "fp32", Path(model_path).name)
        if streams is not None and mode == "throughput":
            config["NUM_STREAMS"] = int(streams)
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BackendError(f"OpenVINO cannot compile {model_path}: {first}") from exc
        running = str(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        self.runs_bf16 = "bf16" in running or "bfloat16" in running
        self.precision = "bf16" if self.runs_bf16 else precision
        if precision == "bf16" and self.runs_bf16:
            log.info("OpenVINO runs %s in bf16 on this CPU's bf16 units",
                     Path(model_path).name)
        self.mode = mode
        self.streams = int(self.compiled.get_property("NUM_STREAMS")) if mode == "throughput" \
            else 1
        self.input_names = list(input_names or [p.get_any_name() for p in model.inputs])
        self.output_names = list(output_names or [p.get_any_name() for p in model.outputs])
        self._outputs = [self._port(self.compiled.outputs, name) for name in self.output_names]
        self._inputs = [self._port(self.compiled.inputs, name) for name in self.input_names]
        # Two sets of requests: the next batch starts while the analysis loop still reads the
        # previous one's outputs (stream_poses keeps one batch in flight beside the one read).
        self._sets = [[self.compiled.create_infer_request() for _ in range(self.streams)]
                      for _ in range(RING)]
        self._pending: list[PendingOutputs | None] = [None] * RING
        self._turn = 0
        self.name = f"openvino-cpu-{self.precision}"
        if precision == "bf16" and not self.runs_bf16:
            self.name += " (bf16 asked; no bf16 units)"

    @staticmethod
    def _port(ports: Any, name: str) -> Any:
        for port in ports:
            if name in port.get_names():
                return port
        raise BackendError(f"the OpenVINO model has no tensor named {name!r} (has "
                           f"{[sorted(p.get_names()) for p in ports]}); re-export the bundle")

    def run(self, images: Frames, **extra_inputs: np.ndarray) -> dict[str, np.ndarray]:
        return self.submit(images, **extra_inputs).result()

    def submit(self, images: Frames, **extra_inputs: np.ndarray) -> PendingOutputs:
        if getattr(self, "compiled", None) is None:
            raise BackendError("the openvino backend is closed")
        feed = check_inputs(self.input_names, images, extra_inputs)
        turn, self._turn = self._turn, (self._turn + 1) % RING
        held = self._pending[turn]
        if held is not None:
            held.result()  # its requests are reused: collect the batch holding them first
        requests = self._sets[turn]
        n = len(feed[self.input_names[0]])
        step = -(-n // len(requests))
        started = []
        for request, start in zip(requests, range(0, n, step)):
            request.start_async({port: feed[name][start:start + step]
                                 for port, name in zip(self._inputs, self.input_names)})
            started.append(request)

        def wait() -> dict[str, np.ndarray]:
            parts = []
            for request in started:
                request.wait()
                # Copies: the request's output memory is reused by its next run.
                parts.append([np.array(request.get_tensor(port).data) for port in self._outputs])
            self._pending[turn] = None
            return {name: parts[0][i] if len(parts) == 1
                    else np.concatenate([p[i] for p in parts])
                    for i, name in enumerate(self.output_names)}

        pending = self._pending[turn] = PendingOutputs(wait)
        return pending

    def close(self) -> None:
        if getattr(self, "compiled", None) is not None:
            for pending in self._pending:
                if pending is not None:
                    pending.result()
        self._sets = []
        self.compiled = None


def _pick_graph(bundle: Bundle, graph: str, precision: str) -> str:
    """``graph``'s variant of ``precision``; a graph without one (detectors stay fp32) runs its
    fp32 graph, as long as the bundle has variants of that precision at all."""
    name = openvino_graph_name(graph, precision)
    if precision == "fp32" or name in bundle.manifest.graphs:
        return name
    suffix = openvino_graph_name("", precision)
    if not any(g.endswith(suffix) for g in bundle.manifest.graphs):
        raise BackendError(f"{bundle.path}: no OpenVINO {precision} graph; export it with "
                           f"`dlc export --format openvino --precision {precision}`"
                           + (" --calibration-video VIDEO" if precision == "int8" else ""))
    return graph


@register_backend("openvino")
def _make_openvino(bundle: Bundle, device: str = "cpu", graph: str = "pose",
                   precision: str | None = None, mode: str = "throughput",
                   streams: int | None = None, threads: int | None = None,
                   require_parity: bool = True) -> OpenVinoBackend:
    """Factory: ``graph``'s OpenVINO variant of ``precision`` (default fp32). A reduced
    precision needs its passed export checks (``require_parity=False``: run a variant whose
    check failed or is missing, e.g. the exporter checking it). Options: see
    :class:`OpenVinoBackend`."""
    precision = precision or "fp32"
    name = _pick_graph(bundle, graph, precision)
    spec = bundle.graph(name)
    if name != graph and require_parity:
        check_reports(bundle.graph_path(name).parent, precision)
    # A graph without a reduced variant (a detector) runs fp32, as its export checked it.
    effective = precision if name != graph or precision == "fp32" else "fp32"
    return OpenVinoBackend(bundle.graph_path(name), device=device, precision=effective,
                           mode=mode, streams=streams, threads=threads,
                           input_names=[t.name for t in spec.inputs] or None,
                           output_names=[t.name for t in spec.outputs] or None)


__all__ = ["OPENVINO_MISSING", "PRECISIONS", "OpenVinoBackend", "check_reports", "cpu_has_bf16",
           "import_openvino", "openvino_graph_name", "read_graph", "report_files"]
