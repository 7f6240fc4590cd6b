"""cuda.py and the shared buffer manager without a GPU: the error paths and the staging copy are real here.

The GPU paths are in tests/gpu/test_cuda_gpu.py (run through the device tool).
"""

from __future__ import annotations

import numpy as np
import pytest

from trtkit.backends import cuda
from trtkit.backends import _device_io
from trtkit.errors import BackendUnavailable, CudaError, ShapeError
from tests.conftest import HAS_GPU

rt = pytest.importorskip("cuda.bindings.runtime")
no_gpu = pytest.mark.skipif(HAS_GPU, reason="checks the no-GPU error path")


def test_check_names_the_cuda_error_and_the_call():
    with pytest.raises(CudaError, match=r"cudaMalloc\(5 bytes\) failed with cudaErrorMemoryAllocation"):
        cuda.check((rt.cudaError_t.cudaErrorMemoryAllocation, None), "cudaMalloc(5 bytes)")
    assert cuda.check((rt.cudaError_t.cudaSuccess, 7), "x") == 7
    assert cuda.check((rt.cudaError_t.cudaSuccess, 1, 2), "x") == (1, 2)


def test_check_turns_missing_gpu_into_backend_unavailable():
    with pytest.raises(BackendUnavailable, match="cudaErrorNoDevice.*nvidia-smi"):
        cuda.check((rt.cudaError_t.cudaErrorNoDevice,), "cudaGetDeviceCount")


@no_gpu
@pytest.mark.parametrize("make", [lambda: cuda.Stream(), lambda: cuda.PinnedBuffer(16), lambda: cuda.ensure_device(0)])
def test_no_driver_raises_backend_unavailable(make):
    with pytest.raises(BackendUnavailable, match="CUDA is not usable here"):
        make()


@pytest.mark.parametrize("shape", [(7,), (3, 5), (40, 3, 224, 224), (0, 3)])
def test_stage_copy_is_exact_for_small_large_and_strided(shape):
    src = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for value in (src, np.swapaxes(src, 0, -1)):  # C-contiguous and not
        dst = np.empty(value.shape, value.dtype)
        _device_io.stage_copy(dst, value)
        np.testing.assert_array_equal(dst, value)


def test_stage_copy_refuses_a_dtype_change():
    with pytest.raises(TypeError):
        _device_io.stage_copy(np.empty(4, np.float16), np.ones(4, np.float32))


def test_split_batch_and_concat_round_trip():
    x = np.arange(7 * 2, dtype=np.float32).reshape(7, 2)
    parts = _device_io.split_batch({"a": x, "b": x * 2}, 3)
    assert [p["a"].shape[0] for p in parts] == [3, 3, 1]
    joined = _device_io.concat_outputs(parts)
    np.testing.assert_array_equal(joined["a"], x)
    np.testing.assert_array_equal(joined["b"], x * 2)
    with pytest.raises(ShapeError, match="first dims differ"):
        _device_io.split_batch({"a": x, "b": x[:3]}, 2)
