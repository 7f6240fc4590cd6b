"""What the YOLO layouts share: finding the one prediction output and the shape tests."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ...spec import TensorSpec
from .base import Binding, Layout

YOLOX_STRIDES = (8, 16, 32)


def prediction_output(outputs: Sequence[TensorSpec]) -> TensorSpec | None:
    """The one rank-3 output; with several (YOLOv5 exports add raw per-head outputs of rank 5, some
    exporters keep extra rank-3 ones) the one named ``output0``/``output``, else None."""
    rank3 = [o for o in outputs if o.rank == 3]
    if len(rank3) == 1:
        return rank3[0]
    named = [o for o in rank3 if o.name in ("output0", "output")]
    return named[0] if len(named) == 1 else None


def fits_v8(a: Any, b: Any, labels: Sequence[str]) -> bool:
    """[B, 4+C, N]: 4+C static and >= 5, and (when N is static) fewer channels than boxes."""
    if labels and isinstance(a, int) and isinstance(b, int) and b == 5 + len(labels) and a != 4 + len(labels):
        return False
    return isinstance(a, int) and a >= 5 and (not isinstance(b, int) or a < b)


def fits_v5(a: Any, b: Any, labels: Sequence[str]) -> bool:
    """[B, N, 5+C]: 5+C static and >= 6, and (when N is static) fewer channels than boxes."""
    if labels and isinstance(a, int) and isinstance(b, int) and a == 4 + len(labels) and b != 5 + len(labels):
        return False
    return isinstance(b, int) and b >= 6 and (not isinstance(a, int) or b < a)


def anchor_free_cells(size: tuple[int, int] | None) -> int | None:
    """Boxes an anchor-free head (YOLOX) predicts for an input size: one per cell at strides 8/16/32."""
    if size is None:
        return None
    h, w = size
    return sum((h // s) * (w // s) for s in YOLOX_STRIDES)


def xywh_to_xyxy_graph(g: Any, boxes: str) -> str:
    """[B,N,4] cx,cy,w,h -> x1,y1,x2,y2 as ONNX nodes (the host twin is ``_image.xywh_to_xyxy``)."""
    xy, wh = g.slice(boxes, 2, 0, 2), g.slice(boxes, 2, 2, 4)
    half = g.op("Mul", [wh, g.const(0.5, np.float32)])
    return g.op("Concat", [g.op("Sub", [xy, half]), g.op("Add", [xy, half])], axis=2)


class OneOutputYolo(Layout):
    """A YOLO layout read from its one prediction output; ``fits`` tests the shape, ``class_dim`` is the
    axis holding 4(+1)+C and ``class_offset`` the columns before the class scores."""

    task = "detect"
    class_dim = 2
    class_offset = 5

    def fits(self, a: Any, b: Any, labels: Sequence[str]) -> bool:
        raise NotImplementedError

    def bind(self, outputs: Sequence[TensorSpec], size: Any, labels: Sequence[str], *, forced: bool) -> Binding | None:
        out = prediction_output(outputs)
        if out is None or not self.fits(out.shape[1], out.shape[2], labels):
            return None
        return Binding({"output": out.name}, auto=not forced)

    def num_classes(self, outputs: Sequence[TensorSpec], binding: Binding) -> int | None:
        dim = {o.name: o for o in outputs}[binding["output"]].shape[self.class_dim]
        return dim - self.class_offset if isinstance(dim, int) else None
