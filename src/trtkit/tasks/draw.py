"""Annotation drawing for task results: boxes, labels, scores, landmarks, polygons, text.

All functions take an RGB uint8 image and return an annotated copy (the input
is never modified). cv2 draws; its Hershey font covers ASCII only, so other
characters in labels (e.g. Chinese OCR text) are replaced by '?' in the drawing
(the JSON keeps the real text).

Labels never cover one another: :func:`place_labels` puts each caption above its
box when that spot is free, else stacks it below the captions already placed
(higher scores are placed first, so they keep the spot nearest the box, and are
painted last, on top), always inside the image. OCR text goes to a side panel
(:func:`draw_text_panel`) so dense pages stay readable.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .._optional import require

__all__ = ["color_for", "draw_boxes", "draw_polygons", "draw_caption", "draw_text_panel", "place_labels"]

# A fixed, high-contrast palette (Ultralytics' colours, RGB) so a class keeps its colour across images.
_PALETTE = (
    (255, 56, 56), (255, 157, 151), (255, 112, 31), (255, 178, 29), (207, 210, 49), (72, 249, 10),
    (146, 204, 23), (61, 219, 134), (26, 147, 52), (0, 212, 187), (44, 153, 168), (0, 194, 255),
    (52, 69, 147), (100, 115, 255), (0, 24, 236), (132, 56, 255), (82, 0, 133), (203, 56, 255),
    (255, 149, 200), (255, 55, 199),
)
_LANDMARK_COLORS = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255))
_FONT = 0  # cv2.FONT_HERSHEY_SIMPLEX

Rect = tuple[int, int, int, int]  # x, y, width, height


def color_for(index: int) -> tuple[int, int, int]:
    return _PALETTE[index % len(_PALETTE)]


def _ascii(text: str) -> str:
    return "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in text)


def _thickness(image: np.ndarray) -> int:
    return max(1, int(round(sum(image.shape[:2]) / 2 * 0.003)))


def _text_box(cv2: Any, text: str, scale: float, weight: int) -> tuple[int, int, int]:
    """(width, height, baseline) of a filled label for ``text``, including a 1-pixel margin."""
    (tw, th), base = cv2.getTextSize(text, _FONT, scale, weight)
    return tw + 2, th + base + 2, base


def _overlaps(a: Rect, b: Rect) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def place_labels(
    sizes: Sequence[tuple[int, int]], anchors: Sequence[tuple[int, int]], *, width: int, height: int,
    order: Sequence[int] | None = None,
) -> list[Rect]:
    """A rectangle per label (``sizes`` = (w, h), ``anchors`` = the box's top-left x, y), none overlapping
    another when the image has room, all inside the image. Labels are placed in ``order`` (e.g. best score
    first): each takes the spot just above its anchor if free, else the nearest free slot stacked below or
    above it, else (a page too crowded to hold them all) the spot overlapping the fewest placed labels."""
    placed: dict[int, Rect] = {}
    for i in order if order is not None else range(len(sizes)):
        w, h = sizes[i]
        ax, ay = anchors[i]
        x0 = int(min(max(ax, 0), max(width - w, 0)))
        # columns: the anchor's, then one label width right/left of it, and so on (a crowded column spills over)
        xs = [x0] + [x0 + s * k * w for k in range(1, width // max(w, 1) + 1) for s in (1, -1) if 0 <= x0 + s * k * w <= width - w]
        rows = height // max(h, 1) + 1
        ys = [ay - h] + [ay + k * h for k in range(rows)] + [ay - h - k * h for k in range(1, rows)]
        best: tuple[int, Rect] | None = None
        for x in xs:
            for y in dict.fromkeys(int(min(max(y, 0), max(height - h, 0))) for y in ys):
                rect = (x, y, w, h)
                hits = sum(_overlaps(rect, other) for other in placed.values())
                if best is None or hits < best[0]:
                    best = (hits, rect)
                if hits == 0:
                    break
            if best is not None and best[0] == 0:
                break
        placed[i] = best[1] if best is not None else (x0, 0, w, h)
    return [placed[i] for i in range(len(sizes))]


def _paint_label(cv2: Any, canvas: np.ndarray, text: str, rect: Rect, base: int, color: tuple[int, int, int],
                 scale: float, weight: int) -> None:
    x, y, w, h = rect
    cv2.rectangle(canvas, (x, y), (x + w - 1, y + h - 1), color, -1)
    ink = (0, 0, 0) if sum(color) > 382 else (255, 255, 255)
    cv2.putText(canvas, text, (x + 1, y + h - base - 1), _FONT, scale, ink, weight, cv2.LINE_AA)


def _draw_labels(cv2: Any, canvas: np.ndarray, texts: Sequence[str], anchors: Sequence[tuple[int, int]],
                 colors: Sequence[tuple[int, int, int]], priority: Sequence[float] | None) -> None:
    t = _thickness(canvas)
    scale, weight = t / 3, max(t - 1, 1)
    shown = [i for i, text in enumerate(texts) if text]
    boxes = [_text_box(cv2, _ascii(texts[i]), scale, weight) for i in shown]
    order = list(range(len(shown)))
    if priority is not None:
        order.sort(key=lambda k: -float(priority[shown[k]]))
    rects = place_labels([(w, h) for w, h, _ in boxes], [anchors[i] for i in shown],
                         width=canvas.shape[1], height=canvas.shape[0], order=order)
    for k in reversed(order):  # lowest priority first: the best label is painted last, on top
        i = shown[k]
        _paint_label(cv2, canvas, _ascii(texts[i]), rects[k], boxes[k][2], colors[i], scale, weight)


def draw_boxes(
    image: np.ndarray,
    boxes: np.ndarray,
    *,
    labels: Sequence[str],
    class_ids: Sequence[int] | None = None,
    landmarks: np.ndarray | None = None,
    scores: Sequence[float] | None = None,
) -> np.ndarray:
    """Draw x1,y1,x2,y2 ``boxes`` with one text label each (placed by :func:`place_labels`, higher
    ``scores`` first), and optional ``[N, K, 2]`` landmarks."""
    cv2 = require("cv2", purpose="drawing results")
    canvas = np.ascontiguousarray(image).copy()
    t = _thickness(canvas)
    arr = np.asarray(boxes, np.float32).reshape(-1, 4)
    colors = [color_for(int(class_ids[i]) if class_ids is not None else 0) for i in range(len(arr))]
    anchors = []
    for i, box in enumerate(arr):
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colors[i], t, cv2.LINE_AA)
        anchors.append((x1, y1))
        if landmarks is not None:
            for k, (px, py) in enumerate(np.asarray(landmarks[i], np.float32).reshape(-1, 2)):
                cv2.circle(canvas, (int(round(px)), int(round(py))), t + 1, _LANDMARK_COLORS[k % 5], -1, cv2.LINE_AA)
    texts = [labels[i] if i < len(labels) else "" for i in range(len(arr))]
    _draw_labels(cv2, canvas, texts, anchors, colors, scores)
    return canvas


def draw_polygons(image: np.ndarray, polygons: Sequence[np.ndarray], *, labels: Sequence[str] = ()) -> np.ndarray:
    """Draw closed ``[K, 2]`` polygons with an optional short label each (placed without overlap)."""
    cv2 = require("cv2", purpose="drawing results")
    canvas = np.ascontiguousarray(image).copy()
    t = _thickness(canvas)
    anchors, colors = [], []
    for i, poly in enumerate(polygons):
        pts = np.round(np.asarray(poly, np.float32).reshape(-1, 2)).astype(np.int32)
        colors.append(color_for(i))
        cv2.polylines(canvas, [pts], True, colors[-1], t, cv2.LINE_AA)
        anchors.append((int(pts[:, 0].min()), int(pts[:, 1].min())))
    texts = [labels[i] if i < len(labels) else "" for i in range(len(anchors))]
    _draw_labels(cv2, canvas, texts, anchors, colors, None)
    return canvas


def _wrap(cv2: Any, text: str, width: int, scale: float, weight: int) -> list[str]:
    """Split ``text`` into lines no wider than ``width`` pixels (at word boundaries where possible)."""
    lines, current = [], ""
    for word in text.split(" "):
        candidate = f"{current} {word}" if current else word
        if _text_box(cv2, candidate, scale, weight)[0] <= width or not current:
            current = candidate
        else:
            lines.append(current)
            current = word
        while _text_box(cv2, current, scale, weight)[0] > width and len(current) > 1:  # one very long word
            cut = len(current) - 1
            while cut > 1 and _text_box(cv2, current[:cut], scale, weight)[0] > width:
                cut -= 1
            lines.append(current[:cut])
            current = current[cut:]
    return lines + ([current] if current else [])


def draw_text_panel(image: np.ndarray, polygons: Sequence[np.ndarray], texts: Sequence[str]) -> np.ndarray:
    """OCR view: polygons numbered on the image, and a white panel on the right listing every line as
    ``n  text`` in dark ink at a fixed readable size, wrapped to the panel's width; the canvas grows
    downwards when the text is taller than the image, so nothing is cut or drawn over the page."""
    cv2 = require("cv2", purpose="drawing results")
    marked = draw_polygons(image, polygons, labels=[str(i + 1) for i in range(len(polygons))])
    h, w = marked.shape[:2]
    panel_w = max(w, 320)
    scale, weight = max(0.45, _thickness(marked) / 3), 1
    _, line_h, base = _text_box(cv2, "Ag", scale, weight)
    chip_w = _text_box(cv2, f"{len(texts)}", scale, weight)[0] + 6
    entries = []  # (index, wrapped lines)
    for i, text in enumerate(texts):
        entries.append((i, _wrap(cv2, _ascii(text), panel_w - chip_w - 12, scale, weight) or [""]))
    needed = 4 + sum(len(lines) * (line_h + 2) + 4 for _, lines in entries)
    height = max(h, needed)
    canvas = np.full((height, w + panel_w, 3), 255, np.uint8)
    canvas[:h, :w] = marked
    y = 4
    for i, lines in entries:
        _paint_label(cv2, canvas, str(i + 1), (w + 4, y, chip_w, line_h), base, color_for(i), scale, weight)
        for line in lines:
            cv2.putText(canvas, line, (w + chip_w + 8, y + line_h - base - 1), _FONT, scale, (20, 20, 20), weight, cv2.LINE_AA)
            y += line_h + 2
        y += 4
    return canvas


def draw_caption(image: np.ndarray, lines: Sequence[str]) -> np.ndarray:
    """Write text lines in the top-left corner (e.g. classification top-k), stacked without overlap."""
    cv2 = require("cv2", purpose="drawing results")
    canvas = np.ascontiguousarray(image).copy()
    t = _thickness(canvas)
    scale, weight = t / 3, max(t - 1, 1)
    y = 0
    for line in lines:
        w, h, base = _text_box(cv2, _ascii(line), scale, weight)
        _paint_label(cv2, canvas, _ascii(line), (0, y, w, h), base, (32, 32, 32), scale, weight)
        y += h + 1
    return canvas
