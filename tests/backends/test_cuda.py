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


class _Registration:
    """Stands in for cudaHostRegister (no GPU here): records what the pool locks and unlocks."""

    log: list = []

    def __init__(self, ptr, nbytes, *, device_id):
        self.ptr, self.nbytes = ptr, nbytes
        self.log.append(("lock", ptr, nbytes))

    def close(self):
        self.log.append(("unlock", self.ptr, self.nbytes))


def test_pinned_array_pool_reuses_an_array_only_once_nothing_refers_to_it():
    _Registration.log = []
    pool = _device_io.PinnedArrayPool(device_id=0, per_name=3, register=_Registration)
    f32 = np.dtype(np.float32)
    a = pool.take("out", (4, 1000), f32)
    assert a.shape == (4, 1000) and a.dtype == f32 and a.flags.writeable and a.flags.c_contiguous
    assert a.ctypes.data % 4096 == 0  # whole pages are locked: none shared with other memory
    lock = _Registration.log[0]
    assert lock[1] == a.ctypes.data and lock[2] == 16384
    first = a.ctypes.data
    view = a[1:2].T  # a view keeps the memory from reuse, even once the result itself is dropped
    del a
    b = pool.take("out", (4, 1000), f32)
    assert b.ctypes.data != first
    del view
    c = pool.take("out", (2, 1000), f32)  # the first array again: nothing refers to it, and it is big enough
    assert c.ctypes.data == lock[1]
    d = pool.take("out", (4, 1000), f32)  # the third and last array of this name
    assert pool.take("out", (4, 1000), f32) is None  # all three held: the caller stages into a new array
    assert pool.take("other", (10,), f32) is not None and pool.nbytes == 4 * 4096 * 3 + 4096
    del b
    assert pool.take("out", (4, 1000), f32) is not None
    pool.close()
    assert sorted(e[0] for e in _Registration.log) == ["lock"] * 4 + ["unlock"] * 4
    c[...], d[...] = 1.0, 2.0  # arrays a caller still holds stay valid after close (as pageable memory)
    assert (c == 1).all() and (d == 2).all() and pool.take("out", (4, 1000), f32) is None


def test_pinned_array_pool_keeps_to_its_byte_budget():
    pool = _device_io.PinnedArrayPool(device_id=0, per_name=10, max_bytes=3 * 4096, register=_Registration)
    held = [pool.take("out", (1024,), np.dtype(np.float32)) for _ in range(3)]
    assert all(h is not None for h in held) and pool.take("out", (1024,), np.dtype(np.float32)) is None
    pool.close()


def test_pinned_array_pool_makes_room_and_gives_up_when_locking_fails():
    _Registration.log = []
    pool = _device_io.PinnedArrayPool(device_id=0, per_name=2, register=_Registration)
    f32 = np.dtype(np.float32)
    small = [pool.take("out", (1024,), f32) for _ in range(2)]
    first = small[0].ctypes.data
    del small  # both unheld, both too small for the next output: one makes room
    big = pool.take("out", (4096,), f32)
    assert big is not None and big.shape == (4096,)
    assert ("unlock", first, 4096) in _Registration.log and pool.nbytes == 4096 + 4 * 4096
    pool.close()

    class Failing:
        def __init__(self, ptr, nbytes, *, device_id):
            raise CudaError("cudaHostRegister(16384 bytes) failed: cudaErrorMemoryAllocation")

    pool = _device_io.PinnedArrayPool(device_id=0, per_name=2, register=Failing)
    assert pool.take("out", (4096,), f32) is None  # the call stages into a new array instead of failing
    assert pool.take("out", (4096,), f32) is None and pool.nbytes == 0
    pool.close()


def test_pinned_array_of_a_dropped_pool_is_unlocked_when_its_last_reference_goes():
    import gc

    order = []

    class Watching(_Registration):
        def close(self):
            order.append(("unlock", self.ptr))

    pool = _device_io.PinnedArrayPool(device_id=0, per_name=2, register=Watching)
    out = pool.take("out", (1024,), np.dtype(np.float32))
    ptr = out.ctypes.data
    del pool
    gc.collect()
    assert order == []  # the caller still holds the array: still locked
    del out
    gc.collect()
    assert order == [("unlock", ptr)]
