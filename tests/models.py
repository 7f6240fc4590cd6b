"""Small real models for tests: PyTorch factories (for ``trtkit export``) and hand-built ONNX graphs.

The torch factories are plain module-level callables so the CLI can reach them as
``tests/models.py:NAME``; torch is imported lazily so importing this file is cheap.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()


def source(name: str) -> str:
    """``/abs/path/tests/models.py:name`` for ``trtkit export``."""
    return f"{HERE}:{name}"


def conv_net():
    """[N,3,H,W] -> (features [N,8,H/2,W/2], logits [N,5]); works at any batch and H/W."""
    import torch
    from torch import nn

    class ConvNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1)
            )
            self.head = nn.Linear(8, 5)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            feats = self.body(x)
            return feats, self.head(feats.mean(dim=(2, 3)))

    torch.manual_seed(0)
    return ConvNet()


def two_in_two_out():
    """(a [N,4], b [N,4]) -> (a @ W + b, (a * b).sum(1, keepdim=True))."""
    import torch
    from torch import nn

    class TwoInTwoOut(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.fc(a) + b, (a * b).sum(1, keepdim=True)

    torch.manual_seed(0)
    return TwoInTwoOut()


def embedding_model():
    """ids int64 [N,T] -> mean embedding [N,6]."""
    import torch
    from torch import nn

    class Embed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(32, 6)  # ids come from the shared generator: uniform in [0, 25)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.emb(ids).mean(dim=1)

    torch.manual_seed(0)
    return Embed()


def shape_baking_net():
    """Turns x.shape into Python ints: traces fine at one batch, wrong at any other."""
    import torch
    from torch import nn

    class Baked(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            n = int(x.shape[0])  # a Python int: the trace freezes it
            return x.reshape(n * x.shape[1], -1).sum(1).reshape(n, -1) + torch.ones(n, 1) * n

    return Baked()


NOT_A_MODULE = 42


def needs_args(width: int):
    """A factory that cannot be called without arguments."""
    return width


def broken_factory():
    raise ValueError("weights server unreachable")


# --------------------------------------------------------------- ONNX graphs


def save_concat_const_batch(path: Path) -> Path:
    """x [1,2,4,4] -> Concat(x, const [1,1,4,4], axis=1): the constant bakes batch 1 in, so batch 2 cannot work."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    const = numpy_helper.from_array(np.ones((1, 1, 4, 4), np.float32), "pad")
    graph = helper.make_graph(
        [helper.make_node("Concat", ["x", "pad"], ["y"], axis=1, name="concat_pad")],
        "baked",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])],
        [const],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def save_two_inputs(path: Path) -> Path:
    """images.0 [batch,3,8,8] and 'scale:0' [batch,1] -> images.0 * scale (names with dots and colons)."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("Unsqueeze", ["scale:0", "axes"], ["s4"], name="unsq"),
            helper.make_node("Mul", ["images.0", "s4"], ["out"], name="mul"),
        ],
        "two",
        [
            helper.make_tensor_value_info("images.0", TensorProto.FLOAT, ["batch", 3, 8, 8]),
            helper.make_tensor_value_info("scale:0", TensorProto.FLOAT, ["batch", 1]),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path
