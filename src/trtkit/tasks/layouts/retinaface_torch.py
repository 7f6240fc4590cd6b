"""RetinaFace exported from biubug6's ``Pytorch_Retinaface`` (mobilenet0.25 / ResNet50): ``loc [B,N,4]``,
``conf [B,N,2]`` (background, face; softmax applied in the exported ``phase='test'`` model) and
``landms [B,N,10]``, N = prior boxes for the input size. Bound by those names; when an export left them
unnamed, by last dim (4, 2, 10) among three rank-3 outputs of equal N, never by position.

Decoding follows ``layers/functions/prior_box.py`` and ``utils/box_utils.py``: priors (min sizes
16,32 / 64,128 / 256,512 at steps 8/16/32, centres ``(j + 0.5) * step / W``, ``ceil(H/step)`` cells),
``centre = prior_c + loc_xy * 0.1 * prior_wh``, ``wh = prior_wh * exp(loc_wh * 0.2)``,
landmarks ``prior_c + d * 0.1 * prior_wh``, everything in 0..1 then times the input width/height.
``conf`` that is not already probabilities (values outside [0,1] or rows not summing to 1, tested the
same way on the host and in the add-nms graph) gets a softmax first.

Preprocessing (``detect.py``): BGR, pixel - (104, 117, 123), no scaling; letterbox top-left, pad 0.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from ...spec import TensorSpec
from ..preprocess import Preprocess
from .base import Binding, Candidates, Layout

MIN_SIZES = ((16, 32), (64, 128), (256, 512))
STEPS = (8, 16, 32)
VARIANCES = (0.1, 0.2)
_NAMES = {"loc": ("loc", "bbox", "boxes"), "conf": ("conf", "scores", "cls"), "landms": ("landms", "landmarks", "ldm")}
_LAST = {"loc": 4, "conf": 2, "landms": 10}


def prior_boxes(height: int, width: int) -> np.ndarray:
    """``[N, 4]`` cx, cy, w, h in 0..1, in PriorBox's order (level, row, column, min size)."""
    out = []
    for sizes, step in zip(MIN_SIZES, STEPS):
        rows, cols = math.ceil(height / step), math.ceil(width / step)
        ys, xs = np.mgrid[:rows, :cols]
        cx = ((xs + 0.5) * step / width).reshape(-1, 1)
        cy = ((ys + 0.5) * step / height).reshape(-1, 1)
        per = [np.concatenate([cx, cy, np.full_like(cx, m / width), np.full_like(cy, m / height)], 1) for m in sizes]
        out.append(np.stack(per, axis=1).reshape(-1, 4))
    return np.concatenate(out).astype(np.float32)


def _is_probability(conf: np.ndarray) -> bool:
    return bool(conf.min() >= 0 and conf.max() <= 1 and np.abs(conf.sum(-1) - 1.0).max() < 1e-3)


class RetinaFaceTorch(Layout):
    name = "retinaface_torch"
    task = "face"
    needs_size = True
    summary = "loc [B,N,4], conf [B,N,2], landms [B,N,10], N = prior boxes (Pytorch_Retinaface)"
    # mean is per channel of the tensor, i.e. B, G, R here (Preprocess applies it after the channel swap)
    preprocess = Preprocess(scale=1.0, mean=(104.0, 117.0, 123.0), std=1.0, bgr=True, pad="corner", pad_value=0, stride=32)

    def expected(self, size: tuple[int, int] | None) -> str:
        if size is None:
            return self.summary
        n = len(prior_boxes(*size))
        return f"loc [B,{n},4], conf [B,{n},2], landms [B,{n},10] for input {size[0]}x{size[1]} (Pytorch_Retinaface)"

    def bind(self, outputs: Sequence[TensorSpec], size: Any, labels: Sequence[str], *, forced: bool) -> Binding | None:
        rank3 = [o for o in outputs if o.rank == 3]
        roles: dict[str, str] = {}
        for role, names in _NAMES.items():
            hit = [o for o in rank3 if o.name.lower() in names and o.shape[2] == _LAST[role]]
            if len(hit) == 1:
                roles[role] = hit[0].name
        if len(roles) < 2 and len(rank3) == 3 and len(outputs) == 3:  # unnamed export: by last dim, not position
            by_last = {o.shape[2]: o.name for o in rank3}
            if set(by_last) == {4, 2, 10}:
                roles = {role: by_last[last] for role, last in _LAST.items()}
        if not {"loc", "conf"} <= set(roles):
            return None
        specs = {o.name: o for o in outputs}
        counts = {specs[n].shape[1] for n in roles.values()}
        static = {c for c in counts if isinstance(c, int)}
        if len(static) > 1 or (size is not None and static and static != {len(prior_boxes(*size))}):
            return None
        return Binding(roles, auto=not forced)

    def decode(self, arrays: Mapping[str, np.ndarray], binding: Binding, size: tuple[int, int]) -> Candidates:
        h, w = size
        pri = prior_boxes(h, w)
        loc = np.asarray(arrays[binding["loc"]], np.float32)[0]
        conf = np.asarray(arrays[binding["conf"]], np.float32)[0]
        if not _is_probability(conf):
            e = np.exp(conf - conf.max(-1, keepdims=True))
            conf = e / e.sum(-1, keepdims=True)
        c = pri[:, :2] + loc[:, :2] * VARIANCES[0] * pri[:, 2:]
        wh = pri[:, 2:] * np.exp(loc[:, 2:] * VARIANCES[1])
        scale = np.asarray([w, h], np.float32)
        boxes = np.concatenate([(c - wh / 2) * scale, (c + wh / 2) * scale], axis=1)
        marks = None
        if "landms" in binding.roles:
            d = np.asarray(arrays[binding["landms"]], np.float32)[0].reshape(-1, 5, 2)
            marks = (pri[:, None, :2] + d * VARIANCES[0] * pri[:, None, 2:]) * scale
        return Candidates(boxes, conf[:, 1:2], marks)

    def graph(self, g: Any, binding: Binding, size: Any) -> tuple[str, str, str | None]:
        h, w = size
        pri = prior_boxes(h, w)[None]  # [1, N, 4]
        scale = np.asarray([w, h], np.float32)
        pc, pwh = g.const(pri[..., :2], np.float32, "priors_c"), g.const(pri[..., 2:], np.float32, "priors_wh")
        loc = binding["loc"]
        c = g.op("Add", [pc, g.op("Mul", [g.slice(loc, 2, 0, 2), g.const(pri[..., 2:] * VARIANCES[0], np.float32)])])
        wh = g.op("Mul", [pwh, g.op("Exp", [g.op("Mul", [g.slice(loc, 2, 2, 4), g.const(VARIANCES[1], np.float32)])])])
        half = g.op("Mul", [wh, g.const(0.5, np.float32)])
        sc = g.const(scale, np.float32)
        boxes = g.op("Concat", [g.op("Mul", [g.op("Sub", [c, half]), sc]), g.op("Mul", [g.op("Add", [c, half]), sc])], axis=2)
        conf = binding["conf"]  # softmax unless already probabilities: the host's test, as graph nodes
        low = g.op("Less", [g.op("ReduceMin", [conf], keepdims=0), g.const(0.0, np.float32)])
        high = g.op("Greater", [g.op("ReduceMax", [conf], keepdims=0), g.const(1.0, np.float32)])
        off = g.op("Abs", [g.op("Sub", [g.reduce("ReduceSum", conf, 2, keepdims=0), g.const(1.0, np.float32)])])
        unsummed = g.op("Not", [g.op("Less", [g.op("ReduceMax", [off], keepdims=0), g.const(1e-3, np.float32)])])
        logits = g.op("Or", [g.op("Or", [low, high]), unsummed])
        conf = g.op("Where", [logits, g.op("Softmax", [conf], axis=2), conf])
        scores = g.op("Transpose", [g.slice(conf, 2, 1, 2)], perm=[0, 2, 1])  # [B, 1, N]
        marks = None
        if "landms" in binding.roles:
            tiled_c = g.const(np.tile(pri[..., :2], (1, 1, 5)), np.float32)
            tiled_s = g.const(np.tile(pri[..., 2:] * VARIANCES[0], (1, 1, 5)), np.float32)
            marks = g.op("Mul", [g.op("Add", [tiled_c, g.op("Mul", [binding["landms"], tiled_s])]),
                                 g.const(np.tile(scale, 5), np.float32)])
        return boxes, scores, marks


LAYOUT = RetinaFaceTorch()
