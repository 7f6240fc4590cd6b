"""PP-OCR text detection (DB): resize, probability map -> text boxes, crops.

The DB ("Differentiable Binarization") model outputs a text probability map
``[N, 1, H, W]``; boxes are the min-area rectangles of the connected regions
above ``det_threshold``, scored by their mean probability, grown by the
"unclip" distance and mapped back to the original image. The steps follow
PaddleOCR's ``DBPostProcess`` (and RapidOCR, its ONNX port) so results match.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from ..._optional import require
from ...errors import TaskError
from ..base import describe_outputs

if TYPE_CHECKING:
    from .config import OcrConfig

__all__ = ["TextDetector", "DetMeta", "crop_line", "sort_reading_order"]

_SAME_LINE_PX = 10  # PP-OCR: boxes whose tops differ by less than this are on one line


def _cv2() -> Any:
    return require("cv2", purpose="OCR")


@dataclass(frozen=True)
class DetMeta:
    """What postprocess needs to map boxes back: the original image size."""

    height: int
    width: int


def detector_input_size(height: int, width: int, *, config: "OcrConfig") -> tuple[int, int]:
    """(height, width) of the DB input: scaled by ``limit_side``/``limit_type``, capped at ``max_side``,
    rounded to multiples of 32 (the network's stride)."""
    if config.limit_type == "min":
        ratio = config.limit_side / min(height, width) if min(height, width) < config.limit_side else 1.0
    else:
        ratio = config.limit_side / max(height, width) if max(height, width) > config.limit_side else 1.0
    ratio = min(ratio, config.max_side / max(height, width))
    rh = max(32, int(round(int(height * ratio) / 32)) * 32)
    rw = max(32, int(round(int(width * ratio) / 32)) * 32)
    return rh, rw


class TextDetector:
    """The detection stage: ``preprocess(image) -> (feeds, meta)``, ``postprocess(outputs, meta) -> boxes``.

    Boxes are ``float32 [K, 4, 2]`` (top-left, top-right, bottom-right,
    bottom-left) in original-image pixels, in reading order.
    """

    def __init__(self, backend: Any, *, config: "OcrConfig") -> None:
        self.backend = backend
        self.config = config
        self._input = check_detector(backend)

    def preprocess(self, image: np.ndarray) -> tuple[dict[str, np.ndarray], DetMeta]:
        cv2 = _cv2()
        h, w = image.shape[:2]
        rh, rw = detector_input_size(h, w, config=self.config)
        resized = cv2.resize(image, (rw, rh)) if (rh, rw) != (h, w) else image
        # (x/255 - 0.5)/0.5 == (x - 127.5)/127.5; swapRB because PP-OCR models are trained on BGR (cv2.imread)
        blob = cv2.dnn.blobFromImage(resized, scalefactor=1 / 127.5, mean=(127.5, 127.5, 127.5), swapRB=True)
        return {self._input: blob}, DetMeta(h, w)

    def postprocess(self, outputs: Mapping[str, np.ndarray], meta: DetMeta) -> np.ndarray:
        prob = np.asarray(next(iter(outputs.values())))[0, 0]
        boxes = boxes_from_probability(prob, meta, config=self.config)
        return sort_reading_order(boxes)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        feeds, meta = self.preprocess(image)
        return self.postprocess(self.backend.infer(feeds), meta)


def check_detector(backend: Any) -> str:
    """Return the input name; TaskError unless the model looks like DB: one image input -> [N,1,H,W]."""
    ins, outs = tuple(backend.inputs), tuple(backend.outputs)
    ok = (
        len(ins) == 1
        and ins[0].rank == 4
        and (ins[0].shape[1] == 3 or isinstance(ins[0].shape[1], str))
        and len(outs) == 1
        and outs[0].rank == 4
        and outs[0].shape[1] == 1
    )
    if not ok:
        raise TaskError(
            "the OCR detection model does not fit: expected a DB text detector with one input [N,3,H,W] and one "
            f"output [N,1,H,W] (a probability map); found inputs {describe_outputs(ins)} and outputs "
            f"{describe_outputs(outs)}. Pass the det model (e.g. ch_PP-OCRv4_det_infer.onnx) in the det slot"
        )
    return str(ins[0].name)


# ---------------------------------------------------------------- DB postprocess

def boxes_from_probability(prob: np.ndarray, meta: DetMeta, *, config: "OcrConfig") -> np.ndarray:
    """Text boxes ``[K, 4, 2]`` in original-image pixels from the ``[H, W]`` probability map."""
    cv2 = _cv2()
    mask = (prob > config.det_threshold).astype(np.uint8)
    if config.dilate:
        mask = cv2.dilate(mask, np.ones((2, 2), np.uint8))
    contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    ph, pw = prob.shape
    sx, sy = meta.width / pw, meta.height / ph
    boxes = []
    for contour in contours[: config.max_candidates]:
        rect = cv2.minAreaRect(contour)
        if min(rect[1]) < config.min_size:
            continue
        points = ordered_corners(cv2.boxPoints(rect))
        if box_score_fast(prob, points) < config.box_threshold:
            continue
        grown = unclip(points, ratio=config.unclip_ratio)
        if grown is None or min(grown[1]) < config.min_size + 2:
            continue
        box = ordered_corners(cv2.boxPoints(grown))
        box[:, 0] = np.clip(np.round(box[:, 0] * sx), 0, meta.width - 1)
        box[:, 1] = np.clip(np.round(box[:, 1] * sy), 0, meta.height - 1)
        if np.linalg.norm(box[0] - box[1]) <= 3 or np.linalg.norm(box[0] - box[3]) <= 3:
            continue  # PP-OCR drops boxes 3 px or thinner in the original image
        boxes.append(box)
    return np.asarray(boxes, np.float32).reshape(-1, 4, 2)


def ordered_corners(points: np.ndarray) -> np.ndarray:
    """Order 4 rectangle corners as top-left, top-right, bottom-right, bottom-left (PP-OCR's get_mini_boxes)."""
    p = points[np.argsort(points[:, 0], kind="stable")]
    tl, bl = (p[0], p[1]) if p[1, 1] > p[0, 1] else (p[1], p[0])
    tr, br = (p[2], p[3]) if p[3, 1] > p[2, 1] else (p[3], p[2])
    return np.array([tl, tr, br, bl], np.float32)


def box_score_fast(prob: np.ndarray, box: np.ndarray) -> float:
    """Mean probability inside the box polygon (PP-OCR's 'fast' score mode)."""
    cv2 = _cv2()
    h, w = prob.shape
    xmin = int(np.clip(np.floor(box[:, 0].min()), 0, w - 1))
    xmax = int(np.clip(np.ceil(box[:, 0].max()), 0, w - 1))
    ymin = int(np.clip(np.floor(box[:, 1].min()), 0, h - 1))
    ymax = int(np.clip(np.ceil(box[:, 1].max()), 0, h - 1))
    mask = np.zeros((ymax - ymin + 1, xmax - xmin + 1), np.uint8)
    shifted = (box - np.array([xmin, ymin], np.float32)).astype(np.int32)
    cv2.fillPoly(mask, shifted.reshape(1, -1, 2), 1)
    return float(cv2.mean(prob[ymin : ymax + 1, xmin : xmax + 1], mask)[0])


def unclip(box: np.ndarray, *, ratio: float) -> Any:
    """Grow a box by DB's unclip distance ``area * ratio / perimeter``; returns its min-area rectangle.

    Done with pyclipper (round joins, integer coordinates) exactly as PaddleOCR
    does: a closed-form "grow each side by d" differs by a pixel here and there
    (pyclipper truncates to integers and approximates the arcs), and the
    recognizer is sensitive enough to one-pixel crop shifts that this costs
    about 1% character error rate on the reference image (measured).
    """
    cv2 = _cv2()
    pyclipper = require("pyclipper", purpose="OCR text detection (growing DB boxes)")
    area = cv2.contourArea(box)
    perimeter = cv2.arcLength(box.reshape(-1, 1, 2), True)
    distance = area * ratio / perimeter if perimeter > 0 else 0.0
    offset = pyclipper.PyclipperOffset()
    offset.AddPath(box, pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
    expanded = offset.Execute(distance)
    if not expanded:
        return None
    return cv2.minAreaRect(np.asarray(expanded[0], np.float32).reshape(-1, 1, 2))


def sort_reading_order(boxes: np.ndarray) -> np.ndarray:
    """PP-OCR's ``sorted_boxes``: by top-left y then x, then swap neighbours on one line (tops within 10 px)
    so they read left to right."""
    order = sorted(range(len(boxes)), key=lambda i: (float(boxes[i, 0, 1]), float(boxes[i, 0, 0])))
    for i in range(len(order) - 1):
        for j in range(i, -1, -1):
            a, b = boxes[order[j]], boxes[order[j + 1]]
            if abs(b[0, 1] - a[0, 1]) < _SAME_LINE_PX and b[0, 0] < a[0, 0]:
                order[j], order[j + 1] = order[j + 1], order[j]
            else:
                break
    return boxes[order] if order else boxes


# ---------------------------------------------------------------- crops

def crop_line(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Perspective-crop one text box to an upright strip; tall strips (h/w >= 1.5) are turned 90 degrees
    counter-clockwise as PP-OCR does (vertical text is read as a rotated line)."""
    cv2 = _cv2()
    width = max(1, int(max(np.linalg.norm(box[0] - box[1]), np.linalg.norm(box[2] - box[3]))))
    height = max(1, int(max(np.linalg.norm(box[0] - box[3]), np.linalg.norm(box[1] - box[2]))))
    target = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float32)
    matrix = cv2.getPerspectiveTransform(box.astype(np.float32), target)
    crop = cv2.warpPerspective(
        image, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE, flags=cv2.INTER_CUBIC
    )
    if height / width >= 1.5:
        crop = np.ascontiguousarray(np.rot90(crop))
    return crop


def aspect_ratio(crop: np.ndarray) -> float:
    return crop.shape[1] / max(crop.shape[0], 1)


def resized_width(crop: np.ndarray, *, height: int, max_width: int) -> int:
    """Width of ``crop`` scaled to ``height`` (rounded up as PP-OCR does), at most ``max_width``."""
    return max(1, min(max_width, int(math.ceil(height * aspect_ratio(crop)))))
