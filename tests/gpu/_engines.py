"""Tiny real TensorRT / TensorRT-RTX engines built on the fly (the RTX builder runs without a GPU)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType


def build_relu_engine(path: Path, *, max_batch: int = 4, trt: ModuleType | None = None) -> Path:
    """x [-1,3,8] -> relu -> y, one profile with batch 1..max_batch, built with ``trt``
    (a tensorrt or tensorrt_rtx module; default tensorrt_rtx)."""
    if trt is None:
        import tensorrt_rtx as trt

    from trtkit.engine.trt_api import shared_logger

    logger = shared_logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    x = network.add_input("x", trt.float32, (-1, 3, 8))
    relu = network.add_activation(x, trt.ActivationType.RELU)
    relu.get_output(0).name = "y"
    network.mark_output(relu.get_output(0))
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("x", (1, 3, 8), (2, 3, 8), (max_batch, 3, 8))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"{trt.__name__} failed to build the test engine: " + " | ".join(logger.take()))
    path.write_bytes(bytes(plan))
    return path
