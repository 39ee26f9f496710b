"""Running an onnxruntime session through IOBinding, with buffers on the session's device that
are reused from batch to batch.

Plain ``session.run`` takes host arrays, and on CUDA copies each input up and each output down
through buffers it allocates per call. :class:`BoundSession` instead keeps, per input, an
``OrtValue`` on the session's device (created once per input shape, refilled in place each batch)
and, per output, a preallocated ``OrtValue`` of the shape the graph gave for those input shapes
(known after the first batch of that shape). A *device batch* (:mod:`dlc_runtime.frames`) is bound
by its pointer, so frames decoded on the GPU are never copied to the host. The outputs are copied
to the host once per batch.

On the CPU execution provider the same code runs with host ``OrtValue``s: that is how it is
tested without a GPU, and it gives exactly ``session.run``'s outputs.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import onnxruntime as ort

from dlc_runtime.errors import BackendError
from dlc_runtime.frames import Frames, cuda_device_index, cuda_pointer, on_device

log = logging.getLogger(__name__)


class BoundSession:
    """Runs ``session`` through one IOBinding whose buffers live on ``device_type:device_id``.

    Not thread-safe: one batch at a time (each :meth:`run` returns when its outputs are on the
    host, so the buffers are free again for the next batch).

    Args:
        session: an ``onnxruntime.InferenceSession``.
        device_type: "cpu" or "cuda": where the session's execution provider keeps tensors
            (the CUDA and TensorRT execution providers both use "cuda").
        device_id: the GPU index (0 on the CPU).
    """

    def __init__(self, session: Any, device_type: str = "cpu", device_id: int = 0) -> None:
        if device_type not in ("cpu", "cuda"):
            raise BackendError(f"IOBinding device {device_type!r}: use 'cpu' or 'cuda'")
        self.session = session
        self.device_type = device_type
        self.device_id = int(device_id)
        self.binding = session.io_binding()
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]
        #: input name -> the reusable OrtValue holding the current batch (host inputs only).
        self.input_values: dict[str, Any] = {}
        self.input_specs: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        #: output name -> the preallocated OrtValue for :attr:`shapes`; None until the first
        #: batch of those input shapes has run (or always, for a graph whose output shapes
        #: depend on the input values).
        self.output_values: dict[str, Any] | None = None
        #: the input shapes the output buffers are for.
        self.shapes: tuple[tuple[int, ...], ...] | None = None
        self.dynamic_outputs = False

    def run(self, feed: dict[str, np.ndarray | Frames]) -> dict[str, np.ndarray]:
        """Run one batch.

        Args:
            feed: every graph input by name: a C-contiguous numpy array of the graph's dtype
                (checked by :func:`dlc_runtime.backends.base.check_inputs`), or, on CUDA, a
                device batch of uint8 frames (bound by pointer, never copied to the host).

        Returns:
            Output name -> numpy array (host copies, owned by the caller).
        """
        keep_alive = []  # device batches bound by pointer must outlive the run
        for name in self.input_names:
            value = feed[name]
            if on_device(value):
                self._bind_device_input(name, value)
                keep_alive.append(value)
            else:
                self._bind_host_input(name, value)
        shapes = tuple(tuple(int(s) for s in feed[name].shape) for name in self.input_names)
        if shapes != self.shapes:
            self.shapes, self.output_values = shapes, None
        # On CUDA this waits for the device (cudaDeviceSynchronize), so a device batch that
        # another stream (torch's, the decoder's) is still writing is complete before the
        # session's own stream reads it; on the CPU it does nothing.
        self.binding.synchronize_inputs()
        preallocate = self.output_values is None and not self.dynamic_outputs
        if self.output_values is None:
            self._bind_unallocated_outputs()
            self._run()
        else:
            try:
                self._run()
            except Exception as exc:  # onnxruntime raises several unrelated exception types
                if "shape" not in str(exc).lower():
                    raise
                # A graph whose output shapes depend on the frames' content cannot reuse
                # buffers; from now on onnxruntime allocates its outputs on each batch.
                log.info("onnxruntime: an output's shape changed between batches of the same "
                         "input shapes; outputs are no longer preallocated")
                self.dynamic_outputs, self.output_values = True, None
                self._bind_unallocated_outputs()
                self._run()
        # copy_outputs_to_cpu returns arrays of their own (on the CPU too, where .numpy()
        # would be a view of a buffer the next batch overwrites).
        outputs = dict(zip(self.output_names, self.binding.copy_outputs_to_cpu()))
        if preallocate:
            self._preallocate_outputs(outputs)
        return outputs

    def _run(self) -> None:
        # run_with_iobinding synchronizes the execution providers at its end (onnxruntime's
        # default run options), so the outputs are complete when it returns;
        # synchronize_outputs makes that explicit for versions and providers that differ.
        self.session.run_with_iobinding(self.binding)
        self.binding.synchronize_outputs()

    def _bind_host_input(self, name: str, array: np.ndarray) -> None:
        spec = (array.shape, array.dtype)
        if self.input_specs.get(name) != spec:
            self.input_values[name] = ort.OrtValue.ortvalue_from_shape_and_type(
                list(array.shape), array.dtype, self.device_type, self.device_id)
            self.input_specs[name] = spec
        value = self.input_values[name]
        value.update_inplace(array)  # on CUDA: one host-to-device copy
        self.binding.bind_ortvalue_input(name, value)

    def _bind_device_input(self, name: str, frames: Frames) -> None:
        if self.device_type != "cuda":
            raise BackendError("a device batch (GPU frames) was given to an onnxruntime session "
                               "on the CPU; copy it to the host first (frames.to_host)")
        index = cuda_device_index(frames)
        if index is not None and index != self.device_id:
            raise BackendError(f"the frames are on cuda:{index} but the onnxruntime session runs "
                               f"on cuda:{self.device_id}; decode on the same GPU or make the "
                               f"backend with device='cuda:{index}'")
        self.binding.bind_input(name, "cuda", self.device_id, np.uint8,
                                [int(s) for s in frames.shape], cuda_pointer(frames))

    def _bind_unallocated_outputs(self) -> None:
        # onnxruntime allocates them on the device for this run (shapes not known yet).
        for name in self.output_names:
            self.binding.bind_output(name, self.device_type, self.device_id)

    def _preallocate_outputs(self, outputs: dict[str, np.ndarray]) -> None:
        """Output buffers of the shapes and types the last run gave, bound for the next runs."""
        self.output_values = {}
        for name, array in outputs.items():
            buffer = ort.OrtValue.ortvalue_from_shape_and_type(
                list(array.shape), array.dtype, self.device_type, self.device_id)
            self.output_values[name] = buffer
            self.binding.bind_ortvalue_output(name, buffer)
