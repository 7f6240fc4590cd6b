"""Graphs ending in ONNX ``NonMaxSuppression`` without a gather tail: ``selected_indices [K,3]``
(batch, class, box) plus boxes ``[B,N,4]`` (x1,y1,x2,y2) and scores ``[B,C,N]``.
Preprocessing: YOLO's (RGB, /255, centred letterbox 114) unless the metadata records another.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ...spec import TensorSpec
from ..preprocess import Preprocess
from .base import Binding, Layout, Selected


class OnnxNms(Layout):
    name = "onnx_nms"
    task = "detect"
    has_nms = True
    summary = "selected_indices [K,3] int (batch, class, box), boxes [B,N,4], scores [B,C,N]"
    preprocess = Preprocess(scale=1 / 255, mean=0.0, std=1.0, bgr=False, pad="center", pad_value=114, stride=32)

    def defaults(self, metadata: Mapping[str, str]) -> Preprocess:
        recorded = Preprocess.from_metadata(metadata)
        return recorded.over(self.preprocess) if recorded is not None else self.preprocess

    def bind(self, outputs: Sequence[TensorSpec], size: Any, labels: Sequence[str], *, forced: bool) -> Binding | None:
        sel = [o for o in outputs if o.rank == 2 and o.shape[1] == 3 and o.dtype.startswith("int")]
        boxes = [o for o in outputs if o.rank == 3 and o.shape[2] == 4 and o.dtype.startswith("float")]
        scores = [o for o in outputs if o.rank == 3 and o not in boxes and o.dtype.startswith("float")]
        if sel and boxes and scores:
            return Binding({"selected": sel[0].name, "boxes": boxes[0].name, "scores": scores[0].name}, auto=not forced)
        return None

    def decode(self, arrays: Mapping[str, np.ndarray], binding: Binding, size: tuple[int, int]) -> Selected:
        sel = np.asarray(arrays[binding["selected"]]).reshape(-1, 3).astype(np.int64)
        sel = sel[sel[:, 0] == 0]
        boxes_all = np.asarray(arrays[binding["boxes"]], np.float32)[0]
        scores_all = np.asarray(arrays[binding["scores"]], np.float32)[0]  # [C, N]
        return Selected(boxes_all[sel[:, 2]], scores_all[sel[:, 1], sel[:, 2]], sel[:, 1])


LAYOUT = OnnxNms()
