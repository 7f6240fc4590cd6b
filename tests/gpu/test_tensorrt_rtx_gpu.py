"""TensorRT-RTX engine loading on a real GPU: runs where RTX supports the GPU, a clear error where not."""

from __future__ import annotations

import numpy as np
import pytest

import trtkit
from trtkit.backends import cuda
from trtkit.errors import EngineError
from tests.gpu._engines import build_relu_engine

pytestmark = pytest.mark.gpu


def test_rtx_engine_runs_or_refuses_this_gpu_clearly(tmp_path):
    pytest.importorskip("tensorrt_rtx")
    engine = build_relu_engine(tmp_path / "relu.engine", max_batch=4)
    if cuda.compute_capability(0) == (9, 0):  # Hopper: TensorRT-RTX refuses it
        with pytest.raises(EngineError, match="compute capability") as info:
            trtkit.load(engine)
        assert "full TensorRT" in str(info.value)
        return
    x = np.random.default_rng(0).standard_normal((6, 3, 8)).astype(np.float32)  # 6 > max batch 4: chunked
    with trtkit.load(engine) as backend:
        np.testing.assert_array_equal(backend.infer(x)["y"], np.maximum(x, 0))
        np.testing.assert_array_equal(backend.infer(x[:2])["y"], np.maximum(x[:2], 0))
