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
be overridden at run time, so they are never folded. A one-value constant folds only where it cannot
raise the rank of the tensor it broadcasts against. New names never collide with names in use, and a
pass is linear in the graph size (50,000 nodes in about 3 s). Turn fusion off with ``RuntimeConfig(fuse=False)``
or ``--no-fuse``.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

import numpy as np

from .._optional import require

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
    """The top-level graph as a node list, with its constants and the readers of each tensor.

    The reader and producer indexes are updated in place by every rewrite. Removed nodes are only
    marked and new ones only queued, and :meth:`flush` rebuilds the list once per fusion pass. This
    keeps a pass linear in the graph size: rebuilding the index after each match made a
    50,000-node graph take 20 minutes.
    """

    def __init__(self, model: "onnx.ModelProto") -> None:
        from .onnx_io import graph_constants

        self.model = model
        self.graph = model.graph
        self.nodes = list(self.graph.node)
        overridable = {v.name for v in self.graph.input}
        self.consts = {k: v for k, v in graph_constants(self.graph).items() if k not in overridable}
        # outputs and tensors a subgraph reads count as extra readers, so they never match "sole"
        self.pinned = {v.name for v in self.graph.output} | _subgraph_names(self.nodes)
        self.names = _own_names(self.graph) | self.pinned  # every name in use, for fresh ones
        self.dropped: set[str] = set()  # tensors some removed node read; swept if now unused
        self.removed: set[int] = set()  # id() of removed nodes, until flush
        self.inserted: dict[int, list[Any]] = {}  # id(anchor) -> new nodes that go before it
        self._ranks: dict[str, int] | None = None
        self.flush()

    # ------------------------------------------------------------ index

    def flush(self) -> None:
        """Apply the queued removals and insertions to the node list and rebuild both indexes."""
        if self.removed or self.inserted:
            order: list[Any] = []
            for node in self.nodes:
                order += self.inserted.get(id(node), [])
                if id(node) not in self.removed:
                    order.append(node)
            self.nodes, self.removed, self.inserted = order, set(), {}
        # readers per tensor keyed by id(node): shared constants have thousands, removal must be O(1)
        self.readers: dict[str, dict[int, Any]] = defaultdict(dict)
        self.producer: dict[str, Any] = {}
        for node in self.nodes:
            for name in node.input:
                self.readers[name][id(node)] = node
            for name in node.output:
                self.producer[name] = node

    def live(self) -> list[Any]:
        """The nodes not removed so far in this pass (new ones show up after the next flush)."""
        return [n for n in self.nodes if id(n) not in self.removed]

    def sole(self, name: str) -> Any:
        """The one node that reads ``name`` (a NodeProto), or None if it has zero, several, or outside readers."""
        readers = self.readers.get(name, {})
        return next(iter(readers.values())) if len(readers) == 1 and name not in self.pinned else None

    def remove(self, gone: Iterable[Any]) -> None:
        for node in gone:
            self.removed.add(id(node))
            self.dropped.update(node.input)
            for name in node.input:
                self.readers[name].pop(id(node), None)

    def insert_before(self, anchor: Any, new: list[Any]) -> None:
        self.inserted.setdefault(id(anchor), []).extend(new)
        for node in new:
            for name in node.input:
                self.readers[name][id(node)] = node
            for name in node.output:
                self.producer[name] = node

    def set_inputs(self, node: Any, inputs: list[str]) -> None:
        for name in node.input:
            self.readers[name].pop(id(node), None)
        self.dropped.update(node.input)
        del node.input[:]
        node.input.extend(inputs)
        for name in inputs:
            self.readers[name][id(node)] = node

    # ------------------------------------------------------------ values

    def scalar(self, name: str | None, *, max_rank: int | None) -> float | None:
        """A float32 constant holding one value, whose rank is at most ``max_rank`` (None: unknown, so
        rank 0 only). A ``[1, 1, 1, 1, 1]`` constant broadcasts a 4-D tensor up to 5-D, and folding
        it away would change the output's shape."""
        value = self.consts.get(name) if name else None
        if value is None or value.size != 1 or value.dtype != np.float32:
            return None
        if value.ndim > (max_rank if max_rank is not None else 0):
            return None
        return float(value.reshape(()))

    def rank(self, name: str) -> int | None:
        """The rank of tensor ``name``: a Conv's output has its weight's rank; else ONNX shape inference."""
        producer = self.producer.get(name)
        if _is(producer, "Conv"):
            wb = self.weights(producer)
            if wb is not None:
                return wb[0].ndim
        if self._ranks is None:
            self._ranks = _inferred_ranks(self.model)
        return self._ranks.get(name)

    def other_input(self, node: Any, name: str) -> str | None:
        """The operand of a binary node that is not ``name``."""
        if node is None or len(node.input) != 2 or list(node.input).count(name) != 1:
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

    def fresh_name(self, hint: str) -> str:
        serial = len(self.names)
        while f"trtkit_{hint}_{serial}" in self.names:
            serial += 1
        name = f"trtkit_{hint}_{serial}"
        self.names.add(name)
        return name

    def add_const(self, value: np.ndarray, hint: str) -> str:
        from onnx import numpy_helper

        name = self.fresh_name(hint)
        value = np.ascontiguousarray(value, dtype=np.float32)
        self.graph.initializer.append(numpy_helper.from_array(value, name))
        self.consts[name] = value
        return name

    def set_conv_weights(self, conv: Any, data: str, w: np.ndarray, b: np.ndarray) -> None:
        self.set_inputs(conv, [data, self.add_const(w, "fused_w"), self.add_const(b, "fused_b")])

    def commit(self) -> None:
        """Write the node list back and drop initializers and Constants that only removed nodes read.
        Call it after :meth:`flush` (fuse_model flushes after every pass)."""
        unused = {name for name in self.dropped if not self.readers.get(name) and name not in self.pinned}
        nodes = [n for n in self.nodes if not (n.op_type == "Constant" and n.output[0] in unused)]
        del self.graph.node[:]
        self.graph.node.extend(nodes)
        kept = [t for t in self.graph.initializer if t.name not in unused]
        if len(kept) != len(self.graph.initializer):
            del self.graph.initializer[:]
            self.graph.initializer.extend(kept)


def _subgraph_names(nodes: Iterable[Any]) -> set[str]:
    """Every tensor name read or written inside the subgraphs of ``nodes`` (If/Loop/Scan bodies)."""
    names: set[str] = set()
    for node in nodes:
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                names |= _own_names(sub) | _subgraph_names(sub.node)
    return names


def _own_names(graph: Any) -> set[str]:
    """The tensor names of ``graph`` itself, not of its subgraphs."""
    names = {v.name for v in (*graph.input, *graph.output, *graph.value_info, *graph.initializer)}
    names |= {s.values.name for s in graph.sparse_initializer}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
    return names


def _inferred_ranks(model: "onnx.ModelProto") -> dict[str, int]:
    """Ranks that ONNX shape inference finds (the well-kept library: no hand-written shape rules here)."""
    onnx = require("onnx")
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except (onnx.shape_inference.InferenceError, ValueError):
        return {}  # unknown ranks: only rank-0 constants match then
    ranks = {}
    for v in (*inferred.graph.input, *inferred.graph.output, *inferred.graph.value_info):
        if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape"):
            ranks[v.name] = len(v.type.tensor_type.shape.dim)
    return ranks


def _is(node: Any | None, op: str) -> bool:
    return node is not None and node.op_type == op and not node.domain


# ---------------------------------------------------------------- the fusions

def _fold_conv_affine(g: _Graph) -> int:
    """Conv -> Mul(c) [-> Add(d)] => Conv(W*c, b*c + d)."""
    count = 0
    for conv in g.live():
        if not _is(conv, "Conv") or len(conv.output) != 1 or id(conv) in g.removed:
            continue
        wb = g.weights(conv)
        rank = wb[0].ndim if wb is not None else None  # a Conv's output has its weight's rank
        mul = g.sole(conv.output[0])
        c = g.scalar(g.other_input(mul, conv.output[0]), max_rank=rank) if _is(mul, "Mul") else None
        if c is None or wb is None:
            continue
        w, b = wb
        scale = np.float32(c)
        bias, last = b * scale, mul
        add = g.sole(mul.output[0])
        d = g.scalar(g.other_input(add, mul.output[0]), max_rank=rank) if _is(add, "Add") else None
        if d is not None:
            bias, last = bias + np.float32(d), add
        g.set_conv_weights(conv, conv.input[0], w * scale, bias)
        g.remove([mul] if last is mul else [mul, add])
        conv.output[0] = last.output[0]
        g.producer[last.output[0]] = conv
        count += 1
    return count


def _fuse_hard_swish(g: _Graph) -> int:
    """x -> Add(3) -> Clip(0, 6) -> Mul(x) -> Div(6) | Mul(1/6)  =>  x * HardSigmoid(x, 1/6, 1/2)."""
    from onnx import helper

    count = 0
    for add in g.live():
        if not _is(add, "Add") or len(add.input) != 2 or id(add) in g.removed:
            continue
        x = add.input[1] if add.input[0] in g.consts else add.input[0]
        chain = _hard_swish_chain(g, add, x)
        if chain is None:
            continue
        gate = g.fresh_name("hard_sigmoid")
        g.insert_before(add, [  # where the chain started: x exists there, and every reader comes later
            helper.make_node("HardSigmoid", [x], [gate], name=gate, alpha=1 / 6, beta=0.5),
            helper.make_node("Mul", [x, gate], [chain[-1].output[0]], name=g.fresh_name("hard_swish")),
        ])
        g.remove(chain)
        count += 1
    return count


def _hard_swish_chain(g: _Graph, add: Any, x: str) -> list[Any] | None:
    """[add, clip, mul, tail] if ``add`` starts a decomposed hard-swish of ``x``, else None."""
    def scalar(name: str | None) -> float | None:
        # the constants may not raise x's rank; x's rank is only looked up for a constant that has one
        value = g.consts.get(name) if name else None
        return g.scalar(name, max_rank=g.rank(x) if value is not None and value.ndim > 0 else 0)

    if scalar(g.other_input(add, x)) != 3.0:
        return None
    clip = g.sole(add.output[0])
    if not (_is(clip, "Clip") and len(clip.input) == 3 and scalar(clip.input[1]) == 0.0 and scalar(clip.input[2]) == 6.0):
        return None
    mul = g.sole(clip.output[0])
    if not (_is(mul, "Mul") and sorted(mul.input) == sorted([x, clip.output[0]])):
        return None
    tail = g.sole(mul.output[0])
    if _is(tail, "Div") and tail.input[0] == mul.output[0] and scalar(tail.input[1]) == 6.0:
        return [add, clip, mul, tail]
    sixth = scalar(g.other_input(tail, mul.output[0])) if _is(tail, "Mul") else None
    if sixth is not None and abs(sixth - 1 / 6) < 1e-7:
        return [add, clip, mul, tail]
    return None


def _fold_affine_conv1x1(g: _Graph) -> int:
    """Mul(c) -> Add(d) -> Conv 1x1, unpadded => Conv(W*c, b + d*sum(W))."""
    count = 0
    for mul in g.live():
        if not _is(mul, "Mul") or len(mul.input) != 2 or id(mul) in g.removed:
            continue
        add = g.sole(mul.output[0])
        conv: Any = g.sole(add.output[0]) if _is(add, "Add") else None
        wb = _unpadded_1x1_weights(conv, g) if _is(conv, "Conv") and conv.input[0] == add.output[0] else None
        if wb is None:
            continue
        # constants of lower rank than the Conv input cannot raise x's rank, so x already has the Conv's rank
        rank = wb[0].ndim - 1
        c_name = mul.input[0] if g.scalar(mul.input[0], max_rank=rank) is not None else mul.input[1]
        x, c = g.other_input(mul, c_name), g.scalar(c_name, max_rank=rank)
        d = g.scalar(g.other_input(add, mul.output[0]), max_rank=rank)
        if x is None or c is None or d is None:
            continue
        w, b = wb
        g.set_conv_weights(conv, x, w * np.float32(c), b + np.float32(d) * w.sum(axis=(1, 2, 3), dtype=np.float32))
        g.remove([mul, add])
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
    if model.ir_version < 4:
        # IR 3 lists every initializer as a graph input too; new weights would need that bookkeeping
        return FusionReport(skipped=f"IR version {model.ir_version} (< 4)")
    g = _Graph(model)
    counts = []
    for name, fusion in FUSIONS.items():
        counts.append((name, fusion(g)))
        g.flush()
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
