"""ONNX graphs whose outputs we construct, one per detection/face output layout.

Each graph takes an image input ``images [1,3,H,W]`` and returns fixed raw head outputs (built here
with numpy, so a test knows every box it contains), multiplied on the score entries by a *gate*
``sigmoid(gain * (mean(channel 0) - threshold))`` of the fed tensor. With the default gate
(threshold far below any input) the gate is 1 and the outputs are exactly the constants; a test of
preprocessing sets a threshold that only the right preprocessing passes (e.g. YOLOX's BGR raw pixels
put the blue channel, 0..255, first; YOLOv5's RGB /255 puts red, 0..1, first).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def gated_graph(path: Path, outputs: dict[str, np.ndarray], score_masks: dict[str, np.ndarray], *, size: tuple[int, int],
                threshold: float = -1e6, gain: float = 1.0, opset: int = 17, metadata: dict[str, str] | None = None) -> Path:
    """Outputs = constants, their score entries (mask 1) times the gate; see the module docstring."""
    h, w = size
    init = [numpy_helper.from_array(np.asarray([0], np.int64), "c0"), numpy_helper.from_array(np.asarray([1], np.int64), "c1"),
            numpy_helper.from_array(np.asarray([1], np.int64), "ax1"),
            numpy_helper.from_array(np.float32(threshold), "thr"), numpy_helper.from_array(np.float32(gain), "gain"),
            numpy_helper.from_array(np.float32(1.0), "one")]
    nodes = [
        helper.make_node("Slice", ["images", "c0", "c1", "ax1"], ["ch0"]),
        helper.make_node("ReduceMean", ["ch0"], ["m"], keepdims=0),
        helper.make_node("Sub", ["m", "thr"], ["d"]),
        helper.make_node("Mul", ["d", "gain"], ["z"]),
        helper.make_node("Sigmoid", ["z"], ["gate"]),
        helper.make_node("Sub", ["gate", "one"], ["gate_m1"]),
    ]
    outs = []
    for name, value in outputs.items():
        value = np.asarray(value, np.float32)
        mask = np.asarray(score_masks.get(name, np.zeros_like(value)), np.float32)
        init += [numpy_helper.from_array(value, f"{name}_raw"), numpy_helper.from_array(mask, f"{name}_mask")]
        nodes += [
            helper.make_node("Mul", [f"{name}_mask", "gate_m1"], [f"{name}_g"]),
            helper.make_node("Add", [f"{name}_g", "one"], [f"{name}_f"]),
            helper.make_node("Mul", [f"{name}_raw", f"{name}_f"], [name]),
        ]
        outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(value.shape)))
    graph = helper.make_graph(nodes, "layout", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, h, w])],
                              outs, initializer=init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _boxes(rng: np.random.Generator, n: int, size: tuple[int, int], clusters: int = 6) -> np.ndarray:
    """cx,cy,w,h: ``n`` boxes around a few objects, so NMS has overlaps to suppress."""
    h, w = size
    centres = np.stack([rng.uniform(0.2 * w, 0.8 * w, clusters), rng.uniform(0.2 * h, 0.8 * h, clusters),
                        rng.uniform(0.1 * w, 0.3 * w, clusters), rng.uniform(0.1 * h, 0.3 * h, clusters)], 1)
    pick = rng.integers(0, clusters, n)
    return (centres[pick] * rng.uniform(0.9, 1.1, (n, 4))).astype(np.float32)


def yolo_rows(kind: str, size: tuple[int, int], classes: int, *, seed: int = 0) -> np.ndarray:
    """Raw ``[N, 4(+1)+C]`` rows for yolov8 (no objectness), yolov5 or yolox (raw grid offsets)."""
    rng = np.random.default_rng(seed)
    h, w = size
    if kind == "yolox":
        n = sum((h // s) * (w // s) for s in (8, 16, 32))
    else:
        n = 3 * sum((h // s) * (w // s) for s in (8, 16, 32)) if kind == "yolov5" else sum((h // s) * (w // s) for s in (8, 16, 32))
    box = _boxes(rng, n, size)
    cls = rng.uniform(0, 0.3, (n, classes)).astype(np.float32)
    hot = rng.choice(n, max(8, n // 40), replace=False)
    cls[hot, rng.integers(0, classes, len(hot))] = rng.uniform(0.5, 1.0, len(hot))
    if kind == "yolov8":
        return np.concatenate([box, cls], 1)
    obj = rng.uniform(0.3, 1.0, (n, 1)).astype(np.float32)
    if kind == "yolox":  # invert YOLOX decoding so the decoded boxes are the ones drawn above
        grid, stride = [], []
        for s in (8, 16, 32):
            ys, xs = np.meshgrid(np.arange(h // s), np.arange(w // s), indexing="ij")
            grid.append(np.stack([xs, ys], -1).reshape(-1, 2))
            stride.append(np.full((grid[-1].shape[0], 1), s))
        g, st = np.concatenate(grid).astype(np.float32), np.concatenate(stride).astype(np.float32)
        box = np.concatenate([box[:, :2] / st - g, np.log(box[:, 2:4] / st)], 1)
    return np.concatenate([box, obj, cls], 1)


def yolo_graph(path: Path, kind: str, *, size: tuple[int, int] = (128, 128), classes: int = 5, seed: int = 0,
               threshold: float = -1e6, gain: float = 1.0, name: str = "output0",
               metadata: dict[str, str] | None = None) -> tuple[Path, np.ndarray]:
    """A YOLO-layout graph (``kind`` yolov8 [1,4+C,N], yolov5/yolor or yolox [1,N,5+C]) and its raw output."""
    rows = yolo_rows(kind, size, classes, seed=seed)
    first = 4 if kind == "yolov8" else 4  # objectness and class columns are gated, box columns not
    mask = np.zeros_like(rows)
    mask[:, first:] = 1
    value, m = (rows.T[None], mask.T[None]) if kind == "yolov8" else (rows[None], mask[None])
    return gated_graph(path, {name: value}, {name: m}, size=size, threshold=threshold, gain=gain, metadata=metadata), value
