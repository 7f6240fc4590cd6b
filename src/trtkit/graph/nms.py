"""``trtkit add-nms``: append box decoding + NMS to a detector's ONNX graph.

The result outputs exactly what the tutorial's SCRFD engine outputs, padded to
``max_det`` per image:

    num_detections int32 [B,1], nmsed_boxes float32 [B,max_det,4] (x1,y1,x2,y2, input pixels),
    nmsed_scores float32 [B,max_det], nmsed_classes float32 [B,max_det],
    nmsed_landmarks float32 [B,max_det,10] (faces only)

By default NMS is the standard ONNX ``NonMaxSuppression`` op, which ONNX
Runtime runs and TensorRT's parser imports (INMSLayer, TensorRT >= 8.5), so the same file
works on both. TensorRT-RTX 1.7 parses it too but its builder has no NonMaxSuppression
implementation ("has no runners"), so for RTX keep NMS on the host (trtkit's Detector does).
Detection boxes take their argmax class only (like host-side YOLO decoding) and
NMS is class-aware, so results match :class:`~trtkit.tasks.detection.Detector`
run on the original model. ``efficient_nms=True`` instead emits TensorRT's
``EfficientNMS_TRT`` plugin node (faster on TensorRT, but no runtime other than
TensorRT runs it; its ``nmsed_classes`` is int32, as the plugin defines).

Written with ``onnx.helper`` (no onnx-graphsurgeon needed); the emitted nodes
follow the model's opset (11 and up), e.g. Unsqueeze/ReduceSum axes as
attributes before opset 13 and as inputs from 13.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..atomic import atomic_output, check_output_path
from ..errors import TaskError
from .onnx_io import load_onnx
from ..spec import TensorSpec

__all__ = ["AddNmsConfig", "add_nms", "OUTPUT_NAMES"]

OUTPUT_NAMES = ("num_detections", "nmsed_boxes", "nmsed_scores", "nmsed_classes", "nmsed_landmarks")
_P = "trtkit_nms/"  # prefix of every tensor and node we add


@dataclass(frozen=True)
class AddNmsConfig:
    """``task``: detect (YOLO v5/v8/v11 heads) or face (SCRFD heads with landmarks).
    ``layout`` (detect only): auto, yolov8 ([B,4+C,N]) or yolov5 ([B,N,5+C])."""

    task: str = "detect"
    layout: str = "auto"
    max_det: int = 200
    iou: float = 0.45
    conf: float = 0.25
    efficient_nms: bool = False
    anchors: int = 2

    def __post_init__(self) -> None:
        if self.task not in ("detect", "face"):
            raise TaskError(f"add-nms task (--task) must be 'detect' or 'face', got {self.task!r}")
        if self.layout not in ("auto", "yolov8", "yolov5"):
            raise TaskError(
                f"add-nms layout (--layout) must be auto, yolov8 or yolov5, got {self.layout!r} "
                "(YOLOX: export with --decode_in_inference and use yolov5)"
            )
        if self.max_det < 1:
            raise TaskError(f"add-nms max_det (--max-det) must be >= 1, got {self.max_det}")
        if not 0.0 <= self.iou <= 1.0 or not 0.0 <= self.conf <= 1.0:
            raise TaskError(f"add-nms iou and conf (--iou, --conf) must be in [0, 1], got iou={self.iou}, conf={self.conf}")
        if self.efficient_nms and self.task == "face":
            raise TaskError(
                "EfficientNMS_TRT has no landmark output, so it cannot serve --task face; "
                "drop --efficient-nms (the ONNX NonMaxSuppression graph runs on TensorRT too)"
            )


class _Graph:
    """Appends nodes to an ONNX graph, emitting opset-appropriate forms."""

    def __init__(self, model: Any, opset: int) -> None:
        import onnx

        self.onnx = onnx
        self.helper = onnx.helper
        self.model = model
        self.graph = model.graph
        self.opset = opset
        self._n = 0

    def _name(self, hint: str) -> str:
        self._n += 1
        return f"{_P}{hint}_{self._n}"

    def const(self, value: Any, dtype: Any, hint: str = "const") -> str:
        name = self._name(hint)
        self.graph.initializer.append(self.onnx.numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], hint: str | None = None, outputs: int = 1, **attrs: Any) -> Any:
        names = [self._name(hint or op_type.lower()) for _ in range(outputs)]
        self.graph.node.append(self.helper.make_node(op_type, list(inputs), names, name=names[0], **attrs))
        return names[0] if outputs == 1 else names

    def unsqueeze(self, x: str, axes: Sequence[int]) -> str:
        if self.opset >= 13:
            return self.op("Unsqueeze", [x, self.const(list(axes), np.int64)])
        return self.op("Unsqueeze", [x], axes=list(axes))

    def reduce(self, op_type: str, x: str, axis: int, *, keepdims: int) -> str:
        since = 18 if op_type == "ReduceMax" else 13  # when axes became an input
        if self.opset >= since:
            return self.op(op_type, [x, self.const([axis], np.int64)], keepdims=keepdims)
        return self.op(op_type, [x], axes=[axis], keepdims=keepdims)

    def slice(self, x: str, axis: int, start: int, end: int) -> str:
        c = self.const
        return self.op("Slice", [x, c([start], np.int64), c([end], np.int64), c([axis], np.int64)])


def _specs(graph: Any) -> tuple[TensorSpec, ...]:
    from onnx import helper

    specs = []
    for out in graph.output:
        t = out.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
        dtype = helper.tensor_dtype_to_np_dtype(t.elem_type).name if t.elem_type else "float32"
        specs.append(TensorSpec(out.name, dtype, tuple(dims)))
    return tuple(specs)


def _opset(model: Any) -> int:
    version = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if version < 11:
        raise TaskError(
            f"add-nms needs ONNX opset >= 11 (NonMaxSuppression/TopK forms); the model has opset {version}. "
            "Upgrade it first: onnx.version_converter.convert_version(model, 13)"
        )
    return version


# ---------------------------------------------------------------- heads

def _yolo_heads(g: _Graph, specs: tuple[TensorSpec, ...], layout: str) -> tuple[str, str, None]:
    """boxes [B,N,4] x1y1x2y2 and per-class scores [B,C,N] from a YOLO output."""
    out = _yolo_output(specs)
    layout = _yolo_layout(out, layout, specs)
    if layout == "yolov8":
        chw = out.name  # [B, 4+C, N]
        boxes = g.op("Transpose", [g.slice(chw, 1, 0, 4)], perm=[0, 2, 1])
        scores = g.slice(chw, 1, 4, 1 << 30)
    else:
        nhc = out.name  # [B, N, 5+C]
        boxes = g.slice(nhc, 2, 0, 4)
        cls = g.op("Mul", [g.slice(nhc, 2, 5, 1 << 30), g.slice(nhc, 2, 4, 5)])
        scores = g.op("Transpose", [cls], perm=[0, 2, 1])
    xy, wh = g.slice(boxes, 2, 0, 2), g.slice(boxes, 2, 2, 4)
    half = g.op("Mul", [wh, g.const(0.5, np.float32)])
    xyxy = g.op("Concat", [g.op("Sub", [xy, half]), g.op("Add", [xy, half])], axis=2)
    return xyxy, scores, None


def _yolo_output(specs: tuple[TensorSpec, ...]) -> TensorSpec:
    """The one rank-3 YOLO output; anything else (SCRFD heads, logits, several outputs) is refused."""
    if _looks_like_scrfd(specs):
        raise _layout_error("detect", specs, hint="These look like SCRFD face heads: use --task face "
                            "(AddNmsConfig(task='face'))")
    if len(specs) != 1 or specs[0].rank != 3:
        raise _layout_error("detect", specs)
    return specs[0]


def _looks_like_scrfd(specs: tuple[TensorSpec, ...]) -> bool:
    from ..tasks.face import group_scrfd_heads

    names = [s.name.lower() for s in specs]
    named = any(n.startswith(("score_", "bbox_", "kps_")) for n in names)
    return named or (len(specs) in (6, 9) and group_scrfd_heads(specs, (0, 0)) is not None)


def _fits_v8(a: Any, b: Any) -> bool:
    """[B, 4+C, N]: 4+C static and >= 5, and (when N is static too) fewer channels than boxes."""
    return isinstance(a, int) and a >= 5 and (not isinstance(b, int) or a < b)


def _fits_v5(a: Any, b: Any) -> bool:
    """[B, N, 5+C]: 5+C static and >= 6, and (when N is static too) fewer channels than boxes."""
    return isinstance(b, int) and b >= 6 and (not isinstance(a, int) or b < a)


def _yolo_layout(out: TensorSpec, layout: str, specs: tuple[TensorSpec, ...]) -> str:
    """The layout ``out`` has; a forced ``layout`` must agree with the shape, else decoding writes garbage."""
    from ..tasks.base import describe_outputs

    _, a, b = out.shape
    fits = {"yolov8": _fits_v8(a, b), "yolov5": _fits_v5(a, b)}
    expected = {"yolov8": "[B,4+C,N] with a static 4+C >= 5", "yolov5": "[B,N,5+C] with a static last dim 5+C >= 6"}
    if layout == "auto":
        found = [name for name, ok in fits.items() if ok]
        if not found:
            raise _layout_error("detect", specs)
        return found[0]
    if not fits[layout]:
        other = "yolov5" if layout == "yolov8" else "yolov8"
        fix = f"the shape fits {other}: use --layout {other} or auto" if fits[other] else "check --task and --layout"
        raise TaskError(
            f"add-nms --layout {layout}: expected output {expected[layout]}; found {describe_outputs((out,))}; {fix}"
        )
    return layout


def _scrfd_heads(g: _Graph, specs: tuple[TensorSpec, ...], size: tuple[int, int], anchors: int) -> tuple[str, str, str | None]:
    """Decode SCRFD strides in-graph: boxes [B,N,4], scores [B,1,N], landmarks [B,N,10]."""
    from ..tasks.face import anchor_centers, group_scrfd_heads

    heads = group_scrfd_heads(specs, size, anchors=anchors)
    if heads is None:
        raise _layout_error("face", specs)
    rank = {s.name: s.rank for s in specs}
    has_kps = all("kps" in h for h in heads.values())
    boxes, scores, kps = [], [], []
    for stride, head in heads.items():
        def batched(name: str) -> str:  # insightface exports drop the batch axis: [N, k] -> [1, N, k]
            return g.unsqueeze(name, [0]) if rank[name] == 2 else name

        centers = anchor_centers(*size, stride, anchors)[None]  # [1, N, 2]
        c = g.const(centers, np.float32, f"anchors{stride}")
        dist = g.op("Mul", [batched(head["bbox"]), g.const(float(stride), np.float32)])
        x1y1 = g.op("Sub", [c, g.slice(dist, 2, 0, 2)])
        x2y2 = g.op("Add", [c, g.slice(dist, 2, 2, 4)])
        boxes.append(g.op("Concat", [x1y1, x2y2], axis=2))
        scores.append(batched(head["score"]))
        if has_kps:
            tiled = g.const(np.tile(centers, (1, 1, 5)), np.float32, f"anchors{stride}x5")
            kps.append(g.op("Add", [g.op("Mul", [batched(head["kps"]), g.const(float(stride), np.float32)]), tiled]))
    all_scores = g.op("Transpose", [g.op("Concat", scores, axis=1)], perm=[0, 2, 1])  # [B, 1, N]
    return g.op("Concat", boxes, axis=1), all_scores, (g.op("Concat", kps, axis=1) if has_kps else None)


def _layout_error(task: str, specs: tuple[TensorSpec, ...], *, hint: str = "Check --task, or the model already contains NMS") -> TaskError:
    from ..tasks.base import describe_outputs

    expected = {
        "detect": "one YOLO output [B,4+C,N] (v8/v11) or [B,N,5+C] (v5)",
        "face": "SCRFD heads score/bbox/kps at strides 8/16/32 for a static input size",
    }[task]
    return TaskError(
        f"add-nms --task {task}: expected {expected}; found outputs {describe_outputs(specs)}. {hint}"
    )


# ---------------------------------------------------------------- NMS tail

def _onnx_nms_tail(g: _Graph, boxes: str, scores: str, kps: str | None, cfg: AddNmsConfig) -> list[tuple[str, str]]:
    """NonMaxSuppression on argmax-class scores, then per-image top-``max_det`` padded outputs."""
    best = g.reduce("ReduceMax", scores, 1, keepdims=1)  # [B,1,N]
    masked = g.op("Mul", [scores, g.op("Cast", [g.op("Equal", [scores, best])], to=1)])  # argmax class only
    sel = g.op(
        "NonMaxSuppression",
        [boxes, masked, g.const([cfg.max_det], np.int64), g.const([cfg.iou], np.float32), g.const([cfg.conf], np.float32)],
    )  # [K, 3] = (batch, class, box)
    best2 = g.reduce("ReduceMax", scores, 1, keepdims=0)  # [B,N]
    cls = g.op("Cast", [g.op("ArgMax", [scores], axis=1, keepdims=0)], to=1)  # [B,N] float
    dense = g.op("ConstantOfShape", [g.op("Shape", [best2])], value=_tensor(-1.0))
    where = g.op("Gather", [sel, g.const([0, 2], np.int64)], axis=1)  # [K, 2] = (batch, box)
    kept = g.op("ScatterND", [dense, where, g.op("GatherND", [best2, where])])  # [B,N]: score if kept else -1
    n = g.op("Gather", [g.op("Shape", [kept]), g.const([1], np.int64)])
    k = g.op("Cast", [g.op("Min", [g.op("Cast", [n], to=1), g.const([float(cfg.max_det)], np.float32)])], to=7)
    top, idx = g.op("TopK", [kept, k], outputs=2, axis=1, largest=1, sorted=1)  # [B,k]
    pad = g.op("Concat", [g.const([0, 0, 0], np.int64), g.op("Sub", [g.const([cfg.max_det], np.int64), k])], axis=0)
    top = g.op("Pad", [top, pad, g.const(-1.0, np.float32)])
    idx = g.op("Pad", [idx, pad, g.const(0, np.int64)])
    valid = g.op("Greater", [top, g.const(-0.5, np.float32)])  # [B,max]
    validf = g.op("Cast", [valid], to=1)
    count = g.op("Cast", [g.reduce("ReduceSum", g.op("Cast", [valid], to=7), 1, keepdims=1)], to=6)

    def take(src: str, width: int) -> str:  # src [B,N,width] -> [B,max,width], zeros in padding
        at = g.op("Expand", [g.unsqueeze(idx, [2]), g.const([1, 1, width], np.int64)])
        return g.op("Mul", [g.op("GatherElements", [src, at], axis=1), g.unsqueeze(validf, [2])])

    outs = [
        (count, "num_detections"),
        (take(boxes, 4), "nmsed_boxes"),
        (g.op("Mul", [top, validf]), "nmsed_scores"),
        (g.op("Mul", [g.op("GatherElements", [cls, idx], axis=1), validf]), "nmsed_classes"),
    ]
    if kps is not None:
        outs.append((take(kps, 10), "nmsed_landmarks"))
    return outs


def _efficient_nms_tail(g: _Graph, boxes: str, scores: str, cfg: AddNmsConfig) -> list[tuple[str, str]]:
    """TensorRT's EfficientNMS_TRT plugin (boxes [B,N,4], scores [B,N,C]); TensorRT-only."""
    scores_nc = g.op("Transpose", [scores], perm=[0, 2, 1])
    count, b, s, c = g.op(
        "EfficientNMS_TRT",
        [boxes, scores_nc],
        outputs=4,
        domain="trt.plugins",
        plugin_version="1",
        background_class=-1,
        box_coding=0,
        iou_threshold=float(cfg.iou),
        score_threshold=float(cfg.conf),
        max_output_boxes=int(cfg.max_det),
        score_activation=0,
        class_agnostic=0,
    )
    return [(count, "num_detections"), (b, "nmsed_boxes"), (s, "nmsed_scores"), (c, "nmsed_classes")]


def _tensor(value: float) -> Any:
    from onnx import numpy_helper

    return numpy_helper.from_array(np.asarray([value], np.float32))


# ---------------------------------------------------------------- entry point

def add_nms(model: str | os.PathLike[str], output: str | os.PathLike[str], *, config: AddNmsConfig | None = None) -> Path:
    """Write ``output``: ``model`` with decoding + NMS appended (see the module docstring). Atomic."""
    import onnx

    cfg = config or AddNmsConfig()
    out_path = check_output_path(output, what="add-nms output", inputs=(model,))
    proto = load_onnx(model)
    g = _Graph(proto, _opset(proto))
    specs = _specs(proto.graph)
    if any(s.name in OUTPUT_NAMES or s.name.lower() in ("num_detections", "num_dets") for s in specs):
        raise TaskError(f"model {str(model)!r} already outputs NMS results ({', '.join(s.name for s in specs)}); nothing to add")
    image = _image_input(proto)
    if cfg.task == "face":
        from ..tasks.face import group_scrfd_heads

        if group_scrfd_heads(specs, (0, 0), anchors=cfg.anchors) is None:  # not SCRFD at all, whatever the size
            raise _layout_error("face", specs)
        size = _static_size(image, model)
        boxes, scores, kps = _scrfd_heads(g, specs, size, cfg.anchors)
    else:
        boxes, scores, kps = _yolo_heads(g, specs, cfg.layout)
    if cfg.efficient_nms:
        outs = _efficient_nms_tail(g, boxes, scores, cfg)
        proto.opset_import.append(onnx.helper.make_opsetid("trt.plugins", 1))
    else:
        outs = _onnx_nms_tail(g, boxes, scores, kps, cfg)
    _set_outputs(g, outs, batch=image[1][0], cfg=cfg)
    _check(proto, model, efficient=cfg.efficient_nms)
    with atomic_output(out_path, what="add-nms output", inputs=(model,)) as tmp:
        onnx.save(proto, str(tmp))
    return out_path


def _image_input(proto: Any) -> tuple[str, list[Any]]:
    init = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in init]
    if len(inputs) != 1 or len(inputs[0].type.tensor_type.shape.dim) != 4:
        raise TaskError(f"add-nms expects one image input [B,3,H,W]; found {[i.name for i in inputs]}")
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "batch") for d in inputs[0].type.tensor_type.shape.dim]
    return inputs[0].name, dims


def _static_size(image: tuple[str, list[Any]], model: Any) -> tuple[int, int]:
    name, dims = image
    h, w = dims[2], dims[3]
    if not (isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0):
        raise TaskError(
            f"add-nms --task face needs a static input size to place SCRFD anchors; {str(model)!r} input {name!r} "
            f"is {dims}. Make H/W static first: trtkit reshape MODEL --shapes {name}:1x3x640x640"
        )
    return h, w


def _set_outputs(g: _Graph, outs: list[tuple[str, str]], *, batch: Any, cfg: AddNmsConfig) -> None:
    from onnx import TensorProto, helper

    int_classes = cfg.efficient_nms  # EfficientNMS_TRT's detection_classes is int32
    shapes = {
        "num_detections": (TensorProto.INT32, [batch, 1]),
        "nmsed_boxes": (TensorProto.FLOAT, [batch, cfg.max_det, 4]),
        "nmsed_scores": (TensorProto.FLOAT, [batch, cfg.max_det]),
        "nmsed_classes": (TensorProto.INT32 if int_classes else TensorProto.FLOAT, [batch, cfg.max_det]),
        "nmsed_landmarks": (TensorProto.FLOAT, [batch, cfg.max_det, 10]),
    }
    del g.graph.output[:]
    for tensor, name in outs:
        g.graph.node.append(helper.make_node("Identity", [tensor], [name], name=f"{_P}{name}"))
        elem, shape = shapes[name]
        g.graph.output.append(helper.make_tensor_value_info(name, elem, shape))


def _check(proto: Any, model: Any, *, efficient: bool) -> None:
    """onnx.checker (plus shape inference for the pure-ONNX graph): a bug here is ours, so say so."""
    import onnx

    try:
        onnx.checker.check_model(proto, full_check=not efficient)
    except onnx.checker.ValidationError as exc:
        raise TaskError(
            f"add-nms produced a graph that onnx.checker rejects for {str(model)!r}: {exc}. "
            "This is a trtkit bug; please report it with the model's `trtkit inspect` output"
        ) from exc
