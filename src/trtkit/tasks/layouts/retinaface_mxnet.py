"""RetinaFace exported from InsightFace's MXNet models (R50, mnet.25): 9 outputs
``face_rpn_cls_prob_reshape_stride{32,16,8}`` ``[B, 2A, H/s, W/s]`` (A background then A face
probabilities), ``face_rpn_bbox_pred_stride*`` ``[B, 4A, H/s, W/s]`` and ``face_rpn_landmark_pred_stride*``
``[B, 10A, H/s, W/s]``, A = 2 anchors per cell. Outputs are bound by these names (an exporter suffix such
as ``_output`` is allowed), never by position.

Decoding follows InsightFace ``RetinaFace.detect`` (``rcnn/processing/bbox_transform.py``): anchors from
``generate_anchors_fpn`` (base 16, ratio 1, scales 32,16 / 8,4 / 2,1 at strides 32/16/8), laid on each
stride's grid (``anchors_plane``), then delta decoding with the legacy +1 pixel convention:
``w = x2 - x1 + 1``, ``cx = x1 + 0.5 (w - 1)``, ``pcx = dx w + cx``, ``pw = exp(dw) w``,
``box = pcx -+ 0.5 (pw - 1)``; landmarks ``= d w + cx``.

Preprocessing (``RetinaFace.detect`` with ``pixel_means=0, pixel_stds=1, pixel_scale=1``): RGB, raw
0..255 pixels; we letterbox to the model's input with the image top-left and padding 0.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import numpy as np

from ...spec import TensorSpec
from ..preprocess import Preprocess
from .base import Binding, Candidates, Layout

STRIDES = (32, 16, 8)
ANCHORS = 2
SCALES = {32: (32.0, 16.0), 16: (8.0, 4.0), 8: (2.0, 1.0)}  # insightface RetinaFace config, BASE_SIZE 16
_NAME = re.compile(r"face_rpn_(cls_prob_reshape|bbox_pred|landmark_pred)_stride(\d+)")
_ROLE = {"cls_prob_reshape": "cls", "bbox_pred": "bbox", "landmark_pred": "landmark"}
_CHANNELS = {"cls": 2 * ANCHORS, "bbox": 4 * ANCHORS, "landmark": 10 * ANCHORS}


def base_anchors(stride: int) -> np.ndarray:
    """``[A, 4]`` x1,y1,x2,y2 anchors of one cell at the origin (``generate_anchors`` with ratio 1)."""
    size = 16.0
    ctr = 0.5 * (size - 1)  # the base box [0, 0, 15, 15]'s centre
    sides = size * np.asarray(SCALES[stride], np.float32)
    half = 0.5 * (sides - 1)
    return np.stack([ctr - half, ctr - half, ctr + half, ctr + half], axis=1).astype(np.float32)


def anchor_grid(height: int, width: int, stride: int) -> np.ndarray:
    """``[height*width*A, 4]`` anchors, ordered (y, x, anchor) like the transposed head outputs."""
    ys, xs = np.mgrid[:height, :width]
    shift = np.stack([xs, ys, xs, ys], axis=-1).reshape(-1, 1, 4).astype(np.float32) * stride
    return (shift + base_anchors(stride)[None]).reshape(-1, 4)


def _cells(arr: np.ndarray, width: int) -> np.ndarray:
    """``[1, k*A, h, w]`` -> ``[h*w*A, k]`` in (y, x, anchor) order (InsightFace's transpose + reshape)."""
    return arr[0].transpose(1, 2, 0).reshape(-1, width)


class RetinaFaceMxnet(Layout):
    name = "retinaface_mxnet"
    task = "face"
    needs_size = True
    summary = ("9 outputs face_rpn_cls_prob_reshape_stride{32,16,8} [B,4,H/s,W/s], face_rpn_bbox_pred_stride* "
               "[B,8,H/s,W/s], face_rpn_landmark_pred_stride* [B,20,H/s,W/s] (InsightFace RetinaFace, MXNet export)")
    preprocess = Preprocess(scale=1.0, mean=0.0, std=1.0, bgr=False, pad="corner", pad_value=0, stride=32)

    def bind(self, outputs: Sequence[TensorSpec], size: Any, labels: Sequence[str], *, forced: bool) -> Binding | None:
        roles: dict[str, str] = {}
        for spec in outputs:
            m = _NAME.search(spec.name)
            if m is None or int(m.group(2)) not in STRIDES:
                continue
            role = _ROLE[m.group(1)]
            channels = spec.shape[1] if spec.rank == 4 else None
            if spec.rank != 4 or (isinstance(channels, int) and channels != _CHANNELS[role]):
                return None
            roles[f"{role}{m.group(2)}"] = spec.name
        if not all(f"{r}{s}" in roles for r in ("cls", "bbox") for s in STRIDES):
            return None
        has_landmarks = all(f"landmark{s}" in roles for s in STRIDES)
        specs = {o.name: o for o in outputs}
        grid = {s: tuple(specs[roles[f"cls{s}"]].shape[2:4]) for s in STRIDES}
        return Binding(roles, auto=not forced, facts={"landmarks": has_landmarks, "grid": grid})

    def decode(self, arrays: Mapping[str, np.ndarray], binding: Binding, size: tuple[int, int]) -> Candidates:
        boxes, scores, marks = [], [], []
        has_landmarks = binding.facts["landmarks"]
        for s in STRIDES:
            cls = np.asarray(arrays[binding[f"cls{s}"]], np.float32)
            h, w = cls.shape[2:4]
            anchors = anchor_grid(h, w, s)
            scores.append(_cells(cls[:, ANCHORS:], 1))
            d = _cells(np.asarray(arrays[binding[f"bbox{s}"]], np.float32), 4)
            aw = anchors[:, 2:3] - anchors[:, 0:1] + 1.0
            ah = anchors[:, 3:4] - anchors[:, 1:2] + 1.0
            cx = anchors[:, 0:1] + 0.5 * (aw - 1.0)
            cy = anchors[:, 1:2] + 0.5 * (ah - 1.0)
            pcx, pcy = d[:, 0:1] * aw + cx, d[:, 1:2] * ah + cy
            pw, ph = np.exp(d[:, 2:3]) * aw, np.exp(d[:, 3:4]) * ah
            boxes.append(np.concatenate([pcx - 0.5 * (pw - 1), pcy - 0.5 * (ph - 1), pcx + 0.5 * (pw - 1),
                                         pcy + 0.5 * (ph - 1)], axis=1))
            if has_landmarks:
                lm = _cells(np.asarray(arrays[binding[f"landmark{s}"]], np.float32), 10).reshape(-1, 5, 2)
                wh, c = np.concatenate([aw, ah], 1)[:, None, :], np.concatenate([cx, cy], 1)[:, None, :]
                marks.append(lm * wh + c)
        return Candidates(np.concatenate(boxes), np.concatenate(scores), np.concatenate(marks) if has_landmarks else None)

    def graph(self, g: Any, binding: Binding, size: Any) -> tuple[str, str, str | None]:
        boxes, scores, marks = [], [], []
        has_landmarks = binding.facts["landmarks"]
        for s in STRIDES:
            h, w = binding.facts["grid"][s]
            if not (isinstance(h, int) and isinstance(w, int)):
                h, w = -(-size[0] // s), -(-size[1] // s)
            anchors = anchor_grid(h, w, s)
            aw = anchors[:, 2:3] - anchors[:, 0:1] + 1.0
            ah = anchors[:, 3:4] - anchors[:, 1:2] + 1.0
            wh = np.concatenate([aw, ah], 1)[None]  # [1, N, 2]
            ctr = (anchors[:, 0:2][None] + 0.5 * (wh - 1.0)).astype(np.float32)

            def cells(name: str, width: int) -> str:  # [B, k*A, h, w] -> [B, h*w*A, k]
                t = g.op("Transpose", [name], perm=[0, 2, 3, 1])
                return g.op("Reshape", [t, g.const([0, -1, width], np.int64)])

            cls = g.slice(binding[f"cls{s}"], 1, ANCHORS, 2 * ANCHORS)
            scores.append(cells(cls, 1))
            d = cells(binding[f"bbox{s}"], 4)
            cwh, cc = g.const(wh.astype(np.float32), np.float32), g.const(ctr, np.float32)
            pc = g.op("Add", [g.op("Mul", [g.slice(d, 2, 0, 2), cwh]), cc])
            half = g.op("Mul", [g.op("Sub", [g.op("Mul", [g.op("Exp", [g.slice(d, 2, 2, 4)]), cwh]),
                                             g.const(1.0, np.float32)]), g.const(0.5, np.float32)])
            boxes.append(g.op("Concat", [g.op("Sub", [pc, half]), g.op("Add", [pc, half])], axis=2))
            if has_landmarks:
                lm = cells(binding[f"landmark{s}"], 10)
                marks.append(g.op("Add", [g.op("Mul", [lm, g.const(np.tile(wh, (1, 1, 5)).astype(np.float32), np.float32)]),
                                          g.const(np.tile(ctr, (1, 1, 5)), np.float32)]))
        all_scores = g.op("Transpose", [g.op("Concat", scores, axis=1)], perm=[0, 2, 1])  # [B, 1, N]
        return g.op("Concat", boxes, axis=1), all_scores, (g.op("Concat", marks, axis=1) if has_landmarks else None)


LAYOUT = RetinaFaceMxnet()
