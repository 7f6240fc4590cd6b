"""YOLOv8/v11 (Ultralytics): one output ``[B, 4+C, N]`` = cx,cy,w,h + C class scores, no objectness.

Preprocessing (Ultralytics ``LetterBox`` + ``/255``): RGB, pixel/255, letterbox centred, pad 114.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from .._image import xywh_to_xyxy
from ..preprocess import Preprocess
from ._yolo import OneOutputYolo, fits_v8, xywh_to_xyxy_graph
from .base import Binding, Candidates


class YoloV8(OneOutputYolo):
    name = "yolov8"
    task = "detect"
    summary = "one output [B,4+C,N]: cx,cy,w,h + C class scores (YOLOv8/v11)"
    preprocess = Preprocess(scale=1 / 255, mean=0.0, std=1.0, bgr=False, pad="center", pad_value=114, stride=32)

    class_dim, class_offset = 1, 4

    def fits(self, a: Any, b: Any, labels: Sequence[str]) -> bool:
        return fits_v8(a, b, labels)

    def decode(self, arrays: Mapping[str, np.ndarray], binding: Binding, size: tuple[int, int]) -> Candidates:
        pred = np.asarray(arrays[binding["output"]], np.float32)[0].T  # [N, 4+C]
        return Candidates(xywh_to_xyxy(pred[:, :4]), pred[:, 4:])

    def graph(self, g: Any, binding: Binding, size: Any) -> tuple[str, str, None]:
        chw = binding["output"]  # [B, 4+C, N]
        boxes = g.op("Transpose", [g.slice(chw, 1, 0, 4)], perm=[0, 2, 1])
        return xywh_to_xyxy_graph(g, boxes), g.slice(chw, 1, 4, 1 << 30), None


LAYOUT = YoloV8()
