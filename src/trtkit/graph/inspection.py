"""``trtkit inspect``: what a model takes and returns, and the flags to build it.

For an ONNX file this is the IO table (symbolic dims kept), opsets, producer,
node count and op histogram, parameter count and bytes, and, for each
dynamic input, ready-to-paste ``--minShapes/--optShapes/--maxShapes`` flags.
Weights in external data files are never read (only their sizes from the
tensor shapes), so inspecting a multi-GB model is instant; the data files
must still exist.

Engine files (``.plan``/``.engine``/``.trt``) are handed to
:func:`trtkit.engine.info.inspect_engine`, which returns an object with the
same ``to_json()``/``render()`` methods.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from .onnx_io import io_specs, load_onnx
from ..spec import TensorSpec, format_shapes

if TYPE_CHECKING:  # pragma: no cover
    import onnx

__all__ = ["ModelInfo", "inspect_model", "inspect_onnx", "BUILD_BATCH", "BUILD_SIZE"]

# Defaults for the suggested build flags. Axis 0 is taken to be the batch:
# min 1 / opt 1 / max 8 (opt = 1 tunes kernels for the common online case).
# Other dynamic axes take the size the model's metadata records (Ultralytics
# ``imgsz``; PaddleOCR recognizers, which carry ``character``, are fed H 48 and
# a variable W); without one they get BUILD_SIZE, and the note says it is a placeholder.
BUILD_BATCH = (1, 1, 8)
BUILD_SIZE = 640
PADDLE_REC_HW = ((48, 48, 48), (48, 320, 1280))  # PaddleOCR rec: H 48, W from the crop's aspect ratio


@dataclass(frozen=True)
class ModelInfo:
    """Everything ``trtkit inspect`` reports about one ONNX model."""

    path: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    ir_version: int
    opsets: tuple[tuple[str, int], ...]
    producer: str
    node_count: int
    op_histogram: tuple[tuple[str, int], ...]
    param_count: int
    param_bytes: int
    external_data: tuple[str, ...] = ()
    metadata: tuple[tuple[str, str], ...] = ()
    build_flags: str | None = None
    build_flags_note: str = field(default="")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; shapes are ints with -1 for dynamic dims (``dims`` keeps symbolic names)."""

        def io(spec: TensorSpec) -> dict[str, Any]:
            return {"name": spec.name, "dtype": spec.dtype, "shape": spec.json_shape(), "dims": list(spec.shape)}

        return {
            "format": "onnx",
            "path": self.path,
            "inputs": [io(s) for s in self.inputs],
            "outputs": [io(s) for s in self.outputs],
            "ir_version": self.ir_version,
            "opsets": {domain or "ai.onnx": version for domain, version in self.opsets},
            "producer": self.producer,
            "node_count": self.node_count,
            "op_histogram": dict(self.op_histogram),
            "param_count": self.param_count,
            "param_bytes": self.param_bytes,
            "external_data": list(self.external_data),
            "metadata": dict(self.metadata),
            "build_flags": self.build_flags,
            "build_flags_note": self.build_flags_note,
        }

    def render(self) -> str:
        """The human-readable report ``trtkit inspect`` prints."""
        lines = [f"model: {self.path}"]
        lines.append(
            f"producer: {self.producer or '(unknown)'}   IR version: {self.ir_version}   opsets: "
            + ", ".join(f"{d or 'ai.onnx'} {v}" for d, v in self.opsets)
        )
        lines += ["", _table("inputs", self.inputs), "", _table("outputs", self.outputs), ""]
        ext = f" (in external data: {', '.join(self.external_data)})" if self.external_data else ""
        lines.append(f"parameters: {self.param_count:,} ({_human_bytes(self.param_bytes)}){ext}")
        top = ", ".join(f"{op} {n}" for op, n in self.op_histogram[:12])
        more = f", ... ({len(self.op_histogram) - 12} more op types)" if len(self.op_histogram) > 12 else ""
        lines.append(f"nodes: {self.node_count}   ops: {top}{more}")
        for key, value in self.metadata:
            flat = value.replace("\n", "\\n")  # one line per key, even for multi-line values
            shown = flat if len(flat) <= 80 else f"{flat[:77]}... ({len(value)} chars)"
            lines.append(f"metadata {key}: {shown}")
        lines.append("")
        if self.build_flags:
            lines.append("build with dynamic shapes (" + self.build_flags_note + "):")
            lines.append(f"  trtkit build {self.path} {self.build_flags}")
        else:
            lines.append(f"all input shapes are static; build with: trtkit build {self.path}")
        return "\n".join(lines)


def _table(title: str, specs: tuple[TensorSpec, ...]) -> str:
    rows = [(s.name, s.dtype, s.display_shape()) for s in specs]
    head = ("name", "dtype", "shape")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(3)]
    fmt = "  {:<%d}  {:<%d}  {}" % (widths[0], widths[1])
    out = [f"{title} ({len(specs)}):", fmt.format(*head)]
    out += [fmt.format(*r) for r in rows]
    return "\n".join(out)


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{n} B"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def _tensor_size(tensor: "onnx.TensorProto") -> tuple[int, int]:
    """(element count, bytes) from the shape and dtype alone, so external data is never read."""
    from onnx import helper

    count = math.prod(tensor.dims)
    if tensor.data_type == 8:  # STRING
        return count, sum(len(s) for s in tensor.string_data)
    try:
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    except (KeyError, TypeError, ValueError):
        itemsize = 0
    if tensor.data_type in (22, 23, 25, 26):  # INT4/UINT4/FLOAT4E2M1 variants: two per byte
        return count, (count + 1) // 2
    return count, count * itemsize


def _parameters(graph: "onnx.GraphProto") -> Iterator["onnx.TensorProto"]:
    """Initializers and Constant-node values (PaddlePaddle exports keep weights there), subgraphs included.

    Other attribute tensors (ConstantOfShape's fill value) are not parameters.
    """
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if node.op_type == "Constant" and attr.name == "value":
                yield attr.t
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                yield from _parameters(sub)


def _walk_nodes(graph: "onnx.GraphProto") -> list["onnx.NodeProto"]:
    """All nodes, including those inside If/Loop/Scan subgraphs."""
    nodes = []
    for node in graph.node:
        nodes.append(node)
        for attr in node.attribute:
            subs = [attr.g] if attr.HasField("g") else list(attr.graphs)
            for sub in subs:
                nodes += _walk_nodes(sub)
    return nodes


def _metadata_imgsz(metadata: dict[str, str]) -> tuple[int, int] | None:
    """Ultralytics ``imgsz`` ("[320, 320]" or "640") as (H, W), else None."""
    import ast

    text = metadata.get("imgsz")
    if text is None:
        return None
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None
    sizes = [value, value] if isinstance(value, int) else list(value) if isinstance(value, (list, tuple)) else []
    if len(sizes) != 2 or not all(isinstance(v, int) and v > 0 for v in sizes):
        return None
    return sizes[0], sizes[1]


def _hw_ranges(metadata: dict[str, str]) -> tuple[tuple[tuple[int, int, int], tuple[int, int, int]] | None, str]:
    """(H range, W range) from metadata for NCHW inputs, and where they came from; (None, "") when unknown."""
    imgsz = _metadata_imgsz(metadata)
    if imgsz:
        h, w = imgsz
        return ((h, h, h), (w, w, w)), f"H x W {h}x{w} from the model's metadata imgsz"
    if "character" in metadata:
        (h, _, _), (wlo, wopt, whi) = PADDLE_REC_HW
        return PADDLE_REC_HW, (f"a PaddleOCR recognizer (metadata 'character'): H {h}, W {wlo}..{whi} "
                               f"(opt {wopt}) as PaddleOCR feeds text crops")
    return None, ""


def _dim_range(spec: TensorSpec, axis: int, hw: Any) -> tuple[int, int, int]:
    dim = spec.shape[axis]
    if isinstance(dim, int):
        return dim, dim, dim
    if axis == 0:
        return BUILD_BATCH
    if hw is not None and spec.rank == 4 and axis in (2, 3):
        return hw[axis - 2]
    return BUILD_SIZE, BUILD_SIZE, BUILD_SIZE


def _flags(inputs: tuple[TensorSpec, ...], metadata: dict[str, str]) -> tuple[str | None, str]:
    dynamic = [s for s in inputs if s.is_dynamic]
    if not dynamic:
        return None, ""
    lo, mid, hi = BUILD_BATCH
    hw, source = _hw_ranges(metadata)
    ranges = {s.name: [_dim_range(s, axis, hw) for axis in range(s.rank)] for s in dynamic}
    note = f"dynamic axis 0 taken as the batch: min {lo} opt {mid} max {hi}"
    others = [(s, a) for s in dynamic for a in s.dynamic_axes if a > 0]
    covered = hw is not None and all(s.rank == 4 and a in (2, 3) for s, a in others)
    if others and covered:
        note += f"; {source}"
    elif others:
        note += (f"; the other dynamic axes get {BUILD_SIZE} as a PLACEHOLDER (the model records no input size): "
                 "replace it with your data's sizes")
    shapes = [{name: tuple(r[k] for r in dims) for name, dims in ranges.items()} for k in range(3)]
    flags = (f"--minShapes={format_shapes(shapes[0])} --optShapes={format_shapes(shapes[1])} "
             f"--maxShapes={format_shapes(shapes[2])}")
    return flags, note


def inspect_onnx(path: str | os.PathLike[str]) -> ModelInfo:
    """Inspect one ONNX file without reading its external weight data."""
    model = load_onnx(path, external_data=False)
    inputs, outputs = io_specs(model)
    nodes = _walk_nodes(model.graph)
    count = nbytes = 0
    external: list[str] = []
    for tensor in _parameters(model.graph):
        n, b = _tensor_size(tensor)
        count, nbytes = count + n, nbytes + b
        if tensor.data_location == 1:
            loc = next((e.value for e in tensor.external_data if e.key == "location"), "")
            if loc and loc not in external:
                external.append(loc)
    flags, note = _flags(inputs, {p.key: p.value for p in model.metadata_props})
    producer = " ".join(p for p in (model.producer_name, model.producer_version) if p)
    return ModelInfo(
        path=str(path),
        inputs=inputs,
        outputs=outputs,
        ir_version=int(model.ir_version),
        opsets=tuple((o.domain, int(o.version)) for o in model.opset_import),
        producer=producer,
        node_count=len(nodes),
        op_histogram=tuple(Counter(n.op_type for n in nodes).most_common()),
        param_count=count,
        param_bytes=nbytes,
        external_data=tuple(external),
        metadata=tuple((p.key, p.value) for p in model.metadata_props),
        build_flags=flags,
        build_flags_note=note,
    )


def inspect_model(path: str | os.PathLike[str]) -> Any:
    """Inspect an ONNX model (:class:`ModelInfo`) or a TensorRT engine (``trtkit.engine.info``).

    A file with an engine suffix must pass the same container check ``trtkit run`` applies
    (:func:`trtkit.engine.plan_file.read_engine_file`); an ONNX model renamed to ``.plan`` is
    refused with a rename hint rather than inspected as ONNX, so ``inspect`` and ``run`` agree.
    """
    from ..backends import ENGINE_SUFFIXES

    if Path(path).suffix.lower() in ENGINE_SUFFIXES:
        from ..engine.info import inspect_engine

        return inspect_engine(path)
    return inspect_onnx(path)
