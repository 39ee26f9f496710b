"""The torch backend's GPU-resident path: pinned ring, side-stream uploads, CUDA graphs.

Per submitted batch, with a ring of ``ring`` slots (each: pinned host inputs, device inputs,
pinned host outputs, two events):

1. host: the uint8 frames are copied into the slot's pinned buffer (a device batch from the
   NVDEC decoder skips this and the upload);
2. upload stream: pinned -> device, asynchronous; the slot's ``uploaded`` event is recorded;
3. compute stream: waits for ``uploaded`` only, runs the network (a CUDA graph replay, or the
   module eagerly), and copies the outputs (keypoints, a few KiB) into the slot's pinned host
   outputs; the ``done`` event is recorded;
4. :meth:`PendingOutputs.result` waits for ``done``: the one synchronisation of the batch.

So while batch i computes, batch i+1 uploads and the decode thread fills batch i+2. A slot is
reused only after its previous batch's result was collected (collected here if the caller has
not), which is what keeps its pinned buffers safe to overwrite.

CUDA graphs are captured per input shape, after warm-up calls (TorchScript's profiling executor
specialises the graph on its first runs). A batch smaller than a captured one (the video's last
batch) replays that graph on its first rows instead of capturing a new one. A model that cannot
be captured (an op that synchronises with the host) runs eagerly, with one warning.

Only this module and ``torch_backend.py`` of the runtime import torch (created with the backend).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dlc_runtime.backends.base import PendingOutputs
from dlc_runtime.errors import BackendError
from dlc_runtime.frames import check_device_frames, cuda_device_index

log = logging.getLogger(__name__)

#: eager calls before a capture: TorchScript's profiling executor re-optimises the graph over
#: its first runs, and cuDNN's autotuner picks its kernels; the capture must see the final ones.
WARMUP_CALLS = 3


@dataclass
class _Graph:
    graph: Any  # torch.cuda.CUDAGraph
    inputs: list[Any]  # static device inputs the graph reads
    outputs: tuple[Any, ...]  # static device outputs the graph writes

    def fits(self, shapes: list[tuple[int, ...]]) -> bool:
        """Takes inputs of ``shapes``: same shape but for a batch no larger than its own."""
        return all(len(s) == len(t.shape) and s[0] <= t.shape[0] and s[1:] == tuple(t.shape[1:])
                   for s, t in zip(shapes, self.inputs))


@dataclass
class _Slot:
    """One batch's buffers in the ring (kept across batches, re-made on a new shape)."""

    uploaded: Any
    done: Any
    host_in: dict[str, Any] = field(default_factory=dict)
    device_in: dict[str, Any] = field(default_factory=dict)
    host_out: dict[str, Any] = field(default_factory=dict)
    pending: PendingOutputs | None = None


class CudaRunner:
    """Runs a loaded torch module on a CUDA device, batches overlapping (see module docstring).

    Args:
        torch: the torch module.
        module: the artifact, loaded on ``device`` (uint8 NHWC frames in, fp32 decoded out).
        device: a ``torch.device`` of type cuda.
        input_names, output_names: the artifact's inputs (frames first) and outputs, in order.
        cuda_graphs: capture and replay CUDA graphs (False: eager calls, same keypoints).
        ring: batches whose buffers are kept (>= 2 for upload/compute overlap).
        channels_last: convert the weights to channels-last (NHWC kernels on tensor cores; the
            artifact's input permute already yields channels-last activations).
    """

    def __init__(self, torch: Any, module: Any, device: Any, input_names: list[str],
                 output_names: list[str], cuda_graphs: bool = True, ring: int = 3,
                 channels_last: bool = True) -> None:
        if ring < 2:
            raise BackendError(f"ring must be >= 2 batches (upload beside compute), got {ring}")
        self.torch, self.device = torch, device
        self.input_names, self.output_names = list(input_names), list(output_names)
        self.cuda_graphs = bool(cuda_graphs)
        # Fixed shapes per video: let cuDNN time its algorithms once (process-wide setting).
        torch.backends.cudnn.benchmark = True
        if channels_last:
            module = module.to(memory_format=torch.channels_last)
        self.module = module
        self.upload = torch.cuda.Stream(device)
        self.compute = torch.cuda.Stream(device)
        self.slots = [_Slot(torch.cuda.Event(), torch.cuda.Event()) for _ in range(ring)]
        self.submitted = 0
        self.graphs: list[_Graph] = []
        self.uncapturable: set[tuple[tuple[int, ...], ...]] = set()

    # ---------------------------------------------------------------------------------------
    def submit(self, feed: dict[str, Any]) -> PendingOutputs:
        """Starts one batch; ``feed`` maps input names to numpy arrays or device tensors."""
        torch = self.torch
        slot = self.slots[self.submitted % len(self.slots)]
        self.submitted += 1
        if slot.pending is not None:
            slot.pending.result()  # its outputs are copied out before the slot is reused
        inputs, on_device = [], False
        for name in self.input_names:
            value = feed[name]
            if isinstance(value, np.ndarray):
                inputs.append(self._upload(slot, name, value))
            else:
                inputs.append(self._device_input(value))
                on_device = True
        slot.uploaded.record(self.upload)
        self.compute.wait_event(slot.uploaded)
        if on_device:  # produced on the caller's stream (the decoder's): wait for it too
            self.compute.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.compute):
            outputs = self._forward(inputs)
            if len(outputs) != len(self.output_names):
                raise BackendError(f"the torch artifact returned {len(outputs)} outputs, the "
                                   f"manifest lists {self.output_names}; re-export the bundle")
            for name, tensor in zip(self.output_names, outputs):
                if tensor.is_floating_point() and tensor.dtype != torch.float32:
                    tensor = tensor.float()
                host = _reuse(slot.host_out, name, tuple(tensor.shape), tensor.dtype,
                              lambda shape, dtype: torch.empty(shape, dtype=dtype,
                                                               pin_memory=True))
                host.copy_(tensor, non_blocking=True)
            slot.done.record(self.compute)
        names = list(self.output_names)

        def wait() -> dict[str, np.ndarray]:
            slot.done.synchronize()
            # Copies: the pinned outputs belong to the slot, reused ring-size batches later.
            return {name: slot.host_out[name].numpy().copy() for name in names}

        slot.pending = PendingOutputs(wait)
        return slot.pending

    def _upload(self, slot: _Slot, name: str, value: np.ndarray) -> Any:
        torch = self.torch
        value = np.ascontiguousarray(value)
        dtype = torch.from_numpy(value[:0]).dtype
        host = _reuse(slot.host_in, name, value.shape, dtype,
                      lambda shape, dt: torch.empty(shape, dtype=dt, pin_memory=True))
        np.copyto(host.numpy(), value)
        device = _reuse(slot.device_in, name, value.shape, dtype,
                        lambda shape, dt: torch.empty(shape, dtype=dt, device=self.device))
        with torch.cuda.stream(self.upload):
            device.copy_(host, non_blocking=True)
        return device

    def _device_input(self, value: Any) -> Any:
        torch = self.torch
        check_device_frames(value)
        index = cuda_device_index(value)
        if getattr(value, "is_cuda", False) is False or \
                (index is not None and index != (self.device.index or 0)):
            raise BackendError(f"a device batch on {getattr(value, 'device', '?')} was handed "
                               f"to a torch backend on {self.device}; decode on the same GPU")
        return value if isinstance(value, torch.Tensor) else torch.from_dlpack(value)

    # ---------------------------------------------------------------------------------------
    def _forward(self, inputs: list[Any]) -> tuple[Any, ...]:
        torch = self.torch
        with torch.inference_mode():
            if not self.cuda_graphs:
                return _as_tuple(self.module(*inputs))
            shapes = [tuple(t.shape) for t in inputs]
            graph = next((g for g in self.graphs if g.fits(shapes)), None)
            if graph is None and tuple(shapes) not in self.uncapturable:
                graph = self._capture(inputs)
            if graph is None:
                return _as_tuple(self.module(*inputs))
            n = shapes[0][0]
            for static, value in zip(graph.inputs, inputs):
                static[:n].copy_(value, non_blocking=True)
            graph.graph.replay()
            return tuple(out[:n] for out in graph.outputs)

    def _capture(self, inputs: list[Any]) -> _Graph | None:
        torch = self.torch
        static = [t.clone() for t in inputs]
        try:
            for _ in range(WARMUP_CALLS):
                self.module(*static)
            graph = torch.cuda.CUDAGraph()
            # thread_local: the NVDEC decode thread keeps working on its own stream meanwhile;
            # in "global" mode its CUDA calls would be refused during the capture.
            with torch.cuda.graph(graph, stream=self.compute,
                                  capture_error_mode="thread_local"):
                outputs = _as_tuple(self.module(*static))
        except Exception as exc:  # capture errors come as RuntimeError from many places
            self.uncapturable.add(tuple(tuple(t.shape) for t in inputs))
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            log.warning("CUDA graph capture failed for inputs %s (%s); running this shape "
                        "eagerly", [tuple(t.shape) for t in inputs], first)
            return None
        captured = _Graph(graph, static, outputs)
        # Largest batches first: a smaller batch replays the largest graph that fits it.
        self.graphs.append(captured)
        self.graphs.sort(key=lambda g: -g.inputs[0].shape[0])
        log.info("captured a CUDA graph for inputs %s", [tuple(t.shape) for t in static])
        return captured

    def close(self) -> None:
        for slot in self.slots:
            if slot.pending is not None:
                slot.done.synchronize()
            slot.host_in.clear(), slot.device_in.clear(), slot.host_out.clear()
            slot.pending = None
        self.graphs.clear()
        self.module = None


def _as_tuple(out: Any) -> tuple[Any, ...]:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def _reuse(buffers: dict[str, Any], name: str, shape: tuple[int, ...], dtype: Any,
           make: Any) -> Any:
    """``buffers[name]`` when it has this shape and dtype, else a new one put there."""
    buffer = buffers.get(name)
    if buffer is None or tuple(buffer.shape) != tuple(shape) or buffer.dtype != dtype:
        buffer = buffers[name] = make(tuple(shape), dtype)
    return buffer


__all__ = ["CudaRunner", "WARMUP_CALLS"]
