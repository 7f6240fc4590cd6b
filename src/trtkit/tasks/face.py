"""Face detection with 5 landmarks: SCRFD, RetinaFace (InsightFace MXNet and Pytorch_Retinaface
exports) and NMS-in-graph face engines (the tutorial's ``num_detections``/``nmsed_*`` engine and
``trtkit add-nms --task face``).

Each layout lives in :mod:`trtkit.tasks.layouts` with its decoding and its preprocessing defaults
(SCRFD: RGB, (p - 127.5)/128, pad bottom/right 0; RetinaFace MXNet: RGB raw pixels;
Pytorch_Retinaface: BGR minus (104,117,123)); ``FaceDetectorConfig.preprocess`` overrides them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

import numpy as np

from ._image import Letterbox
from .box_task import BoxTask, check_box_config
from .layouts import layout_names
from .layouts.scrfd import SCRFD_STRIDES, anchor_centers, group_scrfd_heads
from .preprocess import Preprocess

__all__ = ["FaceDetectorConfig", "Faces", "FaceDetector", "SCRFD_STRIDES", "anchor_centers", "group_scrfd_heads",
           "FACE_LAYOUTS"]

FACE_LAYOUTS = layout_names("face")


@dataclass(frozen=True)
class FaceDetectorConfig:
    """``conf``/``iou`` None: InsightFace's 0.5/0.4, or what ``trtkit add-nms`` baked into the model.
    ``input_size`` (h, w) for dynamic-H/W models. ``preprocess`` overrides the layout's preprocessing."""

    conf: float | None = None
    iou: float | None = None
    max_det: int = 1000
    layout: str = "auto"
    input_size: tuple[int, int] | None = None
    preprocess: Preprocess = field(default_factory=Preprocess)

    def __post_init__(self) -> None:
        check_box_config(self, FACE_LAYOUTS, "--conf 0.5 --iou 0.4")


@dataclass(frozen=True)
class Faces:
    """Face boxes x1,y1,x2,y2 and landmarks ``[N, 5, 2]`` (eyes, nose, mouth corners) in image pixels.
    ``top_score``: the highest face score before the threshold ``conf`` (None when no box at all)."""

    boxes: np.ndarray  # [N, 4]
    scores: np.ndarray  # [N]
    landmarks: np.ndarray | None  # [N, 5, 2] or None when the model has no landmark head
    top_score: float | None = None
    conf: float | None = None

    columns: ClassVar[tuple[str, ...]] = ("face", "score", "x1", "y1", "x2", "y2", "landmarks")

    def __len__(self) -> int:
        return len(self.scores)

    def to_json(self) -> dict[str, Any]:
        faces = []
        for i, (b, s) in enumerate(zip(self.boxes, self.scores)):
            face: dict[str, Any] = {"score": round(float(s), 6), "box": [round(float(v), 2) for v in b]}
            if self.landmarks is not None:
                face["landmarks"] = [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks[i]]
            faces.append(face)
        return {"task": "face", "faces": faces}

    def rows(self) -> list[list[str]]:
        rows = []
        for i, (b, s) in enumerate(zip(self.boxes, self.scores)):
            marks = "" if self.landmarks is None else " ".join(f"{x:.0f},{y:.0f}" for x, y in self.landmarks[i])
            rows.append([str(i), f"{float(s):.3f}", *(f"{float(v):.1f}" for v in b), marks])
        return rows

    def draw(self, image: np.ndarray) -> np.ndarray:
        from .draw import draw_boxes

        return draw_boxes(image, self.boxes, labels=[f"{float(s):.2f}" for s in self.scores], landmarks=self.landmarks,
                          scores=self.scores)


class FaceDetector(BoxTask):
    """Face detection with landmarks; see the module docstring for the layouts."""

    name = "face"
    config_type = FaceDetectorConfig
    default_conf = 0.5
    default_iou = 0.4

    def postprocess(self, outputs: Mapping[str, np.ndarray], meta: Letterbox) -> Faces:
        boxes, scores, classes, kps, top = self.candidates(outputs)
        boxes, scores, _, marks = self.place(boxes, scores, classes, kps, meta)
        return Faces(boxes=boxes, scores=scores, landmarks=marks, top_score=top, conf=self.conf)

    def split_outputs(self, outputs: Mapping[str, np.ndarray], count: int) -> list[dict[str, np.ndarray]]:
        """SCRFD exports often flatten the batch into the anchor axis (``[1, B*N, k]`` or ``[B*N, k]``,
        batch-major): reshape those to ``[B, N, k]`` before splitting per image."""
        if self.layout.name == "scrfd":
            h, w = self.input_size
            fixed = {}
            anchors = self.binding.facts["anchors"]
            for role, name in self.binding.roles.items():
                stride = int(role.lstrip("scorebboxkps"))
                n = (h // stride) * (w // stride) * anchors
                arr = np.asarray(outputs[name])
                if arr.shape[0] != count and arr.size == count * n * arr.shape[-1]:
                    arr = arr.reshape(count, n, arr.shape[-1])
                fixed[name] = arr
            outputs = {**outputs, **fixed}
        return super().split_outputs(outputs, count)
