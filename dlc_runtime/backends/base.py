"""The backend interface: uint8 NHWC frames (plus a graph's further named inputs) in, named numpy
arrays out.

A backend only runs a graph. Everything before (decode) and after (writing, tracking) lives in the
pipeline, so a new backend (TensorRT, torch) is one file plus one ``register_backend`` line.
Most graphs take the frames only; the top-down pose graph also takes ``boxes``, passed by name:
``backend.run(images, boxes=boxes)``. A pipeline that runs several graphs of one bundle opens the
others with :meth:`Backend.open_graph` (same backend kind, device and options).

:meth:`Backend.submit` starts a batch and returns at once where the backend can work
asynchronously (the torch CUDA pipeline uploads batch i+1 while batch i computes); the caller
collects the outputs with :meth:`PendingOutputs.result`. Frames may be a device batch
(:mod:`dlc_runtime.frames`); a backend without :attr:`Backend.accepts_device_frames` receives a
host copy (:func:`check_inputs` makes it).
"""

from __future__ import annotations

import abc
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from dlc_runtime.errors import BackendError
from dlc_runtime.frames import Frames, to_host

if TYPE_CHECKING:
    from dlc_runtime.bundle import Bundle


class PendingOutputs:
    """The outputs of a submitted batch; :meth:`result` waits for them (once).

    Args:
        wait: returns the outputs, blocking until the device has produced them.
    """

    def __init__(self, wait: Callable[[], dict[str, np.ndarray]]) -> None:
        self._wait: Callable[[], dict[str, np.ndarray]] | None = wait
        self._outputs: dict[str, np.ndarray] | None = None

    @classmethod
    def ready(cls, outputs: dict[str, np.ndarray]) -> PendingOutputs:
        """Outputs already computed (a synchronous backend's)."""
        pending = cls(lambda: outputs)
        pending.result()
        return pending

    @property
    def done(self) -> bool:
        """The outputs are here (a synchronous backend's, or collected already)."""
        return self._wait is None

    def result(self) -> dict[str, np.ndarray]:
        if self._wait is not None:
            self._outputs, self._wait = self._wait(), None
        return self._outputs  # type: ignore[return-value]


class Backend(abc.ABC):
    """Runs one graph of a bundle."""

    #: short name, e.g. "onnxruntime-cpu"; recorded in result metadata.
    name: str = "backend"

    #: what :func:`make_backend` made this backend from: (backend name, device, options);
    #: None for a backend constructed directly.
    made_with: tuple[str, str, dict[str, Any]] | None = None
    #: factory options that name one graph's file, dropped by :meth:`open_graph`.
    graph_options: tuple[str, ...] = ("graph",)
    #: takes device batches (:mod:`dlc_runtime.frames`) without a copy to the host.
    accepts_device_frames: bool = False

    @abc.abstractmethod
    def run(self, images: Frames, **extra_inputs: np.ndarray) -> dict[str, np.ndarray]:
        """Run the graph.

        Args:
            images: uint8 (B, H, W, 3), RGB, C-contiguous: a numpy array or a device batch.
            extra_inputs: the graph's further inputs by name, batch first (the top-down pose
                graph's ``boxes``, float32 (B, M, 4)); none for one-input graphs.

        Returns:
            Output name -> array with the batch dimension first.
        """

    def submit(self, images: Frames, **extra_inputs: np.ndarray) -> PendingOutputs:
        """Start the graph on a batch; the outputs come from ``.result()``.

        The default runs synchronously. An asynchronous backend returns before the device is
        done, so the caller can decode and submit the next batch meanwhile; it must not let
        more batches be in flight than its buffers hold (it waits for the oldest instead).
        """
        return PendingOutputs.ready(self.run(images, **extra_inputs))

    def open_graph(self, bundle: Bundle, graph: str) -> Backend:
        """A backend of the same kind, device and options for another graph of ``bundle``.

        The caller owns (closes) it. A backend not made by :func:`make_backend` falls back to
        onnxruntime on the device its name says (``...-cuda`` or CPU).
        """
        if self.made_with is None:
            device = "cuda" if "cuda" in self.name else "cpu"
            return make_backend(bundle, "onnxruntime", device, graph=graph)
        kind, device, options = self.made_with
        options = {k: v for k, v in options.items() if k not in self.graph_options}
        return make_backend(bundle, kind, device, graph=graph, **options)

    def close(self) -> None:
        """Release device memory / sessions. Safe to call twice."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: factory(bundle, device, **options) -> Backend, by backend name.
BackendFactory = Callable[..., Backend]
BACKENDS: dict[str, BackendFactory] = {}


def register_backend(name: str) -> Callable[[BackendFactory], BackendFactory]:
    """Decorator registering ``factory(bundle, device="cpu", **options)`` under ``name``."""

    def wrap(factory: BackendFactory) -> BackendFactory:
        BACKENDS[name] = factory
        return factory

    return wrap


def make_backend(bundle: Bundle, backend: str = "onnxruntime", device: str = "cpu",
                 **options: Any) -> Backend:
    """Create the backend ``backend`` for ``bundle`` on ``device``.

    Args:
        bundle: a loaded bundle.
        backend: a key of :data:`BACKENDS` (e.g. "onnxruntime").
        device: "cpu" or "cuda" (or "cuda:N").
        options: backend-specific keyword arguments (e.g. ``intra_op_threads``, ``graph``).
    """
    # The built-in backends are registered by the package's __init__, which Python runs before
    # any of its modules (this one included) can be imported.
    try:
        factory = BACKENDS[backend]
    except KeyError:
        raise BackendError(f"unknown backend {backend!r}; available: "
                           f"{', '.join(sorted(BACKENDS)) or 'none'}") from None
    known = [name for name in inspect.signature(factory).parameters
             if name not in ("bundle", "device")]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise BackendError(f"backend {backend!r} has no option {', '.join(map(repr, unknown))}; "
                           f"its options: {', '.join(known) or 'none'}")
    made = factory(bundle, device=device, **options)
    made.made_with = (backend, device, dict(options))
    return made


def check_inputs(input_names: list[str], images: Frames,
                 extra_inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The feed of a graph whose inputs are ``input_names`` (frames first): checks the frames'
    dtype and layout, that ``extra_inputs`` name exactly the other inputs and share the batch.
    A device batch is copied to the host (for backends that run there).

    Returns:
        input name -> C-contiguous numpy array.
    """
    images = to_host(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise BackendError(f"backend expects uint8 (B, H, W, 3) frames, got "
                           f"{images.dtype} {images.shape}")
    wanted = list(input_names[1:])
    if sorted(extra_inputs) != sorted(wanted):
        raise BackendError(f"the graph's inputs after the frames are {wanted or 'none'}, got "
                           f"{sorted(extra_inputs) or 'none'}")
    feed = {input_names[0]: np.ascontiguousarray(images)}
    for name in wanted:
        value = np.asarray(extra_inputs[name])
        if value.ndim == 0 or len(value) != len(images):
            raise BackendError(f"input '{name}' has shape {value.shape}; its first axis must be "
                               f"the batch ({len(images)} frames)")
        feed[name] = np.ascontiguousarray(value)
    return feed
