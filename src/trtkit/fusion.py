"""Exact graph fusions that ONNX Runtime's optimizer misses, applied in memory when trtkit opens a model.

TensorRT fuses pointwise chains into convolutions itself. ONNX Runtime (checked on 1.18 to 1.31) does
not fuse these three patterns, which paddle2onnx and older torch exports write as separate elementwise
nodes. Left alone, each one breaks ORT's NCHWc convolution chain: the tensor is reordered out, passed
over four to eight times in memory, and reordered back.

- ``conv_affine``: ``Conv -> Mul(c) [-> Add(d)]`` with scalar ``c``, ``d`` becomes ``Conv(W*c, b*c + d)``.
- ``hard_swish``: ``x -> Add(3) -> Clip(0, 6) -> Mul(x) -> Div(6)`` (or ``Mul(1/6)``) becomes
  ``x * HardSigmoid(x, alpha=1/6, beta=1/2)``. That form exists at every opset, and ORT fuses it into
  the preceding Conv as a HardSwish activation.
- ``affine_conv1x1``: ``Mul(c) -> Add(d) -> Conv`` with an unpadded 1x1 kernel becomes
  ``Conv(W*c, b + d*sum(W))``. With a padded kernel this is not exact at the borders, so it is not done.

Each rewrite is exact algebra. Results move by float rounding only: about 1e-6 on PP-OCRv4, with
identical recognized text. The gain is measured, not assumed: on 2 CPU threads PP-OCRv4 recognition
runs about 1.3x faster and detection about 1.15x (``benchmarks/ocr.py`` prints fused and unfused side
by side). Why this is written by hand: onnxslim's ConvMul folds only a per-channel Mul that takes the
Conv output as its first operand, and it fuses no hard-swish, so it finds none of these in PP-OCR.

Only float32 weights in the top-level graph are rewritten. A tensor that is a graph output, is read
by a subgraph, or has a second consumer stops the match. Initializers that are also graph inputs can
be overridden at run time, so they are never folded. Turn fusion off with ``RuntimeConfig(fuse=False)``
or ``--no-fuse``.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

import numpy as np

from ._optional import require

if TYPE_CHECKING:  # pragma: no cover
    import onnx

__all__ = ["FusionReport", "fuse_model", "fuse_file", "FUSIONS"]


@dataclass(frozen=True)
class FusionReport:
    """How many times each fusion was applied, and why none was tried (``skipped``), if so."""

    counts: tuple[tuple[str, int], ...] = ()
    skipped: str | None = None

    @property
    def total(self) -> int:
        return sum(n for _, n in self.counts)

    def __str__(self) -> str:
        if self.skipped:
            return f"not fused ({self.skipped})"
        done = [f"{name} x{n}" for name, n in self.counts if n]
        return ", ".join(done) if done else "nothing to fuse"


class _Graph:
    """The top-level graph as a node list, with its constants and the consumers of each tensor."""

    def __init__(self, model: "onnx.ModelProto") -> None:
        from onnx import numpy_helper

        self.graph = model.graph
        self.nodes = list(self.graph.node)
        overridable = {v.name for v in self.graph.input}
        self.consts: dict[str, np.ndarray] = {
            t.name: numpy_helper.to_array(t) for t in self.graph.initializer if t.name not in overridable
        }
        for node in self.nodes:
            if node.op_type == "Constant" and not node.domain and len(node.attribute) == 1 and node.attribute[0].name == "value":
                self.consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        # outputs and tensors a subgraph reads count as extra consumers, so they never match "sole"
        self.pinned = {v.name for v in self.graph.output} | _subgraph_reads(self.nodes)
        self.dropped: set[str] = set()  # tensors some removed node read; swept if now unused
        self.serial = 0
        self.reindex()

    def reindex(self) -> None:
        self.consumers: dict[str, list[Any]] = defaultdict(list)
        for node in self.nodes:
            for name in node.input:
                self.consumers[name].append(node)

    def sole(self, name: str) -> Any:  # a NodeProto or None
        """The one node that reads ``name``, or None if it has zero, several, or outside readers."""
        readers = self.consumers.get(name, [])
        return readers[0] if len(readers) == 1 and name not in self.pinned else None

    def scalar(self, name: str | None) -> float | None:
        value = self.consts.get(name) if name else None
        if value is None or value.size != 1 or value.dtype != np.float32:
            return None
        return float(value.reshape(()))

    def other_input(self, node: Any, name: str) -> str | None:
        """The operand of a binary node that is not ``name``."""
        if len(node.input) != 2 or list(node.input).count(name) != 1:
            return None
        return node.input[1] if node.input[0] == name else node.input[0]

    def weights(self, conv: Any) -> tuple[np.ndarray, np.ndarray] | None:
        """(W, b) of a Conv whose weights are float32 constants; b is zeros when the Conv has none."""
        w = self.consts.get(conv.input[1]) if len(conv.input) > 1 else None
        if w is None or w.dtype != np.float32:
            return None
        if len(conv.input) > 2 and conv.input[2]:
            b = self.consts.get(conv.input[2])
            if b is None or b.dtype != np.float32:
                return None
            return w, b
        return w, np.zeros(w.shape[0], np.float32)

    def add_const(self, value: np.ndarray, hint: str) -> str:
        from onnx import numpy_helper

        self.serial += 1
        name = f"trtkit_fused_{hint}_{self.serial}"
        while name in self.consts or name in self.consumers:
            self.serial += 1
            name = f"trtkit_fused_{hint}_{self.serial}"
        value = np.ascontiguousarray(value, dtype=np.float32)
        self.graph.initializer.append(numpy_helper.from_array(value, name))
        self.consts[name] = value
        return name

    def set_conv_weights(self, conv: Any, data: str, w: np.ndarray, b: np.ndarray) -> None:
        self.dropped.update(conv.input[1:])
        new = [data, self.add_const(w, "w"), self.add_const(b, "b")]
        del conv.input[:]
        conv.input.extend(new)

    def remove(self, gone: Iterable[Any]) -> None:
        ids = {id(n) for n in gone}
        for node in self.nodes:
            if id(node) in ids:
                self.dropped.update(node.input)
        self.nodes = [n for n in self.nodes if id(n) not in ids]

    def commit(self) -> None:
        """Write the node list back and drop initializers and Constants that only removed nodes read."""
        self.reindex()
        unused = {name for name in self.dropped if not self.consumers.get(name) and name not in self.pinned}
        nodes = [n for n in self.nodes if not (n.op_type == "Constant" and n.output[0] in unused)]
        del self.graph.node[:]
        self.graph.node.extend(nodes)
        kept = [t for t in self.graph.initializer if t.name not in unused]
        if len(kept) != len(self.graph.initializer):
            del self.graph.initializer[:]
            self.graph.initializer.extend(kept)


def _subgraph_reads(nodes: Iterable[Any]) -> set[str]:
    names: set[str] = set()
    for node in nodes:
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                for inner in sub.node:
                    names.update(inner.input)
                names |= _subgraph_reads(sub.node)
    return names


def _is(node: Any | None, op: str) -> bool:
    return node is not None and node.op_type == op and not node.domain


# ---------------------------------------------------------------- the fusions

def _fold_conv_affine(g: _Graph) -> int:
    """Conv -> Mul(c) [-> Add(d)] => Conv(W*c, b*c + d)."""
    count = 0
    for conv in list(g.nodes):
        if not _is(conv, "Conv") or len(conv.output) != 1:
            continue
        mul = g.sole(conv.output[0])
        c = g.scalar(g.other_input(mul, conv.output[0])) if _is(mul, "Mul") else None
        wb = g.weights(conv)
        if c is None or wb is None:
            continue
        w, b = wb
        scale = np.float32(c)
        bias, last = b * scale, mul
        add = g.sole(mul.output[0])
        d = g.scalar(g.other_input(add, mul.output[0])) if _is(add, "Add") else None
        if d is not None:
            bias, last = bias + np.float32(d), add
        g.set_conv_weights(conv, conv.input[0], w * scale, bias)
        conv.output[0] = last.output[0]
        g.remove([mul] if last is mul else [mul, add])
        g.reindex()
        count += 1
    return count


def _fuse_hard_swish(g: _Graph) -> int:
    """x -> Add(3) -> Clip(0, 6) -> Mul(x) -> Div(6) | Mul(1/6)  =>  x * HardSigmoid(x, 1/6, 1/2)."""
    from onnx import helper

    count = 0
    for add in list(g.nodes):
        if not _is(add, "Add") or len(add.input) != 2:
            continue
        x = add.input[1] if g.scalar(add.input[0]) == 3.0 else add.input[0]
        clip: Any = g.sole(add.output[0]) if g.scalar(g.other_input(add, x)) == 3.0 else None
        if not (_is(clip, "Clip") and len(clip.input) == 3 and g.scalar(clip.input[1]) == 0.0 and g.scalar(clip.input[2]) == 6.0):
            continue
        mul = g.sole(clip.output[0])
        if not (_is(mul, "Mul") and sorted(mul.input) == sorted([x, clip.output[0]])):
            continue
        tail = g.sole(mul.output[0])
        if not (_is(tail, "Div") and tail.input[0] == mul.output[0] and g.scalar(tail.input[1]) == 6.0) and not (
            _is(tail, "Mul") and abs((g.scalar(g.other_input(tail, mul.output[0])) or 0.0) - 1 / 6) < 1e-7
        ):
            continue
        g.serial += 1
        gate = f"trtkit_hard_sigmoid_{g.serial}"
        fused = [
            helper.make_node("HardSigmoid", [x], [gate], name=gate, alpha=1 / 6, beta=0.5),
            helper.make_node("Mul", [x, gate], [tail.output[0]], name=f"{gate}_mul"),
        ]
        at = next(i for i, n in enumerate(g.nodes) if n is add)
        g.nodes[at:at] = fused  # where the chain started: x exists there, and every reader comes later
        g.remove([add, clip, mul, tail])
        g.reindex()
        count += 1
    return count


def _fold_affine_conv1x1(g: _Graph) -> int:
    """Mul(c) -> Add(d) -> Conv 1x1, unpadded => Conv(W*c, b + d*sum(W))."""
    count = 0
    for mul in list(g.nodes):
        if not _is(mul, "Mul") or len(mul.input) != 2:
            continue
        c_name = mul.input[0] if g.scalar(mul.input[0]) is not None else mul.input[1]
        x, c = g.other_input(mul, c_name), g.scalar(c_name)
        add = g.sole(mul.output[0])
        d = g.scalar(g.other_input(add, mul.output[0])) if _is(add, "Add") else None
        conv: Any = g.sole(add.output[0]) if d is not None else None
        wb = _unpadded_1x1_weights(conv, g) if _is(conv, "Conv") and conv.input[0] == add.output[0] else None
        if x is None or c is None or wb is None:
            continue
        w, b = wb
        g.set_conv_weights(conv, x, w * np.float32(c), b + np.float32(d) * w.sum(axis=(1, 2, 3), dtype=np.float32))
        g.remove([mul, add])
        g.reindex()
        count += 1
    return count


def _unpadded_1x1_weights(conv: Any, g: _Graph) -> tuple[np.ndarray, np.ndarray] | None:
    """(W, b) of a 1x1 Conv without padding and with constant float32 weights, else None."""
    from onnx import helper

    wb = g.weights(conv)
    if wb is None or wb[0].ndim != 4 or wb[0].shape[2:] != (1, 1):
        return None
    attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
    padded = any(attrs.get("pads", ())) or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID")
    return None if padded else wb


# order matters: conv_affine first frees the hard-swish input from its Mul/Add, then the affine after it
FUSIONS: dict[str, Callable[[_Graph], int]] = {
    "conv_affine": _fold_conv_affine,
    "hard_swish": _fuse_hard_swish,
    "affine_conv1x1": _fold_affine_conv1x1,
}


def fuse_model(model: "onnx.ModelProto") -> FusionReport:
    """Apply every fusion in :data:`FUSIONS` to ``model``, in place; returns how often each applied."""
    g = _Graph(model)
    counts = []
    for name, fusion in FUSIONS.items():
        counts.append((name, fusion(g)))
    g.commit()
    return FusionReport(tuple(counts))


def fuse_file(path: str | os.PathLike[str]) -> tuple[bytes | None, FusionReport]:
    """The fused model at ``path``, serialized, or None when nothing changed (run the file as it is).

    Models that keep weights in external data files are left alone. Loading them whole would double
    their memory, and they are too big to hand to ONNX Runtime as one buffer anyway.
    """
    from .onnx_io import iter_tensors, load_onnx

    require("onnx")
    model = load_onnx(Path(path), external_data=False)
    if any(t.data_location == 1 for t in iter_tensors(model.graph)):  # onnx.TensorProto.EXTERNAL
        return None, FusionReport(skipped="weights in external data files")
    report = fuse_model(model)
    return (model.SerializeToString() if report.total else None), report
