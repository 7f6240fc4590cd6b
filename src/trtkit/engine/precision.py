"""Which precision a build uses, and how: builder flags or a converted graph.

TensorRT 10 builds *weakly typed* networks by default: ``--fp16``/``--bf16``/``--int8``
are builder flags that let TensorRT pick lower-precision kernels per layer.
TensorRT 11 and TensorRT-RTX build *strongly typed* networks only: each tensor
has the type the ONNX graph gives it, and the precision flags are gone. There,

- ``fp16`` converts the graph with onnxconverter-common's ``float16`` converter
  (inputs/outputs stay float32, numerically sensitive ops stay float32, see
  ``KEEP_FP32_OPS``), then builds it strongly typed;
- ``int8`` needs a graph with QuantizeLinear/DequantizeLinear nodes (explicit
  quantization): make one with ``trtkit quantize``;
- ``bf16`` and ``best`` have no graph conversion in trtkit, and say so.

Nothing is ignored silently: every refusal raises :class:`BuildError` with the fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._optional import require
from ..errors import BuildError

if TYPE_CHECKING:  # pragma: no cover
    import onnx

__all__ = ["PrecisionPlan", "plan_precision", "has_qdq", "convert_to_fp16", "KEEP_FP32_OPS", "QDQ_INT8"]

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
# The recorded precision of a Q/DQ graph built with or without --int8: INT8 is used either way,
# so "fp32" would misreport it.
QDQ_INT8 = "int8 (explicit Q/DQ)"

# Ops kept in float32 by the FP16 conversion, on top of onnxconverter-common's own
# DEFAULT_OP_BLOCK_LIST (Resize, Range, TopK, NonMaxSuppression, Min/Max, CumSum...).
# Why these: they overflow or lose most of their bits in FP16. Exp/Pow overflow past
# 65504; ReduceMean/ReduceSum accumulate many terms (LayerNorm variance); Sqrt/
# Reciprocal/Log of small values underflow; Softmax/LogSoftmax over long axes
# (attention, CTC heads with 6625 classes) lose probability mass; Erf is GELU's core.
# TensorRT 10's weakly typed FP16 mode keeps the same ops in FP32 on its own.
KEEP_FP32_OPS = (
    "Exp",
    "Pow",
    "Log",
    "Sqrt",
    "Reciprocal",
    "ReduceMean",
    "ReduceSum",
    "ReduceSumSquare",
    "ReduceL2",
    "ReduceLogSumExp",
    "LayerNormalization",
    "InstanceNormalization",
    "GroupNormalization",
    "Softmax",
    "LogSoftmax",
    "Erf",
)


@dataclass(frozen=True)
class PrecisionPlan:
    """How one build reaches the requested precision."""

    precision: str  # what is built (recorded in the summary and sidecar), e.g. "fp16" or QDQ_INT8
    strongly_typed: bool  # create the network with NetworkDefinitionCreationFlag.STRONGLY_TYPED
    builder_flags: tuple[str, ...] = ()  # BuilderFlag names (weakly typed TensorRT 10 only)
    convert: str | None = None  # "fp16": convert the ONNX graph before parsing
    notes: tuple[str, ...] = ()  # said to the user, so nothing is silent


def has_qdq(model: "onnx.ModelProto") -> bool:
    """True when the graph is explicitly quantized (has QuantizeLinear/DequantizeLinear nodes)."""
    return any(node.op_type in QDQ_OPS for node in model.graph.node)


def _need_qdq(precision: str, backend: str) -> BuildError:
    return BuildError(
        f"--{precision} on {backend} needs an explicitly quantized ONNX graph (QuantizeLinear/DequantizeLinear "
        "nodes), and this model has none. trtkit builds INT8 by explicit quantization only (implicit "
        "calibration is deprecated in TensorRT 10 and gone in TensorRT 11/RTX); make a Q/DQ model first: trtkit quantize MODEL.onnx --calib CALIB_DIR_OR.npz -o model.qdq.onnx, "
        f"then build that with --{precision if precision == 'int8' else 'int8'}"
    )


def _plan_strongly_typed(precision: str, backend: str, qdq: bool) -> PrecisionPlan:
    """TensorRT 11 / TensorRT-RTX: precision is whatever the graph says."""
    if precision == "fp32":
        if qdq:
            return PrecisionPlan(QDQ_INT8, True, notes=(
                "the graph has Q/DQ nodes: INT8 is used where they say so (strongly typed build)",))
        return PrecisionPlan(precision, True)
    if precision == "fp16":
        return PrecisionPlan(
            precision,
            True,
            convert="fp16",
            notes=(
                f"{backend} builds strongly typed networks: converting the graph to FP16 with onnxconverter-common "
                f"(inputs/outputs stay FP32; kept in FP32: {', '.join(KEEP_FP32_OPS[:6])}... and its default block list)",
            ),
        )
    if precision == "int8":
        if not qdq:
            raise _need_qdq(precision, backend)
        return PrecisionPlan(QDQ_INT8, True, notes=("INT8 from the graph's Q/DQ nodes (explicit quantization)",))
    if precision == "bf16":
        raise BuildError(
            f"--bf16 on {backend}: networks are strongly typed there, so BF16 must come from the ONNX graph, and "
            "trtkit has no BF16 graph conversion (onnxconverter-common converts to FP16 only). Use --fp16, or export "
            "the model in bfloat16 from your framework (e.g. model.to(torch.bfloat16) before export) and build that graph"
        )
    raise BuildError(
        f"--best on {backend}: there are no precision builder flags to turn on (networks are strongly typed). "
        "Pick the graph's precision instead: --fp16 (graph conversion), or `trtkit quantize` then --int8"
    )


def _plan_weakly_typed(precision: str, backend: str, qdq: bool) -> PrecisionPlan:
    """TensorRT 10: builder flags; TensorRT chooses per layer among the allowed precisions."""
    if precision == "fp32":
        if qdq:
            return PrecisionPlan(QDQ_INT8, False, ("INT8",), notes=("the graph has Q/DQ nodes: INT8 builder flag set for them",))
        return PrecisionPlan(precision, False)
    if precision in ("fp16", "bf16"):
        return PrecisionPlan(precision, False, (precision.upper(),))
    if precision == "int8":
        if not qdq:
            raise _need_qdq(precision, backend)
        return PrecisionPlan(QDQ_INT8, False, ("INT8",))
    # best: every precision TensorRT 10 can pick by itself. INT8 without Q/DQ would need a calibrator.
    if qdq:
        return PrecisionPlan(precision, False, ("FP16", "BF16", "INT8"))
    return PrecisionPlan(
        precision,
        False,
        ("FP16", "BF16"),
        notes=("--best: FP16+BF16 enabled; INT8 is not, because the graph has no Q/DQ nodes (run `trtkit quantize` for INT8)",),
    )


def plan_precision(precision: str, *, backend: str, strongly_typed_only: bool, qdq: bool) -> PrecisionPlan:
    """Decide flags / graph conversion for ``precision`` on a backend; raise when it cannot be done."""
    if strongly_typed_only:
        return _plan_strongly_typed(precision, backend, qdq)
    return _plan_weakly_typed(precision, backend, qdq)


def _casts_feeding_blocked(model: "onnx.ModelProto", blocked: set[str]) -> list[str]:
    """Cast nodes whose every consumer stays FP32.

    Why: onnxconverter-common 1.16 retypes such a Cast's output to FP16 while its ``to``
    attribute still says FP32 (e.g. YOLOv8's Cast -> Range), which makes an invalid graph.
    Keeping those Casts out of the conversion is the library's own mechanism (node_block_list).
    """
    consumers: dict[str, list[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.op_type)
    return [
        node.name
        for node in model.graph.node
        if node.op_type == "Cast" and node.name
        and all(op in blocked for out in node.output for op in consumers.get(out, ["(graph output)"]))
    ]


def convert_to_fp16(model: "onnx.ModelProto") -> "onnx.ModelProto":
    """FP16 copy of ``model`` with FP32 inputs/outputs, checked with ONNX's strict shape inference."""
    onnx = require("onnx")
    float16 = require("onnxconverter_common", purpose="--fp16 on strongly typed TensorRT").float16
    import warnings

    blocked = set(float16.DEFAULT_OP_BLOCK_LIST) | set(KEEP_FP32_OPS)
    node_block = _casts_feeding_blocked(model, blocked)
    with warnings.catch_warnings():
        # the converter warns once per weight it clamps into FP16 range; hundreds of lines, no action possible
        warnings.simplefilter("ignore", UserWarning)
        converted = float16.convert_float_to_float16(
            model, keep_io_types=True, op_block_list=sorted(blocked), node_block_list=node_block
        )
    try:
        onnx.checker.check_model(converted, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise BuildError(
            f"converting the graph to FP16 produced an invalid ONNX graph ({str(exc).splitlines()[0][:300]}); "
            "build it in FP32, or export the model in FP16 from your framework and build that graph"
        ) from None
    return converted
