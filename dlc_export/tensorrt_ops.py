"""Which ONNX operators TensorRT's ONNX parser imports, and a static check of a graph against it.

The table is our own summary of the onnx-tensorrt operator support matrix (``docs/operators.md``
of onnx/onnx-tensorrt, read at its TensorRT 8.4, 8.5 and 10.15 versions, plus its changelog); the
human-readable version with the caveats is ``docs/tensorrt_operators.md`` (a test keeps the two in
sync). It runs at every ONNX export, without TensorRT installed, so a graph that TensorRT cannot
import is refused on the machine that exports it, in one line, instead of failing later in a
parser log on the analysis machine.

The check is conservative in one direction only: an operator missing from the table is refused;
an operator in the table can still fail inside TensorRT for a reason a static walk cannot see
(types, shapes). TensorRT's own parser (``dlc_export.tensorrt_build``) stays the final word.
Caveats that the walk *can* see (Resize modes, TopK's K, a uint8 input not cast first, ...) come
back as warnings in the report and are logged, because they depend on the TensorRT version.

Example::

    report = check_tensorrt_operators("bundle/pose.onnx")   # raises UnsupportedOperatorError
    print(report.summary())
"""
from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from dlc_export.errors import ExportError

log = logging.getLogger(__name__)

#: The TensorRT version the check targets by default: the oldest release we build engines for.
DEFAULT_TENSORRT_VERSION = "10.0"

#: Highest ONNX opset each TensorRT line documents (onnx-tensorrt docs/operators.md headers).
MAX_OPSET = {"8.4": 13, "8.5": 17, "8.6": 17, "10.0": 20, "10.15": 24}

#: ONNX domains the parser imports as standard operators (anything else needs a plugin).
STANDARD_DOMAINS = ("", "ai.onnx")


@dataclass(frozen=True)
class OpSupport:
    """One operator TensorRT's ONNX parser imports.

    Args:
        since: first TensorRT version whose parser imports it (None: already in the 8.4
            matrix, the oldest this table covers).
        note: a caveat worth knowing before exporting (empty when there is none).
    """

    since: str | None = None
    note: str = ""


def _load_tables() -> tuple[dict[str, OpSupport], frozenset[str]]:
    data = json.loads((Path(__file__).parent / "tensorrt_operators.json")
                      .read_text(encoding="utf-8"))
    return ({op: OpSupport(**entry) for op, entry in data["supported"].items()},
            frozenset(data["unsupported"]))


#: Operators the parser imports, and standard ONNX ops it has no importer for (documented as
#: "N"; named for clearer errors: anything in neither is refused the same way). The table is
#: data (``tensorrt_operators.json``), one entry per operator.
SUPPORTED_OPS, UNSUPPORTED_OPS = _load_tables()


class UnsupportedOperatorError(ExportError):
    """The graph holds operators TensorRT's ONNX parser cannot import."""


def _version_tuple(version: str) -> tuple[int, ...]:
    """"10.15.1.post1" -> (10, 15, 1): the first three parts, digits only."""
    return tuple(int("".join(ch for ch in piece if ch.isdigit()) or 0)
                 for piece in str(version).split(".")[:3])


def max_opset(tensorrt_version: str) -> int:
    """Highest documented ONNX opset for ``tensorrt_version`` (the nearest listed release)."""
    target = _version_tuple(tensorrt_version)
    best = max((v for v in MAX_OPSET if _version_tuple(v) <= target), key=_version_tuple,
               default=min(MAX_OPSET, key=_version_tuple))  # older than all: the oldest
    return MAX_OPSET[best]


def is_supported(op_type: str, domain: str = "",
                 tensorrt_version: str = DEFAULT_TENSORRT_VERSION) -> bool:
    """True when TensorRT ``tensorrt_version``'s ONNX parser imports ``op_type``."""
    support = SUPPORTED_OPS.get(op_type) if domain in STANDARD_DOMAINS else None
    return support is not None and (support.since is None or _version_tuple(support.since)
                                    <= _version_tuple(tensorrt_version))


@dataclass
class TensorRTOpReport:
    """What the static check saw.

    Attributes:
        op_counts: "Op" (or "domain::Op") -> number of nodes, subgraphs included.
        warnings: caveats found (they depend on the TensorRT version; the build will tell).
        opset: the graph's default-domain opset.
        tensorrt_version: the TensorRT version checked against.
    """

    op_counts: dict[str, int]
    warnings: list[str] = field(default_factory=list)
    opset: int | None = None
    tensorrt_version: str = DEFAULT_TENSORRT_VERSION

    def summary(self) -> str:
        ops = ", ".join(f"{op} x{n}" for op, n in sorted(self.op_counts.items()))
        extra = f"; {len(self.warnings)} warning(s)" if self.warnings else ""
        return (f"{sum(self.op_counts.values())} nodes, {len(self.op_counts)} op types, all "
                f"imported by TensorRT >= {self.tensorrt_version}{extra}: {ops}")


# ----------------------------------------------------------------------------------------------
# Graph walk
# ----------------------------------------------------------------------------------------------


@dataclass
class _Seen:
    node: onnx.NodeProto
    where: str  # "" for the main graph, else "If '/x' then_branch > ..." for readability
    constants: frozenset[str]  # initializers and Constant outputs visible to this node


def _graph_constants(graph: onnx.GraphProto, outer: frozenset[str]) -> frozenset[str]:
    names = set(outer)
    names.update(init.name for init in graph.initializer)
    names.update(init.values.name for init in graph.sparse_initializer)
    names.update(out for node in graph.node if node.op_type == "Constant" for out in node.output)
    return frozenset(names)


def _walk(graph: onnx.GraphProto, functions: dict[tuple[str, str], onnx.FunctionProto],
          where: str = "", outer: frozenset[str] = frozenset(),
          expanding: tuple[tuple[str, str], ...] = ()) -> Iterator[_Seen]:
    """Yields every node of ``graph``, its subgraphs (If/Loop/Scan) and local functions."""
    constants = _graph_constants(graph, outer)
    for node in graph.node:
        key = (node.domain, node.op_type)
        if key in functions and key not in expanding:
            # A model-local function: the parser inlines it, so its body is what must import.
            body = functions[key]
            inner = onnx.GraphProto(node=body.node)
            yield from _walk(inner, functions, f"{where}function {node.op_type} > ", constants,
                             expanding + (key,))
            continue
        yield _Seen(node, where, constants)
        for attr in node.attribute:
            label = f"{where}{node.op_type} '{node.name}' {attr.name} > "
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _walk(attr.g, functions, label, constants, expanding)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _walk(sub, functions, label, constants, expanding)


def _attr(node: onnx.NodeProto, name: str, default=None):
    for attr in node.attribute:
        if attr.name == name:
            value = onnx.helper.get_attribute_value(attr)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _caveats(seen: _Seen, tensorrt_version: str) -> Iterable[str]:
    """Static caveat checks for the few ops where an attribute decides whether TensorRT parses."""
    node, op = seen.node, seen.node.op_type
    label = f"{op} '{node.name or '?'}'"
    if op in ("Resize", "Upsample"):
        mode = _attr(node, "mode", "nearest")
        if mode not in ("nearest", "linear"):
            yield f"{label}: mode {mode!r} is not in TensorRT's documented Resize modes " \
                  "(nearest, linear)"
        coord = _attr(node, "coordinate_transformation_mode", "half_pixel")
        if coord == "tf_crop_and_resize":
            yield f"{label}: coordinate_transformation_mode tf_crop_and_resize is not supported"
        if _attr(node, "antialias", 0):
            yield f"{label}: antialias is not supported by TensorRT"
        policy = _attr(node, "keep_aspect_ratio_policy", "stretch")
        if policy != "stretch":
            yield f"{label}: keep_aspect_ratio_policy {policy!r} (TensorRT: stretch only)"
    elif op == "TopK":
        if len(node.input) > 1 and node.input[1] not in seen.constants:
            yield f"{label}: K is computed at run time; TensorRT needs a build-time constant"
        if _attr(node, "sorted", 1) != 1:
            yield f"{label}: sorted=0 is not supported by TensorRT"
    elif op == "MaxPool":
        if len(node.output) > 1 and node.output[1]:
            yield f"{label}: the Indices output is not supported by TensorRT"
    elif op == "ScatterND":
        if _attr(node, "reduction", "none") != "none":
            yield f"{label}: reduction {_attr(node, 'reduction')!r} is not supported"
    elif op == "LayerNormalization":
        if any(node.output[1:]):
            yield f"{label}: only the first output (Y) is supported by TensorRT"
    elif op in ("Squeeze", "Unsqueeze") and _version_tuple(tensorrt_version) < (10, 7):
        if len(node.input) > 1 and node.input[1] not in seen.constants:
            yield f"{label}: axes computed at run time need TensorRT >= 10.7"


def _uint8_input_caveats(graph: onnx.GraphProto) -> Iterable[str]:
    """TensorRT takes UINT8 only at the network boundary and converts it only to FLOAT/FLOAT16:
    a uint8 input should go straight into a Cast (permute after the cast, not before)."""
    for inp in graph.input:
        if inp.type.tensor_type.elem_type != onnx.TensorProto.UINT8:
            continue
        for node in graph.node:
            if inp.name in node.input and not (
                    node.op_type == "Cast" and _attr(node, "to") in (onnx.TensorProto.FLOAT,
                                                                     onnx.TensorProto.FLOAT16)):
                yield (f"uint8 input '{inp.name}' feeds {node.op_type} '{node.name}': TensorRT "
                       "converts UINT8 only with a Cast to float32/float16, so cast first")


def _load(model: onnx.ModelProto | str | os.PathLike[str]) -> tuple[onnx.ModelProto, str]:
    if isinstance(model, onnx.ModelProto):
        return model, "ONNX graph"
    path = Path(model)
    # Only the structure matters: never pull gigabytes of external weights into memory.
    return onnx.load(str(path), load_external_data=False), path.name


def check_tensorrt_operators(model: onnx.ModelProto | str | os.PathLike[str], *,
                             tensorrt_version: str = DEFAULT_TENSORRT_VERSION,
                             where: str | None = None) -> TensorRTOpReport:
    """Refuses a graph holding operators TensorRT's ONNX parser cannot import.

    Args:
        model: an ONNX model or the path of a ``.onnx`` file.
        tensorrt_version: the TensorRT release to check against (ops added later are refused).
        where: name for messages (default: the file name).

    Returns:
        A :class:`TensorRTOpReport` (op counts and caveat warnings, which are also logged).

    Raises:
        UnsupportedOperatorError: one line naming each unsupported op type with its count and
            the first node's name.
    """
    proto, default_where = _load(model)
    where = where or default_where
    functions = {(f.domain, f.name): f for f in proto.functions}
    counts: Counter[str] = Counter()
    bad: dict[str, list[str]] = {}
    warnings: list[str] = []
    for seen in _walk(proto.graph, functions):
        node = seen.node
        key = node.op_type if node.domain in STANDARD_DOMAINS else f"{node.domain}::{node.op_type}"
        counts[key] += 1
        if not is_supported(node.op_type, node.domain, tensorrt_version):
            bad.setdefault(key, []).append(f"{seen.where}{node.name or '(unnamed)'}")
        else:
            warnings.extend(_caveats(seen, tensorrt_version))
    warnings.extend(_uint8_input_caveats(proto.graph))

    opset = next((o.version for o in proto.opset_import if o.domain in STANDARD_DOMAINS), None)
    if opset is not None and opset > max_opset(tensorrt_version):
        warnings.append(f"opset {opset} is above the {max_opset(tensorrt_version)} that TensorRT "
                        f"{tensorrt_version} documents; export with a lower opset")

    if bad:
        parts = []
        for key, nodes in sorted(bad.items()):
            op = key.split("::")[-1]
            why = ""
            if "::" in key:
                why = " [custom domain: needs a TensorRT plugin]"
            elif op in SUPPORTED_OPS:
                why = f" [needs TensorRT >= {SUPPORTED_OPS[op].since}]"
            first = nodes[0] if len(nodes) == 1 else f"{nodes[0]}, ..."
            parts.append(f"{key} x{len(nodes)} (node {first}){why}")
        raise UnsupportedOperatorError(
            f"{where}: TensorRT {tensorrt_version}'s ONNX parser cannot import "
            f"{len(bad)} operator type(s): {'; '.join(parts)}; change the model or export "
            "with check_tensorrt=False (ONNX Runtime only, no --format tensorrt)")
    for message in warnings:
        log.warning("%s: TensorRT caveat: %s", where, message)
    return TensorRTOpReport(dict(counts), warnings, opset, tensorrt_version)


__all__ = ["DEFAULT_TENSORRT_VERSION", "OpSupport", "SUPPORTED_OPS", "UNSUPPORTED_OPS",
           "TensorRTOpReport", "UnsupportedOperatorError", "check_tensorrt_operators",
           "is_supported", "max_opset"]
