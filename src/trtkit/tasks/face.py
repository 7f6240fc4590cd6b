"""Face detection with 5 landmarks: SCRFD (InsightFace) and NMS-in-graph face engines.

Two output layouts, picked from the outputs:

* ``scrfd``: per stride (8, 16, 32) a score ``[.., N, 1]``, a box-distance ``[.., N, 4]`` and
  optionally a landmark ``[.., N, 10]`` output, with N = (H/s)(W/s) x anchors (2). Outputs are
  grouped by N and told apart by their last dim, so renamed outputs (``448``, ``471``...) and
  outputs with or without the batch axis both work. Decoding follows InsightFace's
  ``distance2bbox``/``distance2kps``: anchor centres on the stride grid, distances x stride.
* ``nms``: ``num_detections``, ``nmsed_boxes``, ``nmsed_scores``, ``nmsed_classes``,
  ``nmsed_landmarks`` (the tutorial's SCRFD engine, and ``trtkit add-nms --task face``).

Preprocessing matches InsightFace: RGB, letterbox without centring (pad bottom/right with 0),
``(pixel - 127.5) / 128``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from ..errors import TaskError
from ..spec import TensorSpec
from ._image import Letterbox, letterbox, nms, scale_boxes, scale_points, to_tensor
from .base import Task, check_input_size, describe_outputs, input_dtype
from .detection import find_nms_outputs

__all__ = ["FaceDetectorConfig", "Faces", "FaceDetector", "SCRFD_STRIDES", "anchor_centers", "group_scrfd_heads"]

SCRFD_STRIDES = (8, 16, 32)


@dataclass(frozen=True)
class FaceDetectorConfig:
    """InsightFace's defaults: score threshold 0.5, NMS IoU 0.4. ``input_size`` (h, w) for dynamic-H/W models."""

    conf: float = 0.5
    iou: float = 0.4
    max_det: int = 1000
    input_size: tuple[int, int] | None = None
    anchors: int = 2

    def __post_init__(self) -> None:
        if not 0.0 <= self.conf <= 1.0 or not 0.0 <= self.iou <= 1.0:
            raise TaskError(
                f"conf and iou (--conf, --iou) must be in [0, 1], got conf={self.conf}, iou={self.iou}; e.g. --conf 0.5"
            )
        if self.max_det < 1 or self.anchors < 1:
            raise TaskError(f"FaceDetectorConfig.max_det and anchors must be >= 1, got {self.max_det}, {self.anchors}")
        if self.input_size is not None:
            check_input_size(self.input_size)


@dataclass(frozen=True)
class Faces:
    """Face boxes x1,y1,x2,y2 and landmarks ``[N, 5, 2]`` (eyes, nose, mouth corners) in image pixels."""

    boxes: np.ndarray  # [N, 4]
    scores: np.ndarray  # [N]
    landmarks: np.ndarray | None  # [N, 5, 2] or None when the model has no landmark head

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

        return draw_boxes(image, self.boxes, labels=[f"{float(s):.2f}" for s in self.scores], landmarks=self.landmarks)


def anchor_centers(height: int, width: int, stride: int, anchors: int) -> np.ndarray:
    """``[(H/s)*(W/s)*anchors, 2]`` x,y anchor centres in input pixels, row-major, anchors adjacent."""
    ys, xs = np.mgrid[: height // stride, : width // stride]
    centers = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32) * stride
    return np.repeat(centers, anchors, axis=0)


def group_scrfd_heads(
    outputs: Sequence[TensorSpec], size: tuple[int, int], *, anchors: int = 2
) -> dict[int, dict[str, str]] | None:
    """stride -> {"score"|"bbox"|"kps": output name}, or None when the outputs are not SCRFD heads.

    Matched by anchor count N and last dim; when N is dynamic (e.g. a dynamic-H/W export) the
    outputs of each kind are taken in order, which is InsightFace's export order (8, 16, 32).
    """
    h, w = size
    kinds = {1: "score", 4: "bbox", 10: "kps"}
    heads: dict[int, dict[str, str]] = {s: {} for s in SCRFD_STRIDES}
    by_kind: dict[str, list[str]] = {}
    for spec in outputs:
        last = spec.shape[-1] if spec.rank in (2, 3) else None
        if last not in kinds:
            continue
        by_kind.setdefault(kinds[last], []).append(spec.name)  # type: ignore[index]
        for stride in SCRFD_STRIDES:
            if spec.shape[-2] == (h // stride) * (w // stride) * anchors:
                heads[stride].setdefault(kinds[last], spec.name)  # type: ignore[index]
    if any({"score", "bbox"} - set(head) for head in heads.values()):
        if not all(len(by_kind.get(k, [])) == len(SCRFD_STRIDES) for k in ("score", "bbox")):
            return None
        n = len(SCRFD_STRIDES)
        heads = {s: {k: names[i] for k, names in by_kind.items() if len(names) == n} for i, s in enumerate(SCRFD_STRIDES)}
    return heads


class FaceDetector(Task[FaceDetectorConfig, Faces]):
    """SCRFD-style face detection with landmarks; see the module docstring for the layouts."""

    name = "face"
    config_type = FaceDetectorConfig

    def _check_model(self) -> None:
        ins = self.inputs
        if len(ins) != 1 or ins[0].rank != 4:
            raise self._layout_error()
        self.input_size = self._input_size()
        roles = find_nms_outputs(self.outputs)
        if roles is not None:
            self.layout, self._roles = "nms", roles
            return
        self.layout = "scrfd"
        self._heads = self._group_heads()
        self._centers = {
            s: anchor_centers(*self.input_size, s, self.config.anchors) for s in self._heads
        }

    def _input_size(self) -> tuple[int, int]:
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
        return check_input_size(given, stride=max(SCRFD_STRIDES)) if given is not None else (640, 640)

    def _group_heads(self) -> dict[int, dict[str, str]]:
        heads = group_scrfd_heads(self.outputs, self.input_size, anchors=self.config.anchors)
        if heads is None:
            raise self._layout_error()
        return heads

    def _layout_error(self) -> TaskError:
        h, w = getattr(self, "input_size", ("H", "W"))
        return TaskError(
            "model outputs do not match a face-detection layout: expected SCRFD heads at strides 8/16/32 "
            f"(score [N,1], bbox [N,4], kps [N,10] with N = (H/s)*(W/s)*{self.config.anchors} for input {h}x{w}) "
            "or NMS outputs (num_detections, nmsed_boxes, nmsed_scores, nmsed_landmarks); found inputs "
            f"{describe_outputs(self.inputs)} and outputs {describe_outputs(self.outputs)}. "
            "Pick the task that matches the model (--task classify/detect/ocr)"
        )

    # ------------------------------------------------------------ pipeline
    def preprocess(self, image: np.ndarray) -> tuple[dict[str, np.ndarray], Letterbox]:
        boxed, info = letterbox(image, self.input_size, pad_value=0, center=False)
        spec = self.inputs[0]
        tensor = to_tensor(boxed, mean=(127.5,) * 3, std=(128.0,) * 3).astype(input_dtype(spec), copy=False)
        return {spec.name: tensor}, info

    def postprocess(self, outputs: Mapping[str, np.ndarray], meta: Letterbox) -> Faces:
        if self.layout == "nms":
            boxes, scores, kps = self._from_nms(outputs)
        else:
            boxes, scores, kps = self._decode(outputs)
            keep = nms(boxes, scores, iou=self.config.iou, max_det=self.config.max_det)
            boxes, scores, kps = boxes[keep], scores[keep], (kps[keep] if kps is not None else None)
        order = np.argsort(-scores, kind="stable")[: self.config.max_det]
        return Faces(
            boxes=scale_boxes(boxes[order], meta),
            scores=scores[order].astype(np.float32),
            landmarks=scale_points(kps[order], meta) if kps is not None else None,
        )

    def split_outputs(self, outputs: Mapping[str, np.ndarray], count: int) -> list[dict[str, np.ndarray]]:
        """SCRFD exports often flatten the batch into the anchor axis (``[1, B*N, k]`` or ``[B*N, k]``,
        batch-major): reshape those to ``[B, N, k]`` before splitting per image."""
        if self.layout == "scrfd":
            h, w = self.input_size
            fixed = {}
            for stride, head in self._heads.items():
                n = (h // stride) * (w // stride) * self.config.anchors
                for name in head.values():
                    arr = np.asarray(outputs[name])
                    if arr.shape[0] != count and arr.size == count * n * arr.shape[-1]:
                        arr = arr.reshape(count, n, arr.shape[-1])
                    fixed[name] = arr
            outputs = {**outputs, **fixed}
        return super().split_outputs(outputs, count)

    def _decode(self, outputs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        all_boxes, all_scores, all_kps = [], [], []
        has_kps = all("kps" in head for head in self._heads.values())
        for stride, head in self._heads.items():
            scores = np.asarray(outputs[head["score"]], np.float32).reshape(-1)
            keep = np.flatnonzero(scores >= self.config.conf)
            centers = self._centers[stride][keep]
            dist = np.asarray(outputs[head["bbox"]], np.float32).reshape(-1, 4)[keep] * stride
            all_boxes.append(np.concatenate([centers - dist[:, :2], centers + dist[:, 2:]], axis=1))
            all_scores.append(scores[keep])
            if has_kps:
                kps = np.asarray(outputs[head["kps"]], np.float32).reshape(-1, 5, 2)[keep] * stride
                all_kps.append(kps + centers[:, None, :])
        kps_out = np.concatenate(all_kps) if has_kps else None
        return np.concatenate(all_boxes), np.concatenate(all_scores), kps_out

    def _from_nms(self, outputs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        roles = self._roles
        n = int(np.asarray(outputs[roles["count"]]).reshape(-1)[0])
        boxes = np.asarray(outputs[roles["boxes"]], np.float32).reshape(-1, 4)[:n]
        scores = np.asarray(outputs[roles["scores"]], np.float32).reshape(-1)[:n]
        kps = None
        if "landmarks" in roles:
            kps = np.asarray(outputs[roles["landmarks"]], np.float32).reshape(-1, 5, 2)[:n]
        keep = scores >= self.config.conf
        return boxes[keep], scores[keep], (kps[keep] if kps is not None else None)
