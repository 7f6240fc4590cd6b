"""Image I/O and the preprocessing/postprocessing steps tasks share.

Everything here works on RGB uint8 ``HxWx3`` arrays and NumPy; cv2 does the
decoding and resizing because it is the fastest widely installed option and
matches what the reference pipelines (Ultralytics, InsightFace, PaddleOCR) use,
so our numbers line up with theirs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._optional import require
from ..errors import TaskError

__all__ = [
    "read_image",
    "as_rgb",
    "Letterbox",
    "letterbox",
    "resize_short",
    "center_crop",
    "nms",
    "CV2_NMS_MAX_BOXES",
    "scale_boxes",
    "scale_points",
    "clip_boxes",
    "xywh_to_xyxy",
]


_cv2_module: Any = None


def _cv2() -> Any:
    """OpenCV, imported once: ``require`` goes through importlib's module locks on every call, which cost
    streaming pipelines GIL time per image (py-spy: 7% of GIL-held samples)."""
    global _cv2_module
    if _cv2_module is None:
        _cv2_module = require("cv2", purpose="image tasks")
    return _cv2_module


# ---------------------------------------------------------------- reading

def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as RGB uint8 ``HxWx3``.

    Grayscale, RGBA (alpha dropped), palette and 16-bit images are converted
    (cv2's IMREAD_COLOR does exactly this, 16-bit scaled to 8-bit). Decoding
    from bytes also handles non-ASCII paths, which ``cv2.imread`` does not on
    every platform. Pillow is the fallback for formats cv2 cannot decode.
    """
    p = Path(path)
    if not p.exists():
        raise TaskError(f"image {str(p)!r} does not exist; check the path")
    if p.is_dir():
        raise TaskError(f"image path {str(p)!r} is a directory; give image files (e.g. {str(p)}/*.jpg)")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise TaskError(f"cannot read image {str(p)!r}: {exc.strerror or exc}; check its permissions") from exc
    if not data:
        raise TaskError(f"image {str(p)!r} is an empty file (0 bytes); give a JPEG/PNG/BMP/TIFF/WebP image")
    cv2 = _cv2()
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if bgr is not None else _read_with_pillow(p)
    if rgb is None:
        raise TaskError(
            f"cannot decode {str(p)!r} as an image ({len(data)} bytes, starts with {data[:8]!r}); "
            "give a JPEG/PNG/BMP/TIFF/WebP image"
        )
    return _check_area(rgb, str(p))


def _read_with_pillow(path: Path) -> np.ndarray | None:
    """Fallback decoder (e.g. GIF, some TIFF variants). None when Pillow cannot decode it either."""
    from .._optional import available

    if not available("PIL"):
        return None
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def _check_area(image: np.ndarray, what: str) -> np.ndarray:
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise TaskError(f"image {what} has zero area ({image.shape[1]}x{image.shape[0]} pixels); give a non-empty image")
    return image


def as_rgb(image: Any) -> np.ndarray:
    """Accept a path (read with :func:`read_image`) or an RGB uint8 ``HxWx3`` array; reject anything else."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    if not isinstance(image, np.ndarray):
        raise TaskError(f"a task takes an image path or an RGB uint8 HxWx3 numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise TaskError(
            f"image array has dtype {image.dtype}; expected uint8 RGB HxWx3. "
            "Convert it, e.g. np.clip(img * 255, 0, 255).astype(np.uint8) for a 0..1 float image"
        )
    if image.ndim != 3 or image.shape[2] != 3:
        raise TaskError(
            f"image array has shape {list(image.shape)}; expected RGB HxWx3. "
            "Convert grayscale/RGBA first, e.g. cv2.cvtColor(img, cv2.COLOR_GRAY2RGB) or img[..., :3]"
        )
    return _check_area(image, "array")


# ---------------------------------------------------------------- geometry

@dataclass(frozen=True)
class Letterbox:
    """How an image was placed into the model input: ``model = original * scale + pad``."""

    scale: float
    pad_x: float
    pad_y: float
    width: int  # original image size, for clipping mapped-back boxes
    height: int


def letterbox(
    image: np.ndarray, size: tuple[int, int], *, pad_value: int = 114, center: bool = True
) -> tuple[np.ndarray, Letterbox]:
    """Resize keeping the aspect ratio and pad to ``size`` = (height, width).

    ``center=True`` splits the padding on both sides (Ultralytics); ``False`` pads
    bottom/right only (InsightFace SCRFD, PaddleOCR).
    """
    cv2 = _cv2()
    h, w = image.shape[:2]
    th, tw = size
    if th < 1 or tw < 1:
        raise TaskError(f"letterbox target size must be positive (height, width), got {tuple(size)}; give the model input size")
    scale = min(th / h, tw / w)
    nw, nh = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR) if (nw, nh) != (w, h) else image
    if center:
        left, top = int(round((tw - nw) / 2 - 0.1)), int(round((th - nh) / 2 - 0.1))
    else:
        left, top = 0, 0
    out = cv2.copyMakeBorder(
        resized, top, th - nh - top, left, tw - nw - left, cv2.BORDER_CONSTANT, value=(pad_value,) * 3
    )
    # the exact per-axis scale differs from `scale` by rounding; use the mean of both for mapping back
    exact = (nw / w + nh / h) / 2
    return out, Letterbox(scale=exact, pad_x=float(left), pad_y=float(top), width=w, height=h)


def resize_short(image: np.ndarray, short: int) -> np.ndarray:
    """Resize so the shorter side is ``short`` pixels (torchvision ``Resize(int)`` semantics, bilinear)."""
    cv2 = _cv2()
    h, w = image.shape[:2]
    if min(h, w) == short:
        return image
    if h < w:
        nh, nw = short, max(1, int(short * w / h))
    else:
        nw, nh = short, max(1, int(short * h / w))
    return cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)


def center_crop(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Crop the central ``size`` = (height, width); smaller images are padded with zeros first."""
    cv2 = _cv2()
    th, tw = size
    h, w = image.shape[:2]
    if h < th or w < tw:
        py, px = max(0, th - h), max(0, tw - w)
        image = cv2.copyMakeBorder(image, py // 2, py - py // 2, px // 2, px - px // 2, cv2.BORDER_CONSTANT, value=0)
        h, w = image.shape[:2]
    top, left = int(round((h - th) / 2)), int(round((w - tw) / 2))
    return image[top : top + th, left : left + tw]


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """Centre-x, centre-y, width, height -> x1, y1, x2, y2."""
    half = boxes[..., 2:4] / 2
    return np.concatenate([boxes[..., :2] - half, boxes[..., :2] + half], axis=-1)


def clip_boxes(boxes: np.ndarray, *, width: int, height: int) -> np.ndarray:
    out = boxes.copy()
    out[..., 0::2] = out[..., 0::2].clip(0, width)
    out[..., 1::2] = out[..., 1::2].clip(0, height)
    return out


def scale_boxes(boxes: np.ndarray, info: Letterbox, *, clip: bool = True) -> np.ndarray:
    """Map ``[..., 4]`` x1,y1,x2,y2 boxes from model input pixels back to the original image."""
    out = np.asarray(boxes, np.float32).copy()
    out[..., 0::2] = (out[..., 0::2] - info.pad_x) / info.scale
    out[..., 1::2] = (out[..., 1::2] - info.pad_y) / info.scale
    return clip_boxes(out, width=info.width, height=info.height) if clip else out


def scale_points(points: np.ndarray, info: Letterbox) -> np.ndarray:
    """Map ``[..., 2]`` x,y points from model input pixels back to the original image (not clipped)."""
    out = np.asarray(points, np.float32).copy()
    out[..., 0] = (out[..., 0] - info.pad_x) / info.scale
    out[..., 1] = (out[..., 1] - info.pad_y) / info.scale
    return out


# ---------------------------------------------------------------- NMS

# Below this many candidates cv2.dnn.NMSBoxes (C++) beats the NumPy loop; above it, on clustered boxes
# (what a detector really emits: many candidates per object) the NumPy loop wins, because it drops every
# suppressed box at once. benchmarks/tasks.py on 2 busy CPU cores, median ms, NumPy vs cv2:
# 1k clustered 5.4 vs 1.3, 1k spread-out 57 vs 12; 10k clustered 12.2 vs 21.2, 10k spread-out 2542 vs 1268
# (spread-out = almost nothing suppressed, the worst case for a greedy loop and rare after a score threshold).
CV2_NMS_MAX_BOXES = 4096


def nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    *,
    iou: float,
    classes: np.ndarray | None = None,
    max_det: int | None = None,
) -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, highest score first.

    ``boxes`` are x1,y1,x2,y2. With ``classes`` it is class-aware (boxes of
    different classes never suppress each other), done with the usual
    per-class coordinate offset so one pass serves all classes. A box is
    suppressed when its IoU with a kept box is *greater than* ``iou``, the
    semantics of ONNX NonMaxSuppression and cv2, so host-side and in-graph NMS
    (``trtkit add-nms``) agree. Up to ``CV2_NMS_MAX_BOXES`` candidates run in
    ``cv2.dnn.NMSBoxes`` when OpenCV is installed, more in a vectorized NumPy loop.
    """
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    s = np.asarray(scores, np.float32).reshape(-1)
    if len(b) == 0:
        return np.zeros(0, np.int64)
    if classes is not None:
        span = float(np.abs(b).max()) * 2 + 1
        b = b + np.asarray(classes, np.float64).reshape(-1, 1) * span
    from .._optional import available

    if len(b) <= CV2_NMS_MAX_BOXES and available("cv2"):
        keep = _nms_cv2(b, s, iou)
    else:
        keep = _nms_numpy(b, s, iou, max_det)
    return keep[:max_det] if max_det is not None else keep


def _nms_cv2(b: np.ndarray, s: np.ndarray, iou: float) -> np.ndarray:
    cv2 = _cv2()
    xywh = np.concatenate([b[:, :2], b[:, 2:4] - b[:, :2]], axis=1)
    # cv2 wants scores > a threshold >= 0 and leaves tie order unspecified: pass the stable rank
    # instead (n for the best box .. 1 for the worst), which keeps the order exact and all boxes in.
    order = np.argsort(-s, kind="stable")
    rank = np.empty(len(s), np.float32)
    rank[order] = np.arange(len(s), 0, -1, dtype=np.float32)
    kept = np.asarray(cv2.dnn.NMSBoxes(xywh, rank, 0.0, iou), np.int64).reshape(-1)
    return kept[np.argsort(-rank[kept], kind="stable")]


def _nms_numpy(b: np.ndarray, s: np.ndarray, iou: float, max_det: int | None) -> np.ndarray:
    x1, y1, x2, y2 = b.T
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    order = np.argsort(-s, kind="stable")
    keep: list[int] = []
    limit = max_det if max_det is not None else len(order)
    while order.size and len(keep) < limit:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0)
        h = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0)
        inter = w * h
        union = areas[i] + areas[rest] - inter
        overlap = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[overlap <= iou]
    return np.asarray(keep, np.int64)


