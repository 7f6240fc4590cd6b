"""YOLOX exported by its authors (``tools/export_onnx.py``, without ``--decode_in_inference``): one output
``[B, N, 5+C]`` like YOLOv5, but x,y are grid offsets and w,h log-space per cell of strides 8/16/32
(N = cells, one box per cell); objectness and class scores are already sigmoids.
Decoding (YOLOX ``YOLOXHead.decode_outputs``): ``xy = (xy + grid) * stride``, ``wh = exp(wh) * stride``.

Preprocessing (YOLOX >= 0.1.1 ``ValTransform(legacy=False)``): BGR, raw 0..255 pixels (no scaling, no
mean/std), image at the top-left with the padding bottom/right, pad 114.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ...spec import TensorSpec
from ..preprocess import Preprocess
from ._yolo import YOLOX_STRIDES, anchor_free_cells, fits_v5, prediction_output
from .base import Binding
from .yolov5 import YoloV5


def grid(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Cell x,y ``[N, 2]`` and stride ``[N, 1]``, stride 8 first, row-major (YOLOX's order)."""
    h, w = size
    grids, strides = [], []
    for s in YOLOX_STRIDES:
        ys, xs = np.meshgrid(np.arange(h // s), np.arange(w // s), indexing="ij")
        grids.append(np.stack([xs, ys], -1).reshape(-1, 2))
        strides.append(np.full((grids[-1].shape[0], 1), s))
    return np.concatenate(grids).astype(np.float32), np.concatenate(strides).astype(np.float32)


class YoloX(YoloV5):
    name = "yolox"
    task = "detect"
    needs_size = True
    summary = "one output [B,N,5+C] of raw grid offsets, N = cells at strides 8/16/32 (YOLOX)"
    preprocess = Preprocess(scale=1.0, mean=0.0, std=1.0, bgr=True, pad="corner", pad_value=114, stride=32)

    def expected(self, size: tuple[int, int] | None) -> str:
        cells = anchor_free_cells(size)
        return self.summary if cells is None else f"one output [B,{cells},5+C] of raw grid offsets (YOLOX, input {size[0]}x{size[1]})"

    def bind(self, outputs: Sequence[TensorSpec], size: Any, labels: Sequence[str], *, forced: bool) -> Binding | None:
        out = prediction_output(outputs)
        if out is None or not fits_v5(out.shape[1], out.shape[2], labels):
            return None
        cells, n = anchor_free_cells(size), out.shape[1]
        if isinstance(n, int) and cells is not None and n != cells:
            return None
        if not forced and (cells is None or n != cells):
            return None  # auto: only when N is exactly one box per cell; YOLOv5 has 3 anchors per cell
        return Binding({"output": out.name}, auto=not forced)

    def rows(self, arrays: Mapping[str, np.ndarray], binding: Binding, size: tuple[int, int]) -> np.ndarray:
        pred = np.asarray(arrays[binding["output"]], np.float32)[0]
        cells, strides = grid(size)
        out = pred.copy()
        out[:, :2] = (pred[:, :2] + cells) * strides
        out[:, 2:4] = np.exp(pred[:, 2:4]) * strides
        return out

    def graph_boxes(self, g: Any, binding: Binding, size: Any) -> str:
        cells, strides = grid(size)
        raw = g.slice(binding["output"], 2, 0, 4)
        xy = g.op("Mul", [g.op("Add", [g.slice(raw, 2, 0, 2), g.const(cells[None], np.float32, "yolox_grid")]),
                          g.const(strides[None], np.float32, "yolox_stride")])
        wh = g.op("Mul", [g.op("Exp", [g.slice(raw, 2, 2, 4)]), g.const(strides[None], np.float32, "yolox_stride")])
        return g.op("Concat", [xy, wh], axis=2)


LAYOUT = YoloX()
