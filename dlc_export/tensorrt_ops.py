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

import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from dlc_export.onnx_export import ExportError

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


# Ops supported since before TensorRT 8.4 with no caveat worth a line.
_PLAIN = """
Abs Acos Acosh Add ArgMax ArgMin Asin Asinh Atan Atanh BatchNormalization Ceil Celu Clip Concat
Constant ConstantOfShape Cos Cosh DepthToSpace Div Elu Equal Erf Exp Expand Flatten Floor Gemm
GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual HardSigmoid Identity
ImageScaler IsNaN LRN LeakyRelu Less LessOrEqual Log LogSoftmax LpNormalization MatMul Max Mean
Min Mul Neg PRelu ParametricSoftplus Pow RandomUniform RandomUniformLike Relu Reshape Round
ScaledTanh Scan Scatter ScatterElements Selu Shape Sigmoid Sign Sin Sinh Size Softmax Softplus
Softsign SpaceToDepth Split Sqrt Sub Sum Tan Tanh ThresholdedRelu Tile Transpose Where
""".split()

_INDICES_NOTE = ("int64 indices are narrowed to int32 before TensorRT 10 (values past 2^31 "
                 "clamp); TensorRT 10 keeps int64")

SUPPORTED_OPS: dict[str, OpSupport] = {
    **{op: OpSupport() for op in _PLAIN},
    # -- caveats on ops present since before 8.4 --------------------------------------------
    "And": OpSupport(note="BOOL inputs only"),
    "Or": OpSupport(note="BOOL inputs only"),
    "Xor": OpSupport(note="BOOL inputs only"),
    "Not": OpSupport(note="BOOL input only"),
    "AveragePool": OpSupport(note="2-D or 3-D pooling only; dilations must be 1"),
    "MaxPool": OpSupport(note="2-D or 3-D pooling only; dilations must be 1; the optional "
                              "Indices output is not supported"),
    "LpPool": OpSupport(note="dilations must be 1"),
    "Cast": OpSupport(note="UINT8 converts only to or from FLOAT/FLOAT16; DOUBLE is narrowed "
                           "to FLOAT"),
    "Conv": OpSupport(note="2-D or 3-D; TensorRT 8.x wants the weights W as an initializer"),
    "ConvTranspose": OpSupport(note="2-D or 3-D; TensorRT 8.x wants the weights W as an "
                                    "initializer"),
    "CumSum": OpSupport(note="axis must be a build-time constant"),
    "DequantizeLinear": OpSupport(note="x_zero_point must be zero (explicit quantization)"),
    "QuantizeLinear": OpSupport(note="y_zero_point must be zero (explicit quantization)"),
    "Dropout": OpSupport(note="inference only: is_training must be a constant false"),
    "Einsum": OpSupport(note="TensorRT 8.x: no ellipsis, diagonal or broadcasting"),
    "EyeLike": OpSupport(note="input must have static dimensions"),
    "Gather": OpSupport(note=_INDICES_NOTE),
    "GatherElements": OpSupport(note=_INDICES_NOTE),
    "GatherND": OpSupport(note=_INDICES_NOTE),
    "GRU": OpSupport(note="bidirectional: both directions must use the same activations"),
    "LSTM": OpSupport(note="bidirectional: same activations both ways; input_forget and "
                           "layout must be 0"),
    "RNN": OpSupport(note="bidirectional: both directions must use the same activations"),
    "If": OpSupport(note="both branches' outputs must have the same rank and distinct names"),
    "Loop": OpSupport(note="scan outputs need a fixed length; loop-carried shapes must not "
                           "change between iterations"),
    "InstanceNormalization": OpSupport(note="TensorRT 8.x: scale and B must be initializers, "
                                            "input rank 3 to 5"),
    "Pad": OpSupport(note="pads should be constant for the best engines"),
    "Range": OpSupport(note="TensorRT 8.x: floating-point start/limit/delta must be constants"),
    "Resize": OpSupport(note="coordinate modes half_pixel, pytorch_half_pixel, "
                             "tf_half_pixel_for_nn, asymmetric, align_corners (not "
                             "tf_crop_and_resize); modes nearest and linear; no antialias; "
                             "keep_aspect_ratio_policy stretch only"),
    "Upsample": OpSupport(note="deprecated ONNX op; same limits as Resize"),
    "ReverseSequence": OpSupport(note="TensorRT 8.x: static input shapes only"),
    "ScatterND": OpSupport(note="reduction must be 'none'"),
    "Slice": OpSupport(note="TensorRT 8.x: axes must be an initializer"),
    "Squeeze": OpSupport(note="axes must resolve to a constant (dynamic axes from 10.7)"),
    "Unsqueeze": OpSupport(note="axes must resolve to a constant (dynamic axes from 10.7)"),
    "TopK": OpSupport(note="K must be a build-time constant and below 3840; sorted must be 1"),
    "Shrink": OpSupport(),
    **{op: OpSupport(note="axes must be an initializer (ONNX opset 18 turned axes into an "
                          "input: keep it constant)")
       for op in ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax",
                  "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare")},
    # -- added in TensorRT 8.5 (onnx-tensorrt changelog) ------------------------------------
    "GridSample": OpSupport(since="8.5", note="4-D input only; FP32/FP16"),
    "RoiAlign": OpSupport(since="8.5", note="imported through TensorRT's ROIAlign_TRT plugin: "
                                            "the plugin library must be loaded "
                                            "(init_libnvinfer_plugins); FP32/FP16"),
    "Mod": OpSupport(since="8.5"),
    "Trilu": OpSupport(since="8.5"),
    "NonZero": OpSupport(since="8.5", note="data-dependent output shape: forces a device sync "
                                           "and dynamic output allocation, avoid on the hot "
                                           "path"),
    "NonMaxSuppression": OpSupport(since="8.5", note="native from 8.5 (experimental plugin "
                                                     "before); max_output_boxes_per_class and "
                                                     "the thresholds should be constants; "
                                                     "output is data-dependent like NonZero"),
    "MeanVarianceNormalization": OpSupport(since="8.5"),
    "RandomNormal": OpSupport(since="8.5", note="seed is ignored"),
    "RandomNormalLike": OpSupport(since="8.5", note="seed is ignored"),
    "OneHot": OpSupport(since="8.5", note="depth must be a build-time constant"),
    "Reciprocal": OpSupport(since="8.5"),
    "HardSwish": OpSupport(since="8.5"),
    # -- absent from the 8.5 matrix, listed in the TensorRT 10 one ---------------------------
    "BlackmanWindow": OpSupport(since="10.0"),
    "HammingWindow": OpSupport(since="10.0"),
    "HannWindow": OpSupport(since="10.0"),
    "CastLike": OpSupport(since="10.0"),
    "DeformConv": OpSupport(since="10.0", note="1-D or 2-D spatial input; symmetric pads"),
    "Gelu": OpSupport(since="10.0"),
    "GroupNormalization": OpSupport(since="10.0"),
    "LayerNormalization": OpSupport(since="10.0", note="only the first output Y"),
    "Hardmax": OpSupport(since="10.0", note="the axis dimension must be a build-time constant"),
    "IsInf": OpSupport(since="10.0"),
    "Mish": OpSupport(since="10.0"),
    "STFT": OpSupport(since="10.0", note="frame_step and window must be initializers; real "
                                         "input only"),
    "Attention": OpSupport(since="10.14", note="4-D Q/K/V; no KV-cache inputs or outputs"),
    "RMSNormalization": OpSupport(since="10.15"),
    "RotaryEmbedding": OpSupport(since="10.15"),
    "TensorScatter": OpSupport(since="10.15"),
}

#: Standard ONNX ops the parser has no importer for (documented as "N"); named for clearer
#: errors. Anything neither here nor in SUPPORTED_OPS is refused the same way.
UNSUPPORTED_OPS: frozenset[str] = frozenset("""
AffineGrid Bernoulli BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor CenterCropPad Col2Im
Compress ConcatFromSequence ConvInteger DFT Det DynamicQuantizeLinear ImageDecoder MatMulInteger
MaxRoiPool MaxUnpool MelWeightMatrix Multinomial NegativeLogLikelihoodLoss Optional
OptionalGetElement OptionalHasElement QLinearConv QLinearMatMul RegexFullMatch SequenceAt
SequenceConstruct SequenceEmpty SequenceErase SequenceInsert SequenceLength SequenceMap
SoftmaxCrossEntropyLoss SplitToSequence StringConcat StringNormalizer StringSplit TfIdfVectorizer
Unique
""".split())


class UnsupportedOperatorError(ExportError):
    """The graph holds operators TensorRT's ONNX parser cannot import."""


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in str(version).split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def max_opset(tensorrt_version: str) -> int:
    """Highest documented ONNX opset for ``tensorrt_version`` (the nearest listed release)."""
    target = _version_tuple(tensorrt_version)
    known = sorted(MAX_OPSET, key=_version_tuple)
    best = known[0]
    for version in known:
        if _version_tuple(version) <= target:
            best = version
    return MAX_OPSET[best]


def is_supported(op_type: str, domain: str = "",
                 tensorrt_version: str = DEFAULT_TENSORRT_VERSION) -> bool:
    """True when TensorRT ``tensorrt_version``'s ONNX parser imports ``op_type``."""
    if domain not in STANDARD_DOMAINS:
        return False
    support = SUPPORTED_OPS.get(op_type)
    if support is None:
        return False
    return support.since is None or _version_tuple(support.since) <= _version_tuple(
        tensorrt_version)


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
