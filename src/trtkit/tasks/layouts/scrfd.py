"""SCRFD (InsightFace): per stride 8/16/32 a score ``[.., N, 1]``, a box-distance ``[.., N, 4]`` and
optionally a landmark ``[.., N, 10]`` output, N = (H/s)(W/s) x anchors (2). Outputs are grouped by N
and told apart by their last dim, so renamed outputs (``448``, ``471``...) and outputs with or without
the batch axis both work. Decoding follows InsightFace's ``distance2bbox``/``distance2kps``: anchor
centres on the stride grid, distances x stride.

Preprocessing (InsightFace ``SCRFD.detect``): RGB, (pixel - 127.5) / 128, image top-left, pad 0.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ...spec import TensorSpec
from ..preprocess import Preprocess
from .base import Binding, Candidates, Layout

SCRFD_STRIDES = (8, 16, 32)


def anchor_centers(height: int, width: int, stride: int, anchors: int) -> np.ndarray:
    """``[(H/s)*(W/s)*anchors, 2]`` x,y anchor centres in input pixels, row-major, anchors adjacent."""
    ys, xs = np.mgrid[: height // stride, : width // stride]
    centers = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32) * stride
    return np.repeat(centers, anchors, axis=0)


def group_scrfd_heads(
    outputs: Sequence[TensorSpec], size: tuple[int, int], *, anchors: int = 2
) -> dict[int, dict[str, str]] | None:
    """stride -> {"score"|"bbox"|"kps": output name}, or None when the outputs are not SCRFD heads.

    Matched by anchor count N and last dim; when N is dynamic (e.g. a dynamic-H/W export) the
    outputs of each kind are taken in order, which is InsightFace's export order (8, 16, 32).
    """
    h, w = size
    kinds = {1: "score", 4: "bbox", 10: "kps"}
    heads: dict[int, dict[str, str]] = {s: {} for s in SCRFD_STRIDES}
    by_kind: dict[str, list[str]] = {}
    for spec in outputs:
        last = spec.shape[-1] if spec.rank in (2, 3) else None
        if last not in kinds:
            continue
        by_kind.setdefault(kinds[last], []).append(spec.name)  # type: ignore[index]
        for stride in SCRFD_STRIDES:
            if spec.shape[-2] == (h // stride) * (w // stride) * anchors:
                heads[stride].setdefault(kinds[last], spec.name)  # type: ignore[index]
    if any({"score", "bbox"} - set(head) for head in heads.values()):
        if not all(len(by_kind.get(k, [])) == len(SCRFD_STRIDES) for k in ("score", "bbox")):
            return None
        n = len(SCRFD_STRIDES)
        heads = {s: {k: names[i] for k, names in by_kind.items() if len(names) == n} for i, s in enumerate(SCRFD_STRIDES)}
    return heads


class Scrfd(Layout):
    name = "scrfd"
    task = "face"
    needs_size = True
    summary = "SCRFD heads score [N,1], bbox [N,4], kps [N,10] at strides 8/16/32, N = (H/s)*(W/s)*2"
    preprocess = Preprocess(scale=1.0, mean=127.5, std=128.0, bgr=False, pad="corner", pad_value=0, stride=32)

    def expected(self, size: tuple[int, int] | None) -> str:
        if size is None:
            return self.summary
        h, w = size
        n = ", ".join(f"{(h // s) * (w // s) * 2} at stride {s}" for s in SCRFD_STRIDES)
        return f"SCRFD heads score [N,1], bbox [N,4], kps [N,10] with N = {n} for input {h}x{w}"

    def bind(self, outputs: Sequence[TensorSpec], size: Any, labels: Sequence[str], *, forced: bool) -> Binding | None:
        if len(outputs) not in (6, 9):
            return None
        for anchors in (2, 1):  # InsightFace: 2 anchors per cell for 3-stride models
            heads = group_scrfd_heads(outputs, size or (0, 0), anchors=anchors)
            if heads is not None and (size is None or self._sizes_fit(outputs, heads, size, anchors)):
                break
        else:
            return None
        roles = {f"{kind}{stride}": name for stride, head in heads.items() for kind, name in head.items()}
        ranks = {o.name: o.rank for o in outputs}
        return Binding(roles, auto=not forced, facts={"anchors": anchors, "kps": all("kps" in h for h in heads.values()),
                                                       "ranks": {n: ranks[n] for n in roles.values()}})

    @staticmethod
    def _sizes_fit(outputs: Sequence[TensorSpec], heads: dict[int, dict[str, str]], size: tuple[int, int], anchors: int) -> bool:
        specs = {o.name: o for o in outputs}
        h, w = size
        for stride, head in heads.items():
            n = specs[head["score"]].shape[-2]
            if isinstance(n, int) and n != (h // stride) * (w // stride) * anchors:
                return False
        return True

    def decode(self, arrays: Mapping[str, np.ndarray], binding: Binding, size: tuple[int, int]) -> Candidates:
        boxes, scores, kps = [], [], []
        anchors, has_kps = binding.facts["anchors"], binding.facts["kps"]
        for stride in SCRFD_STRIDES:
            centers = anchor_centers(*size, stride, anchors)
            scores.append(np.asarray(arrays[binding[f"score{stride}"]], np.float32).reshape(-1, 1))
            dist = np.asarray(arrays[binding[f"bbox{stride}"]], np.float32).reshape(-1, 4) * stride
            boxes.append(np.concatenate([centers - dist[:, :2], centers + dist[:, 2:]], axis=1))
            if has_kps:
                k = np.asarray(arrays[binding[f"kps{stride}"]], np.float32).reshape(-1, 5, 2) * stride
                kps.append(k + centers[:, None, :])
        return Candidates(np.concatenate(boxes), np.concatenate(scores), np.concatenate(kps) if has_kps else None)

    def graph(self, g: Any, binding: Binding, size: Any) -> tuple[str, str, str | None]:
        anchors, has_kps, ranks = binding.facts["anchors"], binding.facts["kps"], binding.facts["ranks"]

        def batched(name: str) -> str:  # insightface exports drop the batch axis: [N, k] -> [1, N, k]
            return g.unsqueeze(name, [0]) if ranks[name] == 2 else name

        boxes, scores, kps = [], [], []
        for stride in SCRFD_STRIDES:
            centers = anchor_centers(*size, stride, anchors)[None]  # [1, N, 2]
            c = g.const(centers, np.float32, f"anchors{stride}")
            dist = g.op("Mul", [batched(binding[f"bbox{stride}"]), g.const(float(stride), np.float32)])
            boxes.append(g.op("Concat", [g.op("Sub", [c, g.slice(dist, 2, 0, 2)]), g.op("Add", [c, g.slice(dist, 2, 2, 4)])], axis=2))
            scores.append(batched(binding[f"score{stride}"]))
            if has_kps:
                tiled = g.const(np.tile(centers, (1, 1, 5)), np.float32, f"anchors{stride}x5")
                kps.append(g.op("Add", [g.op("Mul", [batched(binding[f"kps{stride}"]), g.const(float(stride), np.float32)]), tiled]))
        all_scores = g.op("Transpose", [g.op("Concat", scores, axis=1)], perm=[0, 2, 1])  # [B, 1, N]
        return g.op("Concat", boxes, axis=1), all_scores, (g.op("Concat", kps, axis=1) if has_kps else None)


LAYOUT = Scrfd()
