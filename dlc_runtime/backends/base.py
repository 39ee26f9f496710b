"""The backend interface: uint8 NHWC frames in, named numpy arrays out.

A backend only runs a graph. Everything before (decode) and after (writing, tracking) lives in the
pipeline, so a new backend (TensorRT, torch) is one file plus one ``register_backend`` line.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from dlc_runtime.errors import BackendError

if TYPE_CHECKING:
    from dlc_runtime.bundle import Bundle


class Backend(abc.ABC):
    """Runs one graph of a bundle."""

    #: short name, e.g. "onnxruntime-cpu"; recorded in result metadata.
    name: str = "backend"

    @abc.abstractmethod
    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Run the graph.

        Args:
            images: uint8 array (B, H, W, 3), RGB, C-contiguous.

        Returns:
            Output name -> array with the batch dimension first.
        """

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
    # Importing the package registers the built-in backends; done here so that merely importing
    # base.py stays cheap and free of onnxruntime.
    import dlc_runtime.backends  # noqa: F401

    try:
        factory = BACKENDS[backend]
    except KeyError:
        raise BackendError(f"unknown backend {backend!r}; available: "
                           f"{', '.join(sorted(BACKENDS)) or 'none'}") from None
    return factory(bundle, device=device, **options)
