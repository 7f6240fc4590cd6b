"""Graph rewrites that let a static-shape ONNX graph run at other shapes.

Exporters often bake the export shape into constants: ``Reshape(x, [1, -1, 4])``
or ``Resize(x, sizes=[1, 24, 40, 40])``. Making the input dynamic then fails at
runtime (or worse, silently folds the batch). We rewrite only what is provably
equivalent at the original shape *and* means the same thing at other shapes:

* **Reshape** whose constant target has ``s[0] == in[0]`` (the input's static
  axis 0 at the export shape), ``allowzero`` unset: ``s[0] -> 0`` ("copy axis 0
  from the input"). Because the row-major reshape keeps axis 0, every batch item
  is reshaped on its own, so this is exact for any batch size.
* **Resize** with constant ``sizes`` that are whole multiples of the static
  input dims (FPN-style 2x upsampling): ``sizes -> scales = sizes / in``. Per
  the ONNX spec the output is ``floor(in * scale)`` and coordinates map through
  the same scale, so results are identical at the export shape; at other shapes
  it keeps the "upsample by k" meaning. Skipped for ``tf_crop_and_resize``,
  an ``axes`` attribute or a non-``stretch`` aspect policy.

Anything else that hard-codes the old size is left alone; :func:`suspects`
names those nodes so the caller can refuse with a precise message when the
ONNX Runtime check fails.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

import numpy as np

from .onnx_io import graph_constants

if TYPE_CHECKING:  # pragma: no cover
    import onnx

__all__ = ["rewrite_reshapes", "rewrite_resizes", "suspects", "static_shapes", "infer"]

StaticShapes = Mapping[str, tuple[int | None, ...]]


def infer(model: "onnx.ModelProto") -> "onnx.ModelProto":
    """onnx shape inference (with data propagation) after clearing stale value_info.

    ONNX Runtime's sympy-based SymbolicShapeInference names more dims
    (``12800*batch``) but took 12-30 s on SCRFD's Resize nodes with free H/W;
    onnx's inference takes milliseconds, and :mod:`trtkit.graph.reshape` fills the
    dims it leaves unknown from the ONNX Runtime check where that is proven.
    """
    import onnx

    del model.graph.value_info[:]
    return onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)


def static_shapes(model: "onnx.ModelProto") -> dict[str, tuple[int | None, ...]]:
    """name -> shape (None for unknown dims) for every tensor onnx inference can type."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
    out: dict[str, tuple[int | None, ...]] = {}
    for value in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        ttype = value.type.tensor_type
        if ttype.HasField("shape"):
            out[value.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in ttype.shape.dim)
    return out


def _attr(node: "onnx.NodeProto", name: str, default: object) -> object:
    from onnx import helper

    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return default


def _add_initializer(graph: "onnx.GraphProto", base: str, value: np.ndarray) -> str:
    from onnx import numpy_helper

    taken = {t.name for t in graph.initializer} | {o for n in graph.node for o in n.output}
    name, k = f"{base}__trtkit", 0
    while name in taken:
        k += 1
        name = f"{base}__trtkit{k}"
    graph.initializer.append(numpy_helper.from_array(value, name))
    return name


def rewrite_reshapes(model: "onnx.ModelProto", shapes: StaticShapes) -> list[str]:
    """Reshape targets ``[B, ...]`` with ``B`` = the input's static axis 0 -> ``[0, ...]``."""
    graph, consts, done = model.graph, graph_constants(model.graph), []
    for node in graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2 or node.input[1] not in consts:
            continue
        target = consts[node.input[1]]
        in_shape = shapes.get(node.input[0])
        if target.ndim != 1 or target.size == 0 or not in_shape or in_shape[0] is None:
            continue
        if int(target[0]) <= 0 or int(target[0]) != in_shape[0] or _attr(node, "allowzero", 0):
            continue
        new = target.copy()
        new[0] = 0
        node.input[1] = _add_initializer(graph, node.input[1], new.astype(np.int64))
        done.append(f"Reshape {node.name or node.output[0]!r}: target {target.tolist()} -> {new.tolist()} (copy axis 0)")
    return done


def rewrite_resizes(model: "onnx.ModelProto", shapes: StaticShapes) -> list[str]:
    """Resize with constant whole-multiple ``sizes`` -> the equivalent constant ``scales``."""
    graph, consts, done = model.graph, graph_constants(model.graph), []
    for node in graph.node:
        if node.op_type != "Resize" or len(node.input) < 4 or node.input[3] not in consts:
            continue
        if node.input[2] and consts.get(node.input[2], np.zeros(0)).size:
            continue  # scales already given
        if _attr(node, "coordinate_transformation_mode", b"half_pixel") in (b"tf_crop_and_resize", "tf_crop_and_resize"):
            continue
        if _attr(node, "axes", None) is not None or _attr(node, "keep_aspect_ratio_policy", b"stretch") not in (b"stretch", "stretch"):
            continue
        sizes, in_shape = consts[node.input[3]].astype(np.int64), shapes.get(node.input[0])
        if not in_shape or None in in_shape or len(in_shape) != sizes.size:
            continue
        dims = np.array(in_shape, dtype=np.int64)
        if (dims <= 0).any() or (sizes % dims).any():
            continue
        scales = (sizes // dims).astype(np.float32)
        node.input[2] = _add_initializer(graph, f"{node.name or node.output[0]}_scales", scales)
        del node.input[3:]
        done.append(f"Resize {node.name or node.output[0]!r}: sizes {sizes.tolist()} -> scales {scales.tolist()}")
    return done


_SHAPE_INPUTS = {"Reshape": 1, "Expand": 1, "Tile": 1, "ConstantOfShape": 0, "Resize": 3}


def suspects(model: "onnx.ModelProto", *, batch: int | None, sizes: set[int]) -> list[str]:
    """Nodes whose constant shape-like input has the old ``batch`` first, or one of the old ``sizes`` anywhere."""
    consts, found = graph_constants(model.graph), []
    for node in model.graph.node:
        slot = _SHAPE_INPUTS.get(node.op_type)
        if slot is None or len(node.input) <= slot or node.input[slot] not in consts:
            continue
        value = consts[node.input[slot]]
        if value.ndim != 1 or value.size == 0:
            continue
        items = [int(v) for v in value.tolist()]
        if (batch is not None and items[0] == batch) or set(items) & sizes:
            found.append(f"{node.op_type} {node.name or node.output[0]!r} (constant {items})")
    return found
