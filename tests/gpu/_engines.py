"""Tiny real TensorRT / TensorRT-RTX engines built on the fly (the RTX builder runs without a GPU)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType


def build_relu_engine(path: Path, *, max_batch: int = 4, trt: ModuleType | None = None) -> Path:
    """x [-1,3,8] -> relu -> y, one profile with batch 1..max_batch, built with ``trt``
    (a tensorrt or tensorrt_rtx module; default tensorrt_rtx)."""
    if trt is None:
        import tensorrt_rtx as trt

    from trtkit.engine.flavor import TrtFlavor
    from trtkit.engine.trt_api import shared_logger

    logger = shared_logger(trt)
    builder = trt.Builder(logger)
    backend = "tensorrt-rtx" if trt.__name__ == "tensorrt_rtx" else "tensorrt"
    network = builder.create_network(TrtFlavor(backend, trt, trt.__version__).network_flags(strongly_typed=False))
    x = network.add_input("x", trt.float32, (-1, 3, 8))
    relu = network.add_activation(x, trt.ActivationType.RELU)
    relu.get_output(0).name = "y"
    network.mark_output(relu.get_output(0))
    config = builder.create_builder_config()
    sources = getattr(trt.TacticSource, "__members__", {})
    if "CUBLAS" in sources:  # the H200 kit's cuBLAS/cuDNN are stubs (see tests/README.md); harmless elsewhere
        mask = int(config.get_tactic_sources())
        for name in ("CUBLAS", "CUBLAS_LT", "CUDNN"):
            mask &= ~(1 << int(sources[name]))
        config.set_tactic_sources(mask)
    profile = builder.create_optimization_profile()
    profile.set_shape("x", (1, 3, 8), (2, 3, 8), (max_batch, 3, 8))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"{trt.__name__} failed to build the test engine: " + " | ".join(logger.take()))
    path.write_bytes(bytes(plan))
    return path
