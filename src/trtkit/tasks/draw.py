"""Annotation drawing for task results: boxes, labels, scores, landmarks, polygons, text.

All functions take an RGB uint8 image and return an annotated copy (the input
is never modified). cv2 draws; its Hershey font covers ASCII only, so other
characters in labels (e.g. Chinese OCR text) are replaced by '?' in the drawing
(the JSON keeps the real text).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .._optional import require

__all__ = ["color_for", "draw_boxes", "draw_polygons", "draw_caption"]

# A fixed, high-contrast palette (Ultralytics' colours, RGB) so a class keeps its colour across images.
_PALETTE = (
    (255, 56, 56), (255, 157, 151), (255, 112, 31), (255, 178, 29), (207, 210, 49), (72, 249, 10),
    (146, 204, 23), (61, 219, 134), (26, 147, 52), (0, 212, 187), (44, 153, 168), (0, 194, 255),
    (52, 69, 147), (100, 115, 255), (0, 24, 236), (132, 56, 255), (82, 0, 133), (203, 56, 255),
    (255, 149, 200), (255, 55, 199),
)
_LANDMARK_COLORS = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255))


def color_for(index: int) -> tuple[int, int, int]:
    return _PALETTE[index % len(_PALETTE)]


def _ascii(text: str) -> str:
    return "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in text)


def _thickness(image: np.ndarray) -> int:
    return max(1, int(round(sum(image.shape[:2]) / 2 * 0.003)))


def _label(cv2: Any, canvas: np.ndarray, text: str, x: int, y: int, color: tuple[int, int, int]) -> None:
    """A filled label box above (or, at the top edge, below) point x, y."""
    t = _thickness(canvas)
    scale = t / 3
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, max(t - 1, 1))
    top = y - th - base - 2 if y - th - base - 2 >= 0 else y
    cv2.rectangle(canvas, (x, top), (x + tw + 2, top + th + base + 2), color, -1, cv2.LINE_AA)
    ink = (0, 0, 0) if sum(color) > 382 else (255, 255, 255)
    cv2.putText(canvas, text, (x + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, ink, max(t - 1, 1), cv2.LINE_AA)


def draw_boxes(
    image: np.ndarray,
    boxes: np.ndarray,
    *,
    labels: Sequence[str],
    class_ids: Sequence[int] | None = None,
    landmarks: np.ndarray | None = None,
) -> np.ndarray:
    """Draw x1,y1,x2,y2 ``boxes`` with one text label each, and optional ``[N, K, 2]`` landmarks."""
    cv2 = require("cv2", purpose="drawing results")
    canvas = np.ascontiguousarray(image).copy()
    t = _thickness(canvas)
    for i, box in enumerate(np.asarray(boxes, np.float32).reshape(-1, 4)):
        color = color_for(int(class_ids[i]) if class_ids is not None else 0)
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, t, cv2.LINE_AA)
        if i < len(labels) and labels[i]:
            _label(cv2, canvas, _ascii(labels[i]), x1, y1, color)
        if landmarks is not None:
            for k, (px, py) in enumerate(np.asarray(landmarks[i], np.float32).reshape(-1, 2)):
                cv2.circle(canvas, (int(round(px)), int(round(py))), t + 1, _LANDMARK_COLORS[k % 5], -1, cv2.LINE_AA)
    return canvas


def draw_polygons(image: np.ndarray, polygons: Sequence[np.ndarray], *, labels: Sequence[str] = ()) -> np.ndarray:
    """Draw closed ``[K, 2]`` polygons (e.g. OCR text boxes) with an optional label each."""
    cv2 = require("cv2", purpose="drawing results")
    canvas = np.ascontiguousarray(image).copy()
    t = _thickness(canvas)
    for i, poly in enumerate(polygons):
        pts = np.round(np.asarray(poly, np.float32).reshape(-1, 2)).astype(np.int32)
        color = color_for(i)
        cv2.polylines(canvas, [pts], True, color, t, cv2.LINE_AA)
        if i < len(labels) and labels[i]:
            _label(cv2, canvas, _ascii(labels[i]), int(pts[:, 0].min()), int(pts[:, 1].min()), color)
    return canvas


def draw_caption(image: np.ndarray, lines: Sequence[str]) -> np.ndarray:
    """Write text lines in the top-left corner (e.g. classification top-k)."""
    cv2 = require("cv2", purpose="drawing results")
    canvas = np.ascontiguousarray(image).copy()
    t = _thickness(canvas)
    y = 0
    for line in lines:
        # _label draws above y, so move y to this line's bottom first: lines stack without overlap.
        (_, th), base = cv2.getTextSize(_ascii(line), cv2.FONT_HERSHEY_SIMPLEX, t / 3, max(t - 1, 1))
        y += th + base + 2
        _label(cv2, canvas, _ascii(line), 0, y, (32, 32, 32))
        y += 4  # anti-aliased box edges spill one pixel
    return canvas
