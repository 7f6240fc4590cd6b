"""Tiny ONNX models built with onnx.helper for backend, run and compare tests.

Every model is small enough to build and run in milliseconds, and simple
enough that tests can compute the expected output with numpy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

W = np.arange(12, dtype=np.float32).reshape(4, 3) / 10 - 0.5
B = np.array([0.1, -0.2, 0.3], dtype=np.float32)


def save_graph(graph: onnx.GraphProto, path: Path) -> Path:
    """Opset 17, IR 8, checked, saved to ``path``."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def affine(path: Path, *, bias: np.ndarray = B, weight: np.ndarray = W) -> Path:
    """Inputs x [batch,4] float32 and s [1] float32; outputs z = relu(y), then y = x @ W + b + s.

    The outputs are declared z first on purpose: output order must follow the model, not creation order.
    """
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["xwb"]),
        helper.make_node("Add", ["xwb", "s"], ["y"]),
        helper.make_node("Relu", ["y"], ["z"]),
    ]
    cols = weight.shape[1]
    graph = helper.make_graph(
        nodes,
        "affine",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("s", TensorProto.FLOAT, [1]),
        ],
        [
            helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", cols]),
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", cols]),
        ],
        initializer=[numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "b")],
    )
    return save_graph(graph, path)


def affine_reference(x: np.ndarray, s: np.ndarray, *, bias: np.ndarray = B, weight: np.ndarray = W) -> dict[str, np.ndarray]:
    y = x @ weight + bias + s
    return {"z": np.maximum(y, 0), "y": y}


def single(path: Path, op: str = "Log") -> Path:
    """One input x [2,3] float32, one output out = op(x) (Log gives NaN for negative x)."""
    graph = helper.make_graph(
        [helper.make_node(op, ["x"], ["out"])],
        f"single_{op.lower()}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 3])],
    )
    return save_graph(graph, path)


def reshape_to_four(path: Path) -> Path:
    """x [n] -> Reshape to [2,2]: any n other than 4 fails inside ONNX Runtime."""
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["out"])],
        "reshape4",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 2])],
        initializer=[numpy_helper.from_array(np.array([2, 2], dtype=np.int64), "shape")],
    )
    return save_graph(graph, path)


def typed(path: Path) -> Path:
    """ids int64 [1,5] and flag bool [1]; out = Cast(ids -> float) (for generated int/bool inputs)."""
    graph = helper.make_graph(
        [helper.make_node("Cast", ["ids"], ["out"], to=TensorProto.FLOAT), helper.make_node("Not", ["flag"], ["nflag"])],
        "typed",
        [
            helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 5]),
            helper.make_tensor_value_info("flag", TensorProto.BOOL, [1]),
        ],
        [
            helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 5]),
            helper.make_tensor_value_info("nflag", TensorProto.BOOL, [1]),
        ],
    )
    return save_graph(graph, path)
