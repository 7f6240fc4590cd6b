"""``trtkit add-nms``: append box decoding + NMS to a detector's ONNX graph.

Every layout ``trtkit predict`` decodes on the host (YOLOv5/v7/yolor, YOLOv8/v11, YOLOX with its grid
decoding, SCRFD, RetinaFace MXNet and Pytorch_Retinaface) is decoded in-graph by the same layout
module (:mod:`trtkit.tasks.layouts`), so the two cannot drift apart. The result outputs what the
tutorial's engine outputs, padded to ``max_det`` per image:

    num_detections int32 [B,1], nmsed_boxes float32 [B,max_det,4] (x1,y1,x2,y2, input pixels),
    nmsed_scores float32 [B,max_det], nmsed_classes float32 [B,max_det],
    nmsed_landmarks float32 [B,max_det,10] (faces only)

(``names="trt"`` gives the EfficientNMS plugin's names instead: num_detections, detection_boxes, ...).

Where the graph can run decides how NMS is written (``target``):

* ``onnxruntime``: the standard ONNX ``NonMaxSuppression`` op (also imported by full TensorRT >= 8.5
  as INMSLayer).
* ``tensorrt`` (full TensorRT): detection uses the ``EfficientNMS_TRT`` plugin (TensorRT 11 removed the
  BatchedNMS plugins; EfficientNMS remains); faces keep ONNX NonMaxSuppression since the plugin has no
  landmark output.
* ``tensorrt-rtx``: refused. TensorRT-RTX's builder has no NonMaxSuppression implementation ("has no
  runners") and it loads no plugins, so no NMS graph builds there: build the raw model and let
  ``trtkit predict`` run NMS on the host (same boxes), or run the add-nms graph on ONNX Runtime.

Detection boxes take their argmax class only (like host-side decoding) and NMS is class-aware, so
results match :class:`~trtkit.tasks.detection.Detector` on the original model. The thresholds, the
source layout and its preprocessing are recorded in the model's metadata (``trtkit.nms.*``,
``trtkit.preprocess``) so ``trtkit predict`` applies the right preprocessing and refuses a ``--conf``
below, or an ``--iou`` other than, what the graph already applied.

Written with ``onnx.helper`` (no onnx-graphsurgeon needed); the emitted nodes follow the model's
opset (11 and up), e.g. Unsqueeze/ReduceSum axes as attributes before opset 13 and as inputs from 13.
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

__all__ = ["AddNmsConfig", "add_nms", "describe_result", "default_target", "OUTPUT_NAMES", "TARGETS", "NAME_PRESETS"]

OUTPUT_NAMES = ("num_detections", "nmsed_boxes", "nmsed_scores", "nmsed_classes", "nmsed_landmarks")
# output-name presets: the tutorial's engine (default), and TensorRT's EfficientNMS plugin names
NAME_PRESETS: dict[str, dict[str, str]] = {
    "tutorial": {n: n for n in OUTPUT_NAMES},
    "trt": {"num_detections": "num_detections", "nmsed_boxes": "detection_boxes", "nmsed_scores": "detection_scores",
            "nmsed_classes": "detection_classes", "nmsed_landmarks": "detection_landmarks"},
}
TARGETS = ("auto", "onnxruntime", "tensorrt", "tensorrt-rtx")
_P = "trtkit_nms/"  # prefix of every tensor and node we add
_TRT_MAX_K = 3840  # TensorRT's TopK limit on K (the ONNX-NMS tail's TopK; EfficientNMS_TRT uses TopK too)

_RTX_REFUSAL = (
    "TensorRT-RTX cannot build an NMS graph: its builder has no NonMaxSuppression implementation "
    "(\"has no runners\") and it loads no plugins (EfficientNMS_TRT). Build the raw model instead "
    "(trtkit build MODEL) and let trtkit predict run decoding + NMS on the host (the same boxes, tested), "
    "or write this graph for ONNX Runtime with --target onnxruntime"
)


def default_target() -> str:
    """tensorrt when full TensorRT is installed, else onnxruntime (TensorRT-RTX cannot build NMS graphs)."""
    from .._optional import available

    return "tensorrt" if available("tensorrt") else "onnxruntime"


@dataclass(frozen=True)
class AddNmsConfig:
    """``task``: detect or face. ``layout``: auto or a layout of that task (``trtkit predict --layout``).
    ``target``: where the graph will run (see the module docstring); ``auto`` picks tensorrt when full
    TensorRT is installed, else onnxruntime. ``efficient_nms``: None follows the target (True for detect
    on tensorrt). ``names``: output-name preset, ``tutorial`` (nmsed_*) or ``trt`` (detection_*)."""

    task: str = "detect"
    layout: str = "auto"
    max_det: int = 200
    iou: float | None = None  # None: 0.45 for detect (Ultralytics), 0.4 for face (InsightFace)
    conf: float | None = None  # None: 0.25 for detect, 0.5 for face
    target: str = "auto"
    efficient_nms: bool | None = None
    names: str = "tutorial"

    def __post_init__(self) -> None:
        from ..tasks.layouts import layout_names

        if self.task not in ("detect", "face"):
            raise TaskError(f"add-nms task (--task) must be 'detect' or 'face', got {self.task!r}")
        if self.layout not in layout_names(self.task):
            raise TaskError(
                f"add-nms --task {self.task} has no layout {self.layout!r} (--layout); choose one of "
                f"{', '.join(layout_names(self.task))}"
            )
        if self.max_det < 1:
            raise TaskError(f"add-nms max_det (--max-det) must be >= 1, got {self.max_det}")
        defaults = {"detect": (0.25, 0.45), "face": (0.5, 0.4)}[self.task]
        if self.conf is None:
            object.__setattr__(self, "conf", defaults[0])
        if self.iou is None:
            object.__setattr__(self, "iou", defaults[1])
        if not 0.0 <= self.iou <= 1.0 or not 0.0 <= self.conf <= 1.0:
            raise TaskError(f"add-nms iou and conf (--iou, --conf) must be in [0, 1], got iou={self.iou}, conf={self.conf}")
        if self.target not in TARGETS:
            raise TaskError(f"add-nms target (--target) must be one of {', '.join(TARGETS)}, got {self.target!r}")
        if self.names not in NAME_PRESETS:
            raise TaskError(f"add-nms names (--names) must be one of {', '.join(NAME_PRESETS)}, got {self.names!r}")
        if self.target == "tensorrt-rtx":
            raise TaskError(f"add-nms --target tensorrt-rtx: {_RTX_REFUSAL}")
        if self.efficient_nms and self.task == "face":
            raise TaskError(
                "EfficientNMS_TRT has no landmark output, so it cannot serve --task face; "
                "drop --efficient-nms (the ONNX NonMaxSuppression graph runs on ONNX Runtime and full TensorRT)"
            )
        if self.resolved_target == "tensorrt" and self.max_det > _TRT_MAX_K:
            raise TaskError(
                f"add-nms max_det (--max-det) {self.max_det} is above {_TRT_MAX_K}, the most boxes TensorRT's TopK and "
                f"EfficientNMS_TRT keep per image (target tensorrt); use --max-det {_TRT_MAX_K} or less, or "
                "--target onnxruntime"
            )
        if self.efficient_nms and self.resolved_target == "onnxruntime":
            raise TaskError(
                "--efficient-nms writes TensorRT's EfficientNMS_TRT plugin node, which ONNX Runtime cannot run "
                "(target onnxruntime); use --target tensorrt for a full-TensorRT engine, or drop --efficient-nms"
            )

    @property
    def resolved_target(self) -> str:
        return default_target() if self.target == "auto" else self.target

    @property
    def uses_efficient_nms(self) -> bool:
        if self.efficient_nms is not None:
            return self.efficient_nms
        return self.task == "detect" and self.resolved_target == "tensorrt"


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
    # TopK's K must be a constant for TensorRT's parser (8.5: "only supports input K as an initializer"), and
    # N may be below max_det: append max_det entries of -1, take the top max_det, point the filler at box 0.
    batch = g.op("Gather", [g.op("Shape", [kept]), g.const([0], np.int64)])
    filler = g.op("ConstantOfShape", [g.op("Concat", [batch, g.const([cfg.max_det], np.int64)], axis=0)], value=_tensor(-1.0))
    wide = g.op("Concat", [kept, filler], axis=1)  # [B,N+max]
    top, idx = g.op("TopK", [wide, g.const([cfg.max_det], np.int64)], outputs=2, axis=1, largest=1, sorted=1)  # [B,max]
    valid = g.op("Greater", [top, g.const(-0.5, np.float32)])  # [B,max]
    idx = g.op("Where", [valid, idx, g.const(0, np.int64)])  # kept entries index real boxes; the rest box 0, zeroed below
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
    """TensorRT's EfficientNMS_TRT plugin (boxes [B,N,4], scores [B,N,C]); TensorRT-only.
    Scores are masked to each box's argmax class first, as on the host (the plugin would otherwise
    keep one box under several classes)."""
    best = g.reduce("ReduceMax", scores, 1, keepdims=1)
    masked = g.op("Mul", [scores, g.op("Cast", [g.op("Equal", [scores, best])], to=1)])
    scores_nc = g.op("Transpose", [masked], perm=[0, 2, 1])
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

    from ..tasks.classification import labels_from_metadata
    from ..tasks.layouts import resolve_layout

    cfg = config or AddNmsConfig()
    out_path = check_output_path(output, what="add-nms output", inputs=(model,))
    proto = load_onnx(model)
    g = _Graph(proto, _opset(proto))
    specs = _specs(proto.graph)
    image = _image_input(proto)
    size = _size(image)
    meta = {p.key: p.value for p in proto.metadata_props}
    layout, binding = resolve_layout(cfg.task, cfg.layout, specs, size, labels_from_metadata(meta),
                                     inputs_text=f"input {image[0]!r} {image[1]} and ")
    if layout.has_nms:
        raise TaskError(f"model {str(model)!r} already outputs NMS results ({', '.join(s.name for s in specs)}); nothing to add")
    if layout.needs_size and size is None:
        raise TaskError(
            f"add-nms layout {layout.name} places anchors/grids for a static input size; {str(model)!r} input "
            f"{image[0]!r} is {image[1]}. Make H/W static first: trtkit reshape MODEL --shapes {image[0]}:1x3x640x640"
        )
    boxes, scores, kps = layout.graph(g, binding, size)
    efficient = cfg.uses_efficient_nms
    if efficient:
        outs = _efficient_nms_tail(g, boxes, scores, cfg)
        proto.opset_import.append(onnx.helper.make_opsetid("trt.plugins", 1))
    else:
        outs = _onnx_nms_tail(g, boxes, scores, kps, cfg)
    _set_outputs(g, outs, batch=image[1][0], cfg=cfg, efficient=efficient)
    _record(proto, cfg, layout, efficient)
    _check(proto, model, efficient=efficient)
    with atomic_output(out_path, what="add-nms output", inputs=(model,)) as tmp:
        onnx.save(proto, str(tmp))
    return out_path


def describe_result(cfg: AddNmsConfig) -> str:
    """One line for the CLI: what NMS was written and where it builds."""
    target = cfg.resolved_target
    how = "the EfficientNMS_TRT plugin" if cfg.uses_efficient_nms else "ONNX NonMaxSuppression"
    runs = {
        "onnxruntime": "runs on ONNX Runtime (and full TensorRT >= 8.5)" if not cfg.uses_efficient_nms else "",
        "tensorrt": "for full TensorRT engines (trtkit build)" + ("; ONNX Runtime cannot run the plugin" if cfg.uses_efficient_nms else ""),
    }[target]
    return (f"target {target} ({'auto-detected' if cfg.target == 'auto' else 'given'}): {how}, {runs}. "
            "TensorRT-RTX cannot build NMS graphs: for RTX build the raw model and let trtkit predict do NMS on the host")


def _record(proto: Any, cfg: AddNmsConfig, layout: Any, efficient: bool) -> None:
    """Thresholds, source layout and its preprocessing in metadata_props (predict reads them)."""
    from ..tasks.box_task import NMS_CONF_KEY, NMS_IOU_KEY

    values = {
        NMS_CONF_KEY: f"{cfg.conf!r}",
        NMS_IOU_KEY: f"{cfg.iou!r}",
        "trtkit.nms.max_det": str(cfg.max_det),
        "trtkit.nms.source_layout": layout.name,
        "trtkit.nms.kind": "EfficientNMS_TRT" if efficient else "NonMaxSuppression",
        "trtkit.nms.target": cfg.resolved_target,
        **layout.preprocess.to_metadata(),
    }
    kept = [p for p in proto.metadata_props if p.key not in values]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in values.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def _size(image: tuple[str, list[Any]]) -> tuple[int, int] | None:
    h, w = image[1][2], image[1][3]
    return (h, w) if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0 else None


def _image_input(proto: Any) -> tuple[str, list[Any]]:
    init = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in init]
    if len(inputs) != 1 or len(inputs[0].type.tensor_type.shape.dim) != 4:
        raise TaskError(f"add-nms expects one image input [B,3,H,W]; found {[i.name for i in inputs]}")
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "batch") for d in inputs[0].type.tensor_type.shape.dim]
    return inputs[0].name, dims


def _set_outputs(g: _Graph, outs: list[tuple[str, str]], *, batch: Any, cfg: AddNmsConfig, efficient: bool) -> None:
    from onnx import TensorProto, helper

    int_classes = efficient  # EfficientNMS_TRT's detection_classes is int32
    names = NAME_PRESETS[cfg.names]
    shapes = {
        "num_detections": (TensorProto.INT32, [batch, 1]),
        "nmsed_boxes": (TensorProto.FLOAT, [batch, cfg.max_det, 4]),
        "nmsed_scores": (TensorProto.FLOAT, [batch, cfg.max_det]),
        "nmsed_classes": (TensorProto.INT32 if int_classes else TensorProto.FLOAT, [batch, cfg.max_det]),
        "nmsed_landmarks": (TensorProto.FLOAT, [batch, cfg.max_det, 10]),
    }
    del g.graph.output[:]
    for tensor, name in outs:
        g.graph.node.append(helper.make_node("Identity", [tensor], [names[name]], name=f"{_P}{name}"))
        elem, shape = shapes[name]
        g.graph.output.append(helper.make_tensor_value_info(names[name], elem, shape))


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
