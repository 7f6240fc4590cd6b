"""YOLOv5/v7/yolor: one output ``[B, N, 5+C]`` = cx,cy,w,h, objectness, C class scores (box score =
objectness x class score). yolor's ``[N, boxes, 85]`` output is this layout (``--layout yolor``).

Preprocessing (``utils.augmentations.letterbox`` + ``/255``): RGB, pixel/255, letterbox centred, pad 114.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ...errors import TaskError
from .._image import xywh_to_xyxy
from ..preprocess import Preprocess
from ._yolo import OneOutputYolo, anchor_free_cells, fits_v5, xywh_to_xyxy_graph
from .base import Binding, Candidates


class YoloV5(OneOutputYolo):
    name = "yolov5"
    task = "detect"
    summary = "one output [B,N,5+C]: cx,cy,w,h, objectness, C class scores (YOLOv5/v7/yolor)"
    preprocess = Preprocess(scale=1 / 255, mean=0.0, std=1.0, bgr=False, pad="center", pad_value=114, stride=32)

    def fits(self, a: Any, b: Any, labels: Sequence[str]) -> bool:
        return fits_v5(a, b, labels)

    def rows(self, arrays: Mapping[str, np.ndarray], binding: Binding, size: tuple[int, int]) -> np.ndarray:
        """The ``[N, 5+C]`` rows with cx,cy,w,h in input pixels."""
        pred = np.asarray(arrays[binding["output"]], np.float32)[0]
        if binding.auto and pred.shape[0] == anchor_free_cells(size) and float(np.median(pred[:, 2:4])) < 8.0:
            raise TaskError(
                f"output {binding['output']!r} {list(pred.shape)} has one row per stride-8/16/32 cell and log-space "
                "w,h: it is a raw YOLOX head, not YOLOv5. Use --layout yolox (DetectorConfig(layout='yolox'))"
            )
        return pred

    def decode(self, arrays: Mapping[str, np.ndarray], binding: Binding, size: tuple[int, int]) -> Candidates:
        pred = self.rows(arrays, binding, size)
        return Candidates(xywh_to_xyxy(pred[:, :4]), pred[:, 5:] * pred[:, 4:5])

    def graph_boxes(self, g: Any, binding: Binding, size: Any) -> str:
        """[B,N,4] cx,cy,w,h in input pixels."""
        return g.slice(binding["output"], 2, 0, 4)

    def graph(self, g: Any, binding: Binding, size: Any) -> tuple[str, str, None]:
        nhc = binding["output"]  # [B, N, 5+C]
        cls = g.op("Mul", [g.slice(nhc, 2, 5, 1 << 30), g.slice(nhc, 2, 4, 5)])
        return xywh_to_xyxy_graph(g, self.graph_boxes(g, binding, size)), g.op("Transpose", [cls], perm=[0, 2, 1]), None


LAYOUT = YoloV5()
