"""The bundle manifest's schema: what ``manifest.yaml`` holds, and its validation.

Dataclasses for each section and :meth:`Manifest.from_dict`, which turns every schema violation
into one :class:`BundleError` line naming the file and the key. Reading and writing bundle
folders is :mod:`dlc_runtime.bundle`'s job (see ``docs/bundle.md`` for the format).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import Any

from dlc_runtime.errors import BundleError

SCHEMA_VERSION = 1
SUPPORTED_SCHEMA_VERSIONS = (1,)
MANIFEST_NAME = "manifest.yaml"
TASKS = ("bottom_up", "top_down", "cond_top_down")
RESIZE_MODES = ("letterbox",)


def _package_version() -> str:
    # importlib.metadata is cheap and does not import the other packages of the distribution.
    try:
        from importlib.metadata import version

        return version("dlc-deploy")
    except Exception:  # not installed (running from a checkout)
        return "0.0.0+unknown"


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


@dataclass
class BatchRange:
    """Batch sizes a graph or engine accepts: ``min <= opt <= max``."""

    min: int = 1
    opt: int = 8
    max: int = 64

    def to_dict(self) -> dict[str, int]:
        return {"min": self.min, "opt": self.opt, "max": self.max}

    @classmethod
    def for_export(cls, batch: int | None = None, max_batch: int = 64) -> BatchRange:
        """The exporters' one rule (docs/bundle.md): a bundle built for ``batch`` frames gets
        ``opt = max = batch``; without one, ``opt = min(8, max_batch)``, ``max = max_batch``."""
        if batch is not None:
            return cls(1, int(batch), int(batch))
        return cls(1, min(8, int(max_batch)), int(max_batch))


@dataclass
class InputSpec:
    """What the pose graph eats. ``height``/``width`` of ``None`` mean dynamic.

    ``network_size`` (height, width) with ``resize: letterbox``: the graph resizes every frame
    inside itself (aspect ratio kept, padded bottom/right) to this size and returns keypoints
    in frame pixels; provenance for the host, which still feeds frames of their own size.
    """

    dtype: str = "uint8"
    layout: str = "NHWC"
    color: str = "RGB"
    height: int | None = None
    width: int | None = None
    batch: BatchRange = field(default_factory=BatchRange)
    network_size: tuple[int, int] | None = None
    resize: str | None = None

    @property
    def dynamic_size(self) -> bool:
        return self.height is None or self.width is None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "dtype": self.dtype,
            "layout": self.layout,
            "color": self.color,
            "height": self.height,
            "width": self.width,
            "batch": self.batch.to_dict(),
        }
        # Written only when set, so manifests without a network size read as before.
        if self.network_size is not None:
            out["network_size"] = [int(v) for v in self.network_size]
        if self.resize is not None:
            out["resize"] = self.resize
        return out


@dataclass
class TensorSpec:
    """A graph input or output. Dynamic axes are strings (``batch``, ``height``, ``width``)."""

    name: str
    dtype: str
    shape: list[int | str]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass
class GraphSpec:
    """One graph file of the bundle, relative to the bundle folder."""

    file: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    opset: int | None = None
    sha256: str | None = None

    def output(self, name: str) -> TensorSpec | None:
        return next((o for o in self.outputs if o.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "opset": self.opset,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "sha256": self.sha256,
        }


@dataclass
class ExporterInfo:
    name: str = "dlc-deploy"
    version: str = field(default_factory=_package_version)

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version}


@dataclass
class Manifest:
    """The content of ``manifest.yaml`` (schema version 1).

    Only what the runtime needs to run is required; provenance fields have defaults so an
    exporter (or a test) can build one in a few lines.
    """

    task: str
    scorer: str
    bodyparts: list[str]
    individuals: list[str]
    graphs: dict[str, GraphSpec]
    input: InputSpec = field(default_factory=InputSpec)
    unique_bodyparts: list[str] = field(default_factory=list)
    multi_animal: bool = False
    # Decoding happens inside the graph; these are kept for provenance and for host-side steps.
    decoder: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    # TensorRT engines with their fingerprints; the TensorRT backend checks them against the GPU.
    engines: list[dict[str, Any]] = field(default_factory=list)
    parity: str | None = None
    exporter: ExporterInfo = field(default_factory=ExporterInfo)
    created: str = field(default_factory=_utc_now)
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (lists, dicts, scalars only) in the key order of ``docs/bundle.md``."""
        return {
            "schema_version": self.schema_version,
            "exporter": self.exporter.to_dict(),
            "created": self.created,
            "task": self.task,
            "scorer": self.scorer,
            "bodyparts": list(self.bodyparts),
            "unique_bodyparts": list(self.unique_bodyparts),
            "individuals": list(self.individuals),
            "multi_animal": bool(self.multi_animal),
            "input": self.input.to_dict(),
            "decoder": dict(self.decoder),
            "graphs": {name: g.to_dict() for name, g in self.graphs.items()},
            "source": dict(self.source),
            "engines": list(self.engines),
            "parity": self.parity,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = MANIFEST_NAME) -> Manifest:
        """Validate and parse a manifest dict; raise :class:`BundleError` naming ``where``."""
        v = _Validator(where)
        if not isinstance(data, dict):
            raise BundleError(f"{where}: expected a YAML mapping, got {type(data).__name__}; "
                              "re-export the bundle")
        version = v.get(data, "schema_version", int)
        if version not in SUPPORTED_SCHEMA_VERSIONS:
            raise BundleError(
                f"{where}: unknown schema_version {version!r} (this dlc_runtime reads "
                f"{', '.join(map(str, SUPPORTED_SCHEMA_VERSIONS))}); upgrade dlc-deploy or "
                "re-export the bundle with a matching version")
        task = v.get(data, "task", str)
        if task not in TASKS:
            raise BundleError(f"{where}: unknown task {task!r} (expected one of {', '.join(TASKS)})"
                              "; re-export the bundle")

        inp = v.get(data, "input", dict)
        batch = v.get(inp, "batch", dict, prefix="input.", default={})
        batch_range = BatchRange(
            min=v.get(batch, "min", int, prefix="input.batch.", default=1),
            opt=v.get(batch, "opt", int, prefix="input.batch.", default=8),
            max=v.get(batch, "max", int, prefix="input.batch.", default=64),
        )
        if not 1 <= batch_range.min <= batch_range.opt <= batch_range.max:
            raise BundleError(f"{where}: input.batch must satisfy 1 <= min <= opt <= max, got "
                              f"{batch_range.to_dict()}; re-export the bundle")
        input_spec = InputSpec(
            dtype=v.get(inp, "dtype", str, prefix="input.", default="uint8"),
            layout=v.get(inp, "layout", str, prefix="input.", default="NHWC"),
            color=v.get(inp, "color", str, prefix="input.", default="RGB"),
            height=v.get(inp, "height", (int, type(None)), prefix="input.", default=None),
            width=v.get(inp, "width", (int, type(None)), prefix="input.", default=None),
            batch=batch_range,
            network_size=_parse_network_size(v, inp),
            resize=v.get(inp, "resize", (str, type(None)), prefix="input.", default=None),
        )
        if input_spec.resize is not None and (input_spec.resize not in RESIZE_MODES
                                              or input_spec.network_size is None):
            raise BundleError(f"{where}: input.resize {input_spec.resize!r} needs "
                              f"input.network_size and one of {', '.join(RESIZE_MODES)}; "
                              "upgrade dlc-deploy or re-export the bundle")
        if (input_spec.dtype, input_spec.layout, input_spec.color) != ("uint8", "NHWC", "RGB"):
            raise BundleError(
                f"{where}: input must be uint8 NHWC RGB, got {input_spec.dtype} "
                f"{input_spec.layout} {input_spec.color}; re-export the bundle")

        graphs_raw = v.get(data, "graphs", dict)
        if not graphs_raw:
            raise BundleError(f"{where}: 'graphs' is empty; re-export the bundle")
        graphs = {name: _parse_graph(v, name, g) for name, g in graphs_raw.items()}

        exporter_raw = v.get(data, "exporter", dict, default={})
        multi_animal = v.get(data, "multi_animal", bool, default=False)
        unique = v.str_list(data, "unique_bodyparts", default=[])
        if unique and not multi_animal:
            # DeepLabCut only has a column slot for unique bodyparts in the multi-animal layout.
            raise BundleError(f"{where}: unique_bodyparts need multi_animal: true (DeepLabCut "
                              "writes them under individual 'single'); re-export the bundle")
        return cls(
            schema_version=version,
            task=task,
            scorer=v.get(data, "scorer", str),
            bodyparts=v.str_list(data, "bodyparts", non_empty=True),
            unique_bodyparts=unique,
            individuals=v.str_list(data, "individuals", non_empty=True),
            multi_animal=multi_animal,
            input=input_spec,
            decoder=v.get(data, "decoder", dict, default={}) or {},
            graphs=graphs,
            source=v.get(data, "source", dict, default={}) or {},
            engines=_parse_engines(v, data),
            parity=v.get(data, "parity", (str, type(None)), default=None),
            exporter=ExporterInfo(
                name=str(exporter_raw.get("name", "unknown")),
                version=str(exporter_raw.get("version", "unknown")),
            ),
            created=str(v.get(data, "created", (str, _dt.datetime), default="")),
        )


_MISSING = object()


class _Validator:
    """Small helpers that turn schema violations into one-line BundleErrors."""

    def __init__(self, where: str) -> None:
        self.where = where

    def get(self, d: dict, key: str, types: type | tuple[type, ...], prefix: str = "",
            default: Any = _MISSING) -> Any:
        if key not in d:
            if default is _MISSING:
                raise BundleError(f"{self.where}: missing required key '{prefix}{key}'; "
                                  "re-export the bundle with dlc-deploy")
            return default
        value = d[key]
        types_t = types if isinstance(types, tuple) else (types,)
        # bool is a subclass of int: do not accept `true` where a number is expected.
        bad_bool = isinstance(value, bool) and bool not in types_t
        if bad_bool or not isinstance(value, types_t):
            names = "/".join("null" if t is type(None) else t.__name__ for t in types_t)
            raise BundleError(f"{self.where}: '{prefix}{key}' must be {names}, got "
                              f"{value!r}; fix the manifest or re-export the bundle")
        return value

    def str_list(self, d: dict, key: str, prefix: str = "", non_empty: bool = False,
                 default: Any = _MISSING) -> list[str]:
        value = self.get(d, key, list, prefix=prefix, default=default)
        if value is None:
            value = []
        if non_empty and not value:
            raise BundleError(f"{self.where}: '{prefix}{key}' is empty; re-export the bundle")
        if not all(isinstance(x, str) for x in value):
            raise BundleError(f"{self.where}: '{prefix}{key}' must be a list of strings; "
                              "re-export the bundle")
        return list(value)


def _parse_network_size(v: _Validator, inp: dict) -> tuple[int, int] | None:
    size = v.get(inp, "network_size", (list, type(None)), prefix="input.", default=None)
    if size is None:
        return None
    if len(size) != 2 or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0
                                 for n in size):
        raise BundleError(f"{v.where}: 'input.network_size' must be [height, width] positive "
                          f"integers, got {size!r}; re-export the bundle")
    return int(size[0]), int(size[1])


def _parse_tensors(v: _Validator, d: dict, key: str, prefix: str) -> list[TensorSpec]:
    tensors = []
    for i, t in enumerate(v.get(d, key, list, prefix=prefix)):
        p = f"{prefix}{key}[{i}]."
        if not isinstance(t, dict):
            raise BundleError(f"{v.where}: '{prefix}{key}[{i}]' must be a mapping; "
                              "re-export the bundle")
        tensors.append(TensorSpec(
            name=v.get(t, "name", str, prefix=p),
            dtype=v.get(t, "dtype", str, prefix=p),
            shape=list(v.get(t, "shape", list, prefix=p)),
        ))
    return tensors


def _parse_graph(v: _Validator, name: str, g: Any) -> GraphSpec:
    prefix = f"graphs.{name}."
    if not isinstance(g, dict):
        raise BundleError(f"{v.where}: 'graphs.{name}' must be a mapping; re-export the bundle")
    return GraphSpec(
        file=v.get(g, "file", str, prefix=prefix),
        opset=v.get(g, "opset", (int, type(None)), prefix=prefix, default=None),
        inputs=_parse_tensors(v, g, "inputs", prefix),
        outputs=_parse_tensors(v, g, "outputs", prefix),
        sha256=_sha256_field(v, g, f"graphs.{name}"),
    )


def _sha256_field(v: _Validator, d: dict, what: str) -> str:
    # Required: without it a corrupted graph or engine would run and give wrong keypoints.
    digest = d.get("sha256")
    if not (isinstance(digest, str) and len(digest) == 64
            and all(c in "0123456789abcdef" for c in digest)):
        raise BundleError(f"{v.where}: '{what}.sha256' must be the file's sha256 (64 hex "
                          f"digits), got {digest!r}; the file cannot be checked, re-export the "
                          "bundle")
    return digest


def _parse_engines(v: _Validator, data: dict) -> list[dict[str, Any]]:
    engines = v.get(data, "engines", (list, type(None)), default=[]) or []
    for i, entry in enumerate(engines):
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            raise BundleError(f"{v.where}: 'engines[{i}]' must be a mapping with a 'file'; "
                              "re-export the bundle")
        _sha256_field(v, entry, f"engines[{i}]")
    return engines
