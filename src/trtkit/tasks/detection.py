"""Object detection for the YOLO family and for graphs that already contain NMS.

Output layouts (picked from output names and shapes, or forced with ``DetectorConfig.layout``):

* ``yolov8``  one output ``[B, 4+C, N]``: cx,cy,w,h + class scores, no objectness (YOLOv8/v11).
* ``yolov5``  one output ``[B, N, 5+C]``: cx,cy,w,h, objectness, class scores (YOLOv5/v7).
* ``yolox``   like yolov5 but raw grid offsets (YOLOX exported without ``--decode_in_inference``):
  decoded here with strides 8/16/32. Auto-detected when N equals the anchor-free cell count and
  the w/h column is log-space; YOLOX also wants ``scale=1.0, bgr=True, center=False``.
* ``efficient_nms``  ``num_detections [B,1]``, boxes ``[B,K,4]``, scores ``[B,K]``, classes ``[B,K]``
  (TensorRT EfficientNMS / ``trtkit add-nms``; names ``boxes``/``det_boxes``/``nmsed_boxes`` etc.).
* ``onnx_nms``  ONNX NonMaxSuppression graphs: ``selected_indices [K,3]`` (batch, class, box) plus
  boxes ``[B,N,4]`` (x1,y1,x2,y2) and scores ``[B,C,N]``.

Class names come from ``DetectorConfig.labels`` or the model's Ultralytics ``names`` metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import numpy as np

from ..errors import TaskError
from ..spec import TensorSpec
from ._image import Letterbox, letterbox, nms, scale_boxes, to_tensor, xywh_to_xyxy
from .base import Task, check_input_size, describe_outputs, input_dtype, model_metadata
from .classification import labels_from_metadata

__all__ = ["DetectorConfig", "Detections", "Detector", "LAYOUTS", "find_nms_outputs"]

LAYOUTS = ("auto", "yolov8", "yolov5", "yolox", "efficient_nms", "onnx_nms")
YOLOX_STRIDES = (8, 16, 32)

# EfficientNMS-style output roles -> accepted names (TensorRT plugin, YOLO exporters, the tutorial's SCRFD engine)
NMS_NAMES: dict[str, tuple[str, ...]] = {
    "count": ("num_detections", "num_dets", "num"),
    "boxes": ("boxes", "det_boxes", "nmsed_boxes", "detection_boxes", "bboxes"),
    "scores": ("scores", "det_scores", "nmsed_scores", "detection_scores"),
    "classes": ("classes", "det_classes", "nmsed_classes", "detection_classes", "labels"),
    "landmarks": ("landmarks", "det_landmarks", "nmsed_landmarks", "kps"),
}


@dataclass(frozen=True)
class DetectorConfig:
    """``input_size`` (h, w) is needed only for dynamic H/W models without ``imgsz`` metadata (default 640).
    ``scale``/``mean`` map pixels to model input: ``(pixel - mean) * scale``."""

    conf: float = 0.25
    iou: float = 0.45
    max_det: int = 300
    class_agnostic: bool = False
    layout: str = "auto"
    input_size: tuple[int, int] | None = None
    pad_value: int = 114
    center: bool = True
    scale: float = 1 / 255
    mean: float = 0.0
    bgr: bool = False
    labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise TaskError(f"DetectorConfig.layout={self.layout!r} is unknown; choose one of {', '.join(LAYOUTS)}")
        if not 0.0 <= self.conf <= 1.0 or not 0.0 <= self.iou <= 1.0:
            raise TaskError(
                f"conf and iou (--conf, --iou) must be in [0, 1], got conf={self.conf}, iou={self.iou}; e.g. --conf 0.25"
            )
        if self.max_det < 1:
            raise TaskError(f"DetectorConfig.max_det must be >= 1, got {self.max_det}")
        if self.input_size is not None:
            check_input_size(self.input_size)


@dataclass(frozen=True)
class Detections:
    """Boxes x1,y1,x2,y2 in original image pixels, best first."""

    boxes: np.ndarray  # [N, 4] float32
    scores: np.ndarray  # [N] float32
    class_ids: np.ndarray  # [N] int64
    labels: tuple[str, ...]

    columns: ClassVar[tuple[str, ...]] = ("label", "score", "x1", "y1", "x2", "y2")

    def __len__(self) -> int:
        return len(self.scores)

    def to_json(self) -> dict[str, Any]:
        return {
            "task": "detect",
            "detections": [
                {
                    "class_id": int(c),
                    "label": label,
                    "score": round(float(s), 6),
                    "box": [round(float(v), 2) for v in b],
                }
                for b, s, c, label in zip(self.boxes, self.scores, self.class_ids, self.labels)
            ],
        }

    def rows(self) -> list[list[str]]:
        return [
            [label or str(int(c)), f"{float(s):.3f}", *(f"{float(v):.1f}" for v in b)]
            for b, s, c, label in zip(self.boxes, self.scores, self.class_ids, self.labels)
        ]

    def draw(self, image: np.ndarray) -> np.ndarray:
        from .draw import draw_boxes

        text = [f"{label or int(c)} {float(s):.2f}" for s, c, label in zip(self.scores, self.class_ids, self.labels)]
        return draw_boxes(image, self.boxes, labels=text, class_ids=[int(c) for c in self.class_ids])


def find_nms_outputs(outputs: tuple[TensorSpec, ...]) -> dict[str, str] | None:
    """Map EfficientNMS roles (count/boxes/scores/classes[/landmarks]) to output names, or None."""
    names = {o.name.lower(): o.name for o in outputs}
    found = {role: names[n] for role, options in NMS_NAMES.items() for n in options if n in names}
    if all(role in found for role in ("count", "boxes", "scores")):
        return found
    return None


class Detector(Task[DetectorConfig, Detections]):
    """YOLO detection (v5/v8/v11/YOLOX) and NMS-in-graph models; see the module docstring for layouts."""

    name = "detect"
    config_type = DetectorConfig

    # ------------------------------------------------------------ model checks
    def _check_model(self) -> None:
        ins = self.inputs
        if len(ins) != 1 or ins[0].rank != 4:
            raise TaskError(
                f"a detector takes one image input [B,3,H,W]; found inputs {describe_outputs(ins)}. "
                "Pick the task that matches the model"
            )
        meta = model_metadata(self.backend, self.model_path)
        self.labels = self.config.labels or labels_from_metadata(meta)
        self.stride = _stride(meta)
        self.input_size = self._input_size(meta)
        self.layout = self._detect_layout()

    def _input_size(self, meta: Mapping[str, str]) -> tuple[int, int]:
        h, w = self.inputs[0].shape[2:4]
        given = self.config.input_size
        if isinstance(h, int) and isinstance(w, int):
            if given is not None and tuple(given) != (h, w):
                raise TaskError(
                    f"input_size (--imgsz) {given[0]}x{given[1]} conflicts with the model's static input "
                    f"{self.inputs[0].display_shape()}; drop --imgsz / input_size or set it to {h}"
                    + (f"x{w}" if h != w else "")
                )
            return h, w
        if given is not None:
            return check_input_size(given, stride=self.stride)
        import ast

        try:
            size = ast.literal_eval(meta.get("imgsz", "None"))
        except (ValueError, SyntaxError):
            size = None
        if isinstance(size, (list, tuple)) and len(size) == 2:
            return int(size[0]), int(size[1])
        if isinstance(size, int):
            return size, size
        return 640, 640

    def _detect_layout(self) -> str:
        outs = self.outputs
        forced = self.config.layout
        if forced in ("efficient_nms", "onnx_nms") or (forced == "auto" and len(outs) > 1):
            if find_nms_outputs(outs) and forced in ("auto", "efficient_nms"):
                return "efficient_nms"
            if _onnx_nms_outputs(outs) and forced in ("auto", "onnx_nms"):
                return "onnx_nms"
        elif len(outs) >= 1 and outs[0].rank == 3:
            if forced != "auto":
                return forced
            return "yolo?"  # v8 vs v5 vs YOLOX: decided from the actual output shape (dims may be dynamic)
        raise self._layout_error("")

    def _layout_error(self, detail: str) -> TaskError:
        return TaskError(
            "model outputs do not match a detection layout: expected a YOLOv8/v11 output [B,4+C,N], a YOLOv5/YOLOX "
            "output [B,N,5+C], EfficientNMS outputs (num_detections, boxes, scores, classes) or ONNX NMS outputs "
            f"(selected_indices [K,3], boxes, scores); found {describe_outputs(self.outputs)}{detail}. "
            "Pick the task that matches the model (--task classify/face/ocr) or set DetectorConfig.layout"
        )

    # ------------------------------------------------------------ pipeline
    def preprocess(self, image: np.ndarray) -> tuple[dict[str, np.ndarray], Letterbox]:
        cfg = self.config
        boxed, info = letterbox(image, self.input_size, pad_value=cfg.pad_value, center=cfg.center)
        if cfg.bgr:
            boxed = boxed[..., ::-1]
        tensor = to_tensor(boxed, mean=(cfg.mean,) * 3, std=(1.0 / cfg.scale,) * 3)
        spec = self.inputs[0]
        return {spec.name: tensor.astype(input_dtype(spec), copy=False)}, info

    def postprocess(self, outputs: Mapping[str, np.ndarray], meta: Letterbox) -> Detections:
        if self.layout == "efficient_nms":
            boxes, scores, classes = self._from_efficient_nms(outputs)
        elif self.layout == "onnx_nms":
            boxes, scores, classes = self._from_onnx_nms(outputs)
        else:
            boxes, scores, classes = self._from_yolo(np.asarray(outputs[self.outputs[0].name], np.float32))
        order = np.argsort(-scores, kind="stable")[: self.config.max_det]
        boxes, scores, classes = boxes[order], scores[order], classes[order]
        labels = tuple(self.labels[c] if 0 <= c < len(self.labels) else str(c) for c in classes.tolist())
        return Detections(
            boxes=scale_boxes(boxes, meta) if len(boxes) else np.zeros((0, 4), np.float32),
            scores=scores.astype(np.float32),
            class_ids=classes.astype(np.int64),
            labels=labels,
        )

    def _yolo_kind(self, raw: np.ndarray) -> str:
        if self.layout != "yolo?":
            return self.layout
        _, a, b = raw.shape
        nc = len(self.labels)
        if nc and a == 4 + nc and b != 4 + nc:
            return "yolov8"
        if nc and b == 5 + nc and a != 5 + nc:
            return self._v5_or_yolox(raw)
        if a < b and a >= 5:
            return "yolov8"
        if b < a and b >= 6:
            return self._v5_or_yolox(raw)
        raise self._layout_error(f" (actual output shape {list(raw.shape)})")

    def _v5_or_yolox(self, raw: np.ndarray) -> str:
        h, w = self.input_size
        cells = sum((h // s) * (w // s) for s in YOLOX_STRIDES)
        log_wh = raw.shape[1] == cells and float(np.median(raw[0, :, 2:4])) < 8.0  # raw log-space w,h
        return "yolox" if log_wh else "yolov5"

    def _from_yolo(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        kind = self._yolo_kind(raw)
        pred = raw[0].T if kind == "yolov8" else raw[0]
        if kind == "yolox":
            pred = _decode_yolox(pred, self.input_size)
        if kind == "yolov8":
            cls_scores = pred[:, 4:]
        else:
            cls_scores = pred[:, 5:] * pred[:, 4:5]
        if cls_scores.shape[1] == 0:
            raise self._layout_error(f" (no class columns in output shape {list(raw.shape)})")
        classes = cls_scores.argmax(1)
        scores = cls_scores[np.arange(len(classes)), classes]
        keep = scores >= self.config.conf
        boxes, scores, classes = xywh_to_xyxy(pred[keep, :4]), scores[keep], classes[keep]
        kept = nms(boxes, scores, iou=self.config.iou, classes=None if self.config.class_agnostic else classes,
                   max_det=self.config.max_det)
        return boxes[kept], scores[kept], classes[kept]

    def _from_efficient_nms(self, outputs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        roles = find_nms_outputs(self.outputs) or {}
        n = int(np.asarray(outputs[roles["count"]]).reshape(-1)[0])
        boxes = np.asarray(outputs[roles["boxes"]], np.float32).reshape(-1, 4)[:n]
        scores = np.asarray(outputs[roles["scores"]], np.float32).reshape(-1)[:n]
        classes = (
            np.asarray(outputs[roles["classes"]]).reshape(-1)[:n].astype(np.int64)
            if "classes" in roles else np.zeros(n, np.int64)
        )
        keep = scores >= self.config.conf
        return boxes[keep], scores[keep], classes[keep]

    def _from_onnx_nms(self, outputs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        sel_name, boxes_name, scores_name = _onnx_nms_outputs(self.outputs) or ("", "", "")
        sel = np.asarray(outputs[sel_name]).reshape(-1, 3).astype(np.int64)
        sel = sel[sel[:, 0] == 0]
        boxes_all = np.asarray(outputs[boxes_name], np.float32)[0]
        scores_all = np.asarray(outputs[scores_name], np.float32)[0]  # [C, N]
        boxes = boxes_all[sel[:, 2]]
        scores = scores_all[sel[:, 1], sel[:, 2]]
        keep = scores >= self.config.conf
        return boxes[keep], scores[keep], sel[keep, 1]

    def split_outputs(self, outputs: Mapping[str, np.ndarray], count: int) -> list[dict[str, np.ndarray]]:
        if self.layout != "onnx_nms":
            return super().split_outputs(outputs, count)
        sel_name = (_onnx_nms_outputs(self.outputs) or ("",))[0]
        sel = np.asarray(outputs[sel_name])
        rest = super().split_outputs({k: v for k, v in outputs.items() if k != sel_name}, count)
        for i, part in enumerate(rest):
            mine = sel[sel[:, 0] == i].copy()
            mine[:, 0] = 0
            part[sel_name] = mine
        return rest


def _stride(meta: Mapping[str, str]) -> int:
    """The model's coarsest stride: Ultralytics' ``stride`` metadata (an int, or a list per head), else 32."""
    import ast

    try:
        value = ast.literal_eval(meta.get("stride", "None"))
    except (ValueError, SyntaxError):
        value = None
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (int, float)) for v in value):
        value = max(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 1:
        return int(value)
    return 32


def _onnx_nms_outputs(outputs: tuple[TensorSpec, ...]) -> tuple[str, str, str] | None:
    """(selected_indices, boxes, scores) names for an ONNX-NMS graph, or None."""
    sel = [o for o in outputs if o.rank == 2 and o.shape[1] == 3 and o.dtype.startswith("int")]
    boxes = [o for o in outputs if o.rank == 3 and o.shape[2] == 4 and o.dtype.startswith("float")]
    scores = [o for o in outputs if o.rank == 3 and o not in boxes and o.dtype.startswith("float")]
    if sel and boxes and scores:
        return sel[0].name, boxes[0].name, scores[0].name
    return None


def _decode_yolox(pred: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """YOLOX raw head output -> cx,cy,w,h in input pixels (grid offsets + exp sizes, per stride)."""
    h, w = size
    grids, strides = [], []
    for s in YOLOX_STRIDES:
        ys, xs = np.meshgrid(np.arange(h // s), np.arange(w // s), indexing="ij")
        grids.append(np.stack([xs, ys], -1).reshape(-1, 2))
        strides.append(np.full((grids[-1].shape[0], 1), s))
    grid = np.concatenate(grids).astype(np.float32)
    stride = np.concatenate(strides).astype(np.float32)
    out = pred.copy()
    out[:, :2] = (pred[:, :2] + grid) * stride
    out[:, 2:4] = np.exp(pred[:, 2:4]) * stride
    return out
