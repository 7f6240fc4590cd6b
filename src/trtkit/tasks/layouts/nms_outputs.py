"""Graphs that already ran NMS, EfficientNMS-style: ``num_detections [B,1]``, boxes ``[B,K,4]``
(x1,y1,x2,y2, input pixels), scores ``[B,K]``, classes ``[B,K]`` and, for faces, landmarks ``[B,K,10]``.

Names accepted per role cover TensorRT's EfficientNMS plugin (``detection_*``), the YOLO exporters
(``det_*``, ``num_dets``), the tutorial's SCRFD engine and ``trtkit add-nms`` (``nmsed_*``).
Preprocessing: what ``trtkit add-nms`` recorded in the model's metadata (``trtkit.preprocess``, the
source layout's); without it the task's usual default (YOLO's for detect, SCRFD's for faces).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ...spec import TensorSpec
from ..preprocess import Preprocess
from .base import Binding, Layout, Selected

# EfficientNMS-style output roles -> accepted names (compared lower-case)
NMS_NAMES: dict[str, tuple[str, ...]] = {
    "count": ("num_detections", "num_dets", "num"),
    "boxes": ("boxes", "det_boxes", "nmsed_boxes", "detection_boxes", "bboxes"),
    "scores": ("scores", "det_scores", "nmsed_scores", "detection_scores"),
    "classes": ("classes", "det_classes", "nmsed_classes", "detection_classes", "labels"),
    "landmarks": ("landmarks", "det_landmarks", "nmsed_landmarks", "kps"),
}


def find_nms_outputs(outputs: Sequence[TensorSpec]) -> dict[str, str] | None:
    """Map EfficientNMS roles (count/boxes/scores/classes[/landmarks]) to output names, or None."""
    names = {o.name.lower(): o.name for o in outputs}
    found = {role: names[n] for role, options in NMS_NAMES.items() for n in options if n in names}
    if all(role in found for role in ("count", "boxes", "scores")):
        return found
    return None


class EfficientNmsOutputs(Layout):
    name = "efficient_nms"
    has_nms = True
    summary = ("num_detections [B,1], boxes [B,K,4], scores [B,K], classes [B,K] (+ landmarks [B,K,10]); "
               "names num_detections/nmsed_*, det_* or detection_*")

    def __init__(self, task: str, fallback: Preprocess) -> None:
        self.task = task  # type: ignore[misc]
        self.preprocess = fallback  # type: ignore[misc]

    def defaults(self, metadata: Mapping[str, str]) -> Preprocess:
        recorded = Preprocess.from_metadata(metadata)
        return recorded.over(self.preprocess) if recorded is not None else self.preprocess

    def bind(self, outputs: Sequence[TensorSpec], size: Any, labels: Sequence[str], *, forced: bool) -> Binding | None:
        roles = find_nms_outputs(outputs)
        return Binding(roles, auto=not forced) if roles is not None else None

    def decode(self, arrays: Mapping[str, np.ndarray], binding: Binding, size: tuple[int, int]) -> Selected:
        roles = binding.roles
        n = int(np.asarray(arrays[roles["count"]]).reshape(-1)[0])
        boxes = np.asarray(arrays[roles["boxes"]], np.float32).reshape(-1, 4)[:n]
        scores = np.asarray(arrays[roles["scores"]], np.float32).reshape(-1)[:n]
        classes = (np.asarray(arrays[roles["classes"]]).reshape(-1)[:n].astype(np.int64)
                   if "classes" in roles else np.zeros(n, np.int64))
        kps = (np.asarray(arrays[roles["landmarks"]], np.float32).reshape(-1, 5, 2)[:n]
               if "landmarks" in roles and self.task == "face" else None)
        return Selected(boxes, scores, classes, kps)


_YOLO = Preprocess(scale=1 / 255, mean=0.0, std=1.0, bgr=False, pad="center", pad_value=114, stride=32)
_SCRFD = Preprocess(scale=1.0, mean=127.5, std=128.0, bgr=False, pad="corner", pad_value=0, stride=32)
DETECT = EfficientNmsOutputs("detect", _YOLO)
FACE = EfficientNmsOutputs("face", _SCRFD)
