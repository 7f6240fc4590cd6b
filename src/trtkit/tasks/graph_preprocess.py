"""Preprocessing on the GPU by baking it into the model: uint8 pixels in, letterbox + normalise in the graph.

:func:`bake_letterbox` puts a front end before a detect/face model's image input. The new
inputs are the raw uint8 RGB pixels (``pixels [B, H, W, 3]``, 4x less to upload than float32)
and, per image, two small index/weight tables that say which source rows/columns each output
row/column blends (computed on the host from the image size alone: 4 x (640 x 2) numbers).
The graph then does the bilinear resize (two Gathers and weighted sums, separable),
the letterbox padding, BGR swap, ``(pixel - mean) * scale`` and the NCHW layout.

Why baked into the graph, and not CuPy / CV-CUDA / DALI kernels:

* one artifact runs everywhere the model runs: TensorRT (the Gathers, Mul/Add and
  Transposes fuse into a few kernels next to the network), ORT-CUDA, and ONNX Runtime on
  the CPU -- so equality with the CPU (cv2) path is tested here, without a GPU
  (tests/tasks/test_graph_preprocess.py: same detections, boxes within 1 px);
* no extra runtime dependency or CUDA stream to synchronise with the backend's;
* only ops every runtime has had for years (Cast, Gather, Mul, Add, Sub, Reshape,
  Flatten, Transpose; int32 indices, since TensorRT 8.5 has no int64 I/O).

Why not ONNX ``Resize``: its output size would depend on each image's size (the letterbox
keeps the aspect ratio), which TensorRT 8.5 cannot compute in float shape arithmetic, and
images of different sizes could not share a batch. Here images of any sizes share a batch:
each sits top-left in a canvas of the batch's largest size, and its tables index into it.

The geometry matches cv2's ``INTER_LINEAR`` (half-pixel centres, edge clamping, no
antialiasing) and :func:`trtkit.tasks._image.letterbox` (same rounding of the resized size and
the padding); cv2 computes in 11-bit fixed point and rounds to uint8, the graph in float32,
so pixels differ by at most about one grey level.

:func:`bake_normalize` is the half-way front end (``GraphPreprocessed.open(task, resize="host")``):
the host letterboxes with cv2 as the CPU path does, and the model takes the letterboxed uint8
pixels ``[B, H, W, 3]``, looks each up in the CPU path's own per-channel float32 tables and lays
them out NCHW. The tensor is bit-identical to the CPU path's; every image of a batch has the
model's size, so stream worker processes can fill fixed shared batch buffers (the full front end's
canvas changes size per batch, so it streams with threads); uint8 is still 4x less to write and
upload than float32.

A TensorRT engine: bake, then build the baked ONNX, then pass the engine's backend::

    baked = bake_letterbox(onnx.load("yolov8n.onnx"), params=letterbox_params(detector))
    onnx.save(baked, "yolov8n_pre.onnx")            # trtkit build yolov8n_pre.onnx ...
    fast = GraphPreprocessed(detector, trtkit.load("yolov8n_pre.plan"))
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from ..errors import TaskError
from ..spec import RuntimeConfig
from ._image import Letterbox
from .preprocess import Preprocess
from .streaming import BatchStages, HostStages, StreamOptions, stream_predictions
from .stream_workers import host_copy

__all__ = [
    "LetterboxParams", "letterbox_params", "letterbox_geometry", "bake_letterbox", "bake_normalize", "letterbox_tables",
    "GraphPreprocessed", "LetterboxFrontEnd", "PixelFront", "RESIZE_CHOICES", "PIXELS", "METADATA_KEY",
]

PIXELS = "pixels"
ROWS, ROW_WEIGHTS, COLS, COL_WEIGHTS = "rows", "row_weights", "cols", "col_weights"
METADATA_KEY = "trtkit_preprocess"
_P = "trtkit_pre/"  # prefix of the front end's internal tensors


@dataclass(frozen=True)
class LetterboxParams:
    """What the front end does: letterbox to ``size`` (h, w) with ``pad_value`` (centred or
    top-left), optional RGB->BGR, then ``(pixel - mean) * scale`` per channel."""

    size: tuple[int, int]
    pad_value: float
    center: bool
    mean: tuple[float, float, float]
    scale: tuple[float, float, float]
    bgr: bool = False


def letterbox_params(task: Any) -> LetterboxParams:
    """The letterbox a detect/face task applies in ``preprocess`` (its resolved ``preprocessing``:
    ``(pixel * scale - mean) / std`` == ``(pixel - mean / scale) * (scale / std)``)."""
    pre = getattr(task, "preprocessing", None)
    size = getattr(task, "input_size", None)
    if pre is None or size is None or getattr(pre, "pad", None) is None:
        raise TaskError(
            f"preprocessing in the graph supports letterbox tasks (detect, face); got {type(task).__name__}. "
            "Stream it with task.stream() instead"
        )
    h, w = size
    mean = tuple(float(m) / pre.scale for m in pre.mean)
    scale = tuple(pre.scale / float(s) for s in pre.std)
    return LetterboxParams(
        (int(h), int(w)), float(int(round(pre.pad_value))), pre.pad == "center", mean, scale, bool(pre.bgr)  # type: ignore[arg-type]
    )


def letterbox_geometry(height: int, width: int, size: tuple[int, int], *, center: bool) -> tuple[int, int, int, int, Letterbox]:
    """(resized h, resized w, top, left, Letterbox) exactly as :func:`trtkit.tasks._image.letterbox` computes them."""
    th, tw = size
    scale = min(th / height, tw / width)
    nw, nh = max(1, int(round(width * scale))), max(1, int(round(height * scale)))
    left, top = (int(round((tw - nw) / 2 - 0.1)), int(round((th - nh) / 2 - 0.1))) if center else (0, 0)
    info = Letterbox(scale=(nw / width + nh / height) / 2, pad_x=float(left), pad_y=float(top), width=width, height=height)
    return nh, nw, top, left, info


def _axis_table(src: int, dst: int, out: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """For ``out`` output positions, the two source indices and weights cv2 INTER_LINEAR blends
    when resizing ``src`` -> ``dst`` placed at ``offset``; zero weights on the padding."""
    idx = np.zeros((out, 2), np.int32)
    wts = np.zeros((out, 2), np.float32)
    d = np.arange(dst)
    if dst == src:
        f = d.astype(np.float64)
    else:
        f = ((d + 0.5) * (src / dst) - 0.5).astype(np.float32).astype(np.float64)  # cv2 computes it in float
    s = np.floor(f).astype(np.int64)
    frac = f - s
    low = s < 0
    s[low], frac[low] = 0, 0.0
    high = s >= src - 1
    s[high], frac[high] = src - 1, 0.0
    frac = np.round(frac * 2048) / 2048  # cv2's 11-bit fixed-point weights (INTER_RESIZE_COEF_BITS)
    rows = slice(offset, offset + dst)
    idx[rows, 0], idx[rows, 1] = s, np.minimum(s + 1, src - 1)
    wts[rows, 0], wts[rows, 1] = 1.0 - frac, frac
    return idx, wts


def letterbox_tables(height: int, width: int, params: LetterboxParams) -> tuple[dict[str, np.ndarray], Letterbox]:
    """Per-image tables (local indices into this image) and its Letterbox, for the baked front end."""
    th, tw = params.size
    nh, nw, top, left, info = letterbox_geometry(height, width, params.size, center=params.center)
    rows, row_w = _axis_table(height, nh, th, top)
    cols, col_w = _axis_table(width, nw, tw, left)
    return {ROWS: rows, ROW_WEIGHTS: row_w, COLS: cols, COL_WEIGHTS: col_w}, info


# ---------------------------------------------------------------- the graph

class _Surgery:
    """A copy of a model whose image input [B,3,H,W] is about to be replaced by a front end: new nodes
    are added with :meth:`node` / :meth:`const`, then :meth:`finish` wires the front end's output to the
    old input's name, puts the new inputs first and records ``meta`` in the model's metadata."""

    def __init__(self, model: Any, input_name: str | None) -> None:
        import onnx

        from .._optional import require

        require("onnx", purpose="preprocessing in the graph")
        self.model = onnx.ModelProto()
        self.model.CopyFrom(model)
        graph = self.model.graph
        inits = {i.name for i in graph.initializer}
        real_inputs = [i for i in graph.input if i.name not in inits]
        name = input_name or (real_inputs[0].name if len(real_inputs) == 1 else None)
        image = next((i for i in real_inputs if i.name == name), None)
        if image is None or len(image.type.tensor_type.shape.dim) != 4:
            raise TaskError(
                f"cannot bake preprocessing into this model: expected one image input [B,3,H,W], found "
                f"{[i.name for i in real_inputs]}; give input_name= the image input"
            )
        self.image = image
        batch_dim = image.type.tensor_type.shape.dim[0]
        self.batch = batch_dim.dim_value if batch_dim.HasField("dim_value") else (batch_dim.dim_param or "batch")
        self.elem = image.type.tensor_type.elem_type
        self.nodes: list[Any] = []

    def const(self, tag: str, value: Any, dtype: Any) -> str:
        from onnx import numpy_helper

        self.model.graph.initializer.append(numpy_helper.from_array(np.asarray(value, dtype), _P + "c_" + tag))
        return _P + "c_" + tag

    def node(self, op: str, inputs: Sequence[str], tag: str, **attrs: Any) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(op, list(inputs), [_P + tag], name=_P + tag, **attrs))
        return _P + tag

    def finish(self, out: str, new_inputs: Sequence[Any], meta: Mapping[str, Any]) -> Any:
        import onnx
        from onnx import TensorProto, helper

        graph = self.model.graph
        if self.elem != TensorProto.FLOAT:
            out = self.node("Cast", [out], "cast", to=self.elem)
        self.nodes.append(helper.make_node("Identity", [out], [self.image.name], name=_P + "out"))
        graph.input.remove(self.image)
        for i, value in enumerate(new_inputs):
            graph.input.insert(i, value)
        old_nodes = list(graph.node)
        del graph.node[:]
        graph.node.extend(self.nodes + old_nodes)
        entry = self.model.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps({"kind": meta["kind"], "input": self.image.name, **meta})
        onnx.checker.check_model(self.model)
        return self.model


def bake_letterbox(model: Any, *, params: LetterboxParams, input_name: str | None = None) -> Any:
    """A copy of ``model`` (onnx.ModelProto) whose image input is replaced by the uint8 front end."""
    from onnx import TensorProto, helper

    cut = _Surgery(model, input_name)
    node, const = cut.node, cut.const
    th, tw = params.size
    zero, one = const("i0", 0, np.int32), const("i1", 1, np.int32)

    def blend(table: str, weights: str, data: str, tag: str, weight_shape: Sequence[int]) -> str:
        """sum over the two taps of data[table[..., k]] * weights[..., k]."""
        taps = node("Gather", [data, table], f"{tag}_taps", axis=0)  # [B, out, 2, rest]
        w = node("Reshape", [weights, const(f"{tag}_wshape", weight_shape, np.int64)], f"{tag}_w")  # [B, out, 2, 1]
        prod = node("Mul", [taps, w], f"{tag}_prod")
        a = node("Gather", [prod, zero], f"{tag}_a", axis=2)
        b = node("Gather", [prod, one], f"{tag}_b", axis=2)
        return node("Add", [a, b], tag)  # [B, out, rest]

    pix = node("Cast", [PIXELS], "float", to=TensorProto.FLOAT)  # [B, H, W, 3]
    flat_rows = node("Flatten", [pix], "flat_rows", axis=2)  # [B*H, W*3]
    by_rows = blend(ROWS, ROW_WEIGHTS, flat_rows, "rows", (0, 0, 2, 1))  # [B, th, W*3]
    rows4 = node("Reshape", [by_rows, const("rows4", (0, 0, -1, 3), np.int64)], "rows4")  # [B, th, W, 3]
    cols_first = node("Transpose", [rows4], "cols_first", perm=[0, 2, 1, 3])  # [B, W, th, 3]
    flat_cols = node("Flatten", [cols_first], "flat_cols", axis=2)  # [B*W, th*3]
    by_cols = blend(COLS, COL_WEIGHTS, flat_cols, "cols", (0, 0, 2, 1))  # [B, tw, th*3]
    cols4 = node("Reshape", [by_cols, const("cols4", (0, 0, th, 3), np.int64)], "cols4")  # [B, tw, th, 3]
    nchw = node("Transpose", [cols4], "nchw", perm=[0, 3, 2, 1])  # [B, 3, th, tw]
    # padding: where neither row nor column has weight, the pad value
    def inside(weights: str, tag: str, shape: Sequence[int]) -> str:
        a = node("Gather", [weights, zero], f"{tag}_w0", axis=2)
        b = node("Gather", [weights, one], f"{tag}_w1", axis=2)
        return node("Reshape", [node("Add", [a, b], f"{tag}_sum"), const(f"{tag}_shape", shape, np.int64)], tag)

    mask = node("Mul", [inside(ROW_WEIGHTS, "in_rows", (0, 1, th, 1)), inside(COL_WEIGHTS, "in_cols", (0, 1, 1, tw))], "inside")
    outside = node("Sub", [const("f1", 1.0, np.float32), mask], "outside")
    padded = node("Add", [nchw, node("Mul", [outside, const("pad", params.pad_value, np.float32)], "pad_term")], "padded")
    if params.bgr:
        padded = node("Gather", [padded, const("bgr", (2, 1, 0), np.int32)], "bgr", axis=1)
    centred = node("Sub", [padded, const("mean", np.reshape(params.mean, (1, 3, 1, 1)), np.float32)], "centred")
    scaled = node("Mul", [centred, const("scale", np.reshape(params.scale, (1, 3, 1, 1)), np.float32)], "scaled")
    batch = cut.batch
    new_inputs = [
        helper.make_tensor_value_info(PIXELS, TensorProto.UINT8, [batch, "height", "width", 3]),
        helper.make_tensor_value_info(ROWS, TensorProto.INT32, [batch, th, 2]),
        helper.make_tensor_value_info(ROW_WEIGHTS, TensorProto.FLOAT, [batch, th, 2]),
        helper.make_tensor_value_info(COLS, TensorProto.INT32, [batch, tw, 2]),
        helper.make_tensor_value_info(COL_WEIGHTS, TensorProto.FLOAT, [batch, tw, 2]),
    ]
    return cut.finish(scaled, new_inputs, {"kind": "letterbox", **asdict(params)})


def bake_normalize(model: Any, *, preprocessing: Preprocess, size: tuple[int, int], input_name: str | None = None) -> Any:
    """A copy of ``model`` whose image input is replaced by letterboxed uint8 pixels ``[B, H, W, 3]`` (``size``):
    the model looks each pixel up in ``preprocessing``'s per-channel tables (the very float32 tables
    :meth:`~trtkit.tasks.preprocess.Preprocess.to_tensor` applies with ``cv2.LUT``, so the tensor is
    bit-identical to the CPU path's) and lays it out NCHW; the host letterboxes with cv2, so every image of
    a batch has the same size and worker processes can fill fixed batch buffers.

    The lookup is a Gather into a 768-entry table (pixel + 256 * channel), after RGB->BGR when the
    preprocessing asks for it; indices are computed in float32 (exact for 0..767) and cast to int32, since
    TensorRT 8.5 has no uint8 -> int32 cast."""
    from onnx import TensorProto, helper

    cut = _Surgery(model, input_name)
    h, w = size
    dims = cut.image.type.tensor_type.shape.dim
    fixed = [d.dim_value if d.HasField("dim_value") else None for d in dims[1:]]
    if any(got is not None and got != want for got, want in zip(fixed, (3, h, w))):
        raise TaskError(
            f"bake_normalize: the model's input {cut.image.name!r} is [B, {', '.join(str(d or '?') for d in fixed)}], "
            f"but size= asks for [B, 3, {h}, {w}]; give size= the model's own H and W"
        )
    node, const = cut.node, cut.const
    levels = node("Cast", [PIXELS], "float", to=TensorProto.FLOAT)  # [B, H, W, 3]
    if preprocessing.bgr:  # tensor channel c comes from source plane 2 - c
        levels = node("Gather", [levels, const("bgr", (2, 1, 0), np.int32)], "bgr", axis=3)
    flat = node("Add", [levels, const("offsets", np.reshape((0.0, 256.0, 512.0), (1, 1, 1, 3)), np.float32)], "flat")
    index = node("Cast", [flat], "index", to=TensorProto.INT32)
    values = node("Gather", [const("tables", preprocessing.tables().reshape(-1), np.float32), index], "values", axis=0)
    nchw = node("Transpose", [values], "nchw", perm=[0, 3, 1, 2])  # [B, 3, H, W]
    new_inputs = [helper.make_tensor_value_info(PIXELS, TensorProto.UINT8, [cut.batch, int(h), int(w), 3])]
    return cut.finish(nchw, new_inputs, {"kind": "normalize", "size": [int(h), int(w)], "preprocess": preprocessing.describe()})


# ---------------------------------------------------------------- running it

class LetterboxFrontEnd:
    """The host side of a baked front end: per-image feeds (the uint8 image, its tables) and batching."""

    def __init__(self, params: LetterboxParams) -> None:
        self.params = params

    def preprocess(self, image: np.ndarray) -> tuple[dict[str, np.ndarray], Letterbox]:
        tables, info = letterbox_tables(image.shape[0], image.shape[1], self.params)
        return {PIXELS: image, **tables}, info

    def collate(self, prepared: Sequence[Mapping[str, np.ndarray]], alloc: Any = None) -> dict[str, np.ndarray]:
        """One batch: the images top-left in a canvas of the largest size, indices offset into it."""
        alloc = alloc or (lambda name, dtype, shape: np.empty(shape, dtype))
        n = len(prepared)
        h = max(p[PIXELS].shape[0] for p in prepared)
        w = max(p[PIXELS].shape[1] for p in prepared)
        canvas = alloc(PIXELS, np.uint8, (n, h, w, 3))
        feeds = {PIXELS: canvas}
        for name, stride in ((ROWS, h), (COLS, w)):
            first = prepared[0][name]
            table = alloc(name, np.int32, (n, *first.shape))
            for b, p in enumerate(prepared):
                np.add(p[name], b * stride, out=table[b])
            feeds[name] = table
        for name in (ROW_WEIGHTS, COL_WEIGHTS):
            table = alloc(name, np.float32, (n, *prepared[0][name].shape))
            np.stack([p[name] for p in prepared], out=table)
            feeds[name] = table
        for b, p in enumerate(prepared):
            ph, pw = p[PIXELS].shape[:2]
            canvas[b, :ph, :pw] = p[PIXELS]  # the rest of the canvas is never indexed
        return feeds


@dataclass(frozen=True)
class PixelFront:
    """The host side of :func:`bake_normalize`, picklable for worker processes: the task's own letterbox
    (cv2), its uint8 pixels as the feed."""

    def preprocess(self, task: Any, image: np.ndarray) -> tuple[dict[str, np.ndarray], Letterbox]:
        boxed, info = task.letterbox(image)
        return {PIXELS: boxed[None]}, info


RESIZE_CHOICES = ("graph", "host")


class GraphStages(BatchStages):
    """Stream stages for a baked model. ``resize="graph"``: the workers only decode and build the small
    tables; the batcher places the uint8 images in a shared canvas and offsets the indices (threads only:
    the canvas size changes per batch). ``resize="host"``: the workers letterbox to fixed-size uint8
    batches, which worker processes can fill too."""

    def __init__(self, owner: "GraphPreprocessed", *, depth: int) -> None:
        self.owner = owner
        super().__init__(owner.task, depth=depth, backend=owner.backend)
        self.max_batch = None if owner.dynamic_batch else 1

    def prepare(self, image: np.ndarray) -> tuple[dict[str, np.ndarray], Any]:
        return self.owner.preprocess(image)

    def collate(self, prepared: Sequence[dict[str, np.ndarray]], buffers: dict[str, Any]) -> dict[str, np.ndarray] | None:
        if self.owner.resize == "host":  # fixed-size uint8 images: stacked as any task's feeds are
            return super().collate(prepared, buffers)
        return self.owner.collate(prepared, lambda name, dtype, shape: self._ring.view(buffers, name, np.dtype(dtype), shape))

    def host_stages(self) -> HostStages | None:
        if self.owner.resize != "host":
            return None
        return HostStages(host_copy(self.task), front=PixelFront())


class GraphPreprocessed:
    """A Detector/FaceDetector running a baked model (:func:`bake_letterbox` or :func:`bake_normalize`):
    same results, its preprocessing (all of it, or the normalisation and layout) inside the model.
    ``task`` (on the original model) supplies the letterbox, the labels and ``postprocess``; ``backend``
    runs the baked model (the caller keeps both unless :meth:`open` made them). Which front end the
    backend's model has is read from its inputs: ``rows`` and its tables (``resize == "graph"``), or the
    pixels alone at the task's input size (``resize == "host"``)."""

    def __init__(self, task: Any, backend: Any, *, params: LetterboxParams | None = None) -> None:
        self.task, self.backend = task, backend
        self.params = params if params is not None else letterbox_params(task)
        self.front = LetterboxFrontEnd(self.params)
        names = [s.name for s in backend.inputs]
        pixels = next((s for s in backend.inputs if s.name == PIXELS), None)
        if pixels is not None and ROWS in names:
            self.resize = "graph"
        elif (pixels is not None and names == [PIXELS] and pixels.dtype == "uint8"
              and tuple(pixels.shape[1:]) == (*self.params.size, 3)):
            self.resize = "host"
        else:
            raise TaskError(
                f"backend inputs {[f'{s.name} {s.dtype} {s.display_shape()}' for s in backend.inputs]} are not a baked front "
                f"end for this task (expected {PIXELS!r} with {ROWS!r} and its tables from bake_letterbox(), or {PIXELS!r} "
                f"uint8 [B, {self.params.size[0]}, {self.params.size[1]}, 3] as the only input, from bake_normalize()); "
                "bake the task's model first"
            )
        self.dynamic_batch = isinstance(pixels.shape[0], str)
        self._owned: tuple[Any, ...] = ()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    @classmethod
    def open(cls, task: Any, *, runtime: RuntimeConfig | None = None, backend: str = "auto", resize: str = "graph") -> "GraphPreprocessed":
        """Bake ``task``'s ONNX model into a temporary directory and open it with ``backend`` (the input
        file is never rewritten); the result owns and closes that backend. ``resize``: ``"graph"``
        (:func:`bake_letterbox`: everything in the model, images of any sizes in one batch, streamed with
        threads) or ``"host"`` (:func:`bake_normalize`: cv2 letterboxes in the workers, the model
        normalises; streams with worker processes too)."""
        import onnx

        from ..backends import load

        if resize not in RESIZE_CHOICES:
            raise TaskError(f"GraphPreprocessed.open(resize=) must be one of {', '.join(RESIZE_CHOICES)}, got {resize!r}")
        path = task.model_path
        if path is None or Path(path).suffix.lower() != ".onnx":
            raise TaskError(
                f"GraphPreprocessed.open needs the task's ONNX model, got {str(path)!r}; for an engine, bake the "
                "ONNX with bake_letterbox() or bake_normalize(), build it, and pass the engine's backend to "
                "GraphPreprocessed(task, backend)"
            )
        params = letterbox_params(task)
        tmp = tempfile.TemporaryDirectory(prefix="trtkit-pre-")
        try:
            baked_path = os.path.join(tmp.name, Path(path).stem + "_pre.onnx")
            source, name = onnx.load(str(path)), task.inputs[0].name
            baked = (bake_letterbox(source, params=params, input_name=name) if resize == "graph"
                     else bake_normalize(source, preprocessing=task.preprocessing, size=params.size, input_name=name))
            onnx.save(baked, baked_path)
            opened = load(baked_path, backend=backend, config=runtime or RuntimeConfig())
        except BaseException:
            tmp.cleanup()
            raise
        try:
            self = cls(task, opened, params=params)
        except BaseException:
            opened.close()
            tmp.cleanup()
            raise
        self._owned, self._tmp = (opened,), tmp
        return self

    def close(self) -> None:
        for b in self._owned:
            b.close()
        self._owned = ()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> "GraphPreprocessed":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ the pipeline
    def preprocess(self, image: np.ndarray) -> tuple[dict[str, np.ndarray], Letterbox]:
        if self.resize == "host":
            return PixelFront().preprocess(self.task, image)
        return self.front.preprocess(image)

    def collate(self, prepared: Sequence[Mapping[str, np.ndarray]], alloc: Any = None) -> dict[str, np.ndarray]:
        if self.resize == "graph":
            return self.front.collate(prepared, alloc)
        return {PIXELS: np.concatenate([p[PIXELS] for p in prepared], axis=0)}

    def postprocess(self, outputs: Mapping[str, np.ndarray], meta: Letterbox) -> Any:
        return self.task.postprocess(outputs, meta)

    def split_outputs(self, outputs: Mapping[str, np.ndarray], count: int) -> list[dict[str, np.ndarray]]:
        return self.task.split_outputs(outputs, count)  # type: ignore[no-any-return]

    def __call__(self, image: Any) -> Any:
        from ._image import as_rgb

        feeds, meta = self.preprocess(as_rgb(image))
        return self.postprocess(self.backend.infer(self.collate([feeds])), meta)

    def predict_batch(self, images: Iterable[Any], *, batch_size: int = 8) -> list[Any]:
        from ._image import as_rgb

        items = list(images)
        bs = batch_size if self.dynamic_batch else 1
        results: list[Any] = []
        for start in range(0, len(items), bs):
            prepared = [self.preprocess(as_rgb(x)) for x in items[start : start + bs]]
            outs = self.split_outputs(self.backend.infer(self.collate([f for f, _ in prepared])), len(prepared))
            results.extend(self.postprocess(o, m) for o, (_, m) in zip(outs, prepared))
        return results

    def stream_stages(self, *, depth: int) -> GraphStages:
        return GraphStages(self, depth=depth)

    def stream(self, images: Iterable[Any], *, batch_size: int = 8, workers: int | None = None, depth: int = 2, pool: str = "auto") -> Iterator[Any]:
        """Like :meth:`trtkit.tasks.base.Task.stream`, the preprocessing in the model."""
        options = StreamOptions(batch_size=batch_size, workers=workers, depth=depth, pool=pool)
        return (p.result for p in stream_predictions(self, images, options=options))
