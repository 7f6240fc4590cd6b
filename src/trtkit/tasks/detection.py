"""Object detection: YOLO heads (v5/v7/yolor, v8/v11, YOLOX) and graphs that already contain NMS.

The output layout is picked from the model's outputs (or named with ``DetectorConfig.layout`` /
``--layout``); every layout lives in :mod:`trtkit.tasks.layouts` with its decoding and its own
preprocessing defaults (YOLOv5/v8: RGB, /255, centred letterbox 114; YOLOX: BGR, raw pixels, corner
pad 114), which ``DetectorConfig.preprocess`` overrides field by field. ``Detector.describe()`` says
which layout and preprocessing a run uses.

Class names come from ``DetectorConfig.labels`` or the model's Ultralytics ``names`` metadata; a
label count that differs from the model's class count is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

import numpy as np

from ..errors import TaskError
from ._image import Letterbox
from .box_task import BoxTask, check_box_config
from .classification import labels_from_metadata
from .layouts import layout_names
from .layouts.nms_outputs import find_nms_outputs
from .preprocess import Preprocess

__all__ = ["DetectorConfig", "Detections", "Detector", "LAYOUTS", "find_nms_outputs"]

LAYOUTS = layout_names("detect")


@dataclass(frozen=True)
class DetectorConfig:
    """``conf``/``iou`` None: 0.25/0.45, or the thresholds ``trtkit add-nms`` baked into the model.
    ``input_size`` (h, w) is needed only for dynamic H/W models without ``imgsz`` metadata (default 640).
    ``preprocess``: fields to override in the layout's own preprocessing (``Preprocess(scale=1.0, bgr=True)``)."""

    conf: float | None = None
    iou: float | None = None
    max_det: int = 300
    class_agnostic: bool = False
    layout: str = "auto"
    input_size: tuple[int, int] | None = None
    preprocess: Preprocess = field(default_factory=Preprocess)
    labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_box_config(self, LAYOUTS, "--conf 0.25 --iou 0.45")


@dataclass(frozen=True)
class Detections:
    """Boxes x1,y1,x2,y2 in original image pixels, best first. ``top_score``: the highest score the model
    gave any box before the threshold ``conf`` (None when it gave none), to explain an empty result."""

    boxes: np.ndarray  # [N, 4] float32
    scores: np.ndarray  # [N] float32
    class_ids: np.ndarray  # [N] int64
    labels: tuple[str, ...]
    top_score: float | None = None
    conf: float | None = None

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
        return draw_boxes(image, self.boxes, labels=text, class_ids=[int(c) for c in self.class_ids], scores=self.scores)


class Detector(BoxTask):
    """YOLO detection (v5/v7/yolor/v8/v11/YOLOX) and NMS-in-graph models; see the module docstring."""

    name = "detect"
    config_type = DetectorConfig
    default_conf = 0.25
    default_iou = 0.45

    def _labels(self) -> tuple[str, ...]:
        return self.config.labels or labels_from_metadata(self.metadata)

    def _check_classes(self) -> None:
        self.num_classes = self.layout.num_classes(self.outputs, self.binding)
        self._check_label_count(self.num_classes)

    def _check_label_count(self, num: int | None) -> None:
        if num is None or not self.labels or len(self.labels) == num:
            return
        source = "--labels / DetectorConfig.labels" if self.config.labels else "the model's metadata"
        raise TaskError(
            f"{len(self.labels)} class names from {source} but the model's {self.layout.name} output has {num} "
            f"classes (output {describe_binding(self)}); names would be wrong (class 0 of this model is not "
            f"{self.labels[0]!r}). Give a labels file with {num} lines"
        )

    def postprocess(self, outputs: Mapping[str, np.ndarray], meta: Letterbox) -> Detections:
        boxes, scores, classes, _, top = self.candidates(outputs)
        if self.num_classes is None and self.layout.name in ("yolov8", "yolov5", "yolox"):
            self.num_classes = _runtime_classes(self.layout.name, outputs[self.binding["output"]])
            self._check_label_count(self.num_classes)
        boxes, scores, classes, _ = self.place(boxes, scores, classes, None, meta)
        labels = tuple(self.labels[c] if 0 <= c < len(self.labels) else str(c) for c in classes.tolist())
        return Detections(boxes=boxes, scores=scores, class_ids=classes, labels=labels, top_score=top, conf=self.conf)

    def split_outputs(self, outputs: Mapping[str, np.ndarray], count: int) -> list[dict[str, np.ndarray]]:
        if self.layout.name != "onnx_nms":
            return super().split_outputs(outputs, count)
        sel_name = self.binding["selected"]
        sel = np.asarray(outputs[sel_name])
        rest = super().split_outputs({k: v for k, v in outputs.items() if k != sel_name}, count)
        for i, part in enumerate(rest):
            mine = sel[sel[:, 0] == i].copy()
            mine[:, 0] = 0
            part[sel_name] = mine
        return rest


def describe_binding(task: BoxTask) -> str:
    specs = {o.name: o for o in task.outputs}
    return ", ".join(f"{n!r} {specs[n].display_shape()}" for n in task.binding.roles.values())


def _runtime_classes(layout: str, arr: np.ndarray) -> int:
    shape = np.asarray(arr).shape
    return shape[1] - 4 if layout == "yolov8" else shape[2] - 5
