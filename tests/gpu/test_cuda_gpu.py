"""cuda.py and the shared buffer manager on a real GPU (run through the device tool)."""

from __future__ import annotations

import numpy as np
import pytest

from trtkit.backends import cuda
from trtkit.backends._device_io import IoSlot
from trtkit.errors import ClosedError, CudaError

pytestmark = pytest.mark.gpu


def test_pinned_round_trip_through_device():
    data = np.random.default_rng(0).standard_normal((64, 1000)).astype(np.float32)
    with cuda.Stream() as stream, cuda.PinnedBuffer(data.nbytes) as src, cuda.PinnedBuffer(data.nbytes) as dst, cuda.DeviceBuffer(data.nbytes) as dev:
        src.view(data.dtype, data.shape)[...] = data
        cuda.copy_htod_async(dev.ptr, src.ptr, data.nbytes, stream)
        cuda.copy_dtoh_async(dst.ptr, dev.ptr, data.nbytes, stream)
        stream.synchronize()
        np.testing.assert_array_equal(dst.view(data.dtype, data.shape), data)


@pytest.mark.parametrize("shape", [(3, 5), (1, 3, 640, 640), (16, 3, 640, 640), (0, 4)])  # 16x: chunked upload
def test_slot_upload_download_pageable_and_noncontiguous(shape):
    rng = np.random.default_rng(1)
    base = rng.standard_normal(shape[::-1]).astype(np.float32)
    value = base.T  # not C-contiguous: staging must still copy it right
    slot = IoSlot(device_id=0)
    try:
        ptr = slot.upload("x", value)
        slot.download("x", ptr, value.shape, value.dtype)
        out = slot.collect()["x"]
        np.testing.assert_array_equal(out, value)
        assert out.ctypes.data != slot.host.get("out/x", 0).ptr  # a copy, not a view of pinned memory
    finally:
        slot.close()


def test_buffer_pool_grows_only():
    with cuda.BufferPool("device") as pool:
        a = pool.get("t", 1000)
        assert pool.get("t", 10).ptr == a.ptr and pool.allocations == 1
        b = pool.get("t", 5000)
        assert b.nbytes == 5000 and pool.allocations == 2
        assert pool.get("t", 4000).ptr == b.ptr and pool.allocations == 2
        pool.get("u", 1)
        assert pool.allocations == 3


def test_no_leak_over_10000_calls():
    slot = IoSlot(device_id=0)
    try:
        x = np.arange(3 * 224, dtype=np.float32).reshape(3, 224)
        ptr = slot.upload("x", x)
        slot.download("y", ptr, x.shape, x.dtype)
        slot.collect()
        allocations = slot.device.allocations + slot.host.allocations
        free_before, _ = cuda.mem_info()
        for i in range(10_000):
            x[0, 0] = i
            ptr = slot.upload("x", x)
            slot.download("y", ptr, x.shape, x.dtype)
            out = slot.collect()["y"]
        free_after, _ = cuda.mem_info()
        assert out[0, 0] == 9999
        assert slot.device.allocations + slot.host.allocations == allocations
        assert abs(free_before - free_after) < (2 << 20), (free_before, free_after)
    finally:
        slot.close()


def test_device_array_and_torch_interop():
    torch = pytest.importorskip("torch")
    t = torch.arange(12, dtype=torch.float32, device="cuda").reshape(3, 4) * 2
    slot = IoSlot(device_id=0)
    try:
        ptr = slot.upload("t", t)
        assert ptr == t.data_ptr()  # device input used in place, no host round trip
        arr = slot.to_device_array(ptr, (3, 4), np.dtype(np.float32))
        slot.stream.synchronize()
        back = torch.as_tensor(arr, device="cuda")
        assert torch.equal(back, t) and back.data_ptr() != t.data_ptr()
        np.testing.assert_array_equal(arr.numpy(), t.cpu().numpy())
        arr.close()
        with pytest.raises(ClosedError):
            arr.numpy()
        with pytest.raises(CudaError, match="C-contiguous"):
            slot.upload("t", t.T)
    finally:
        slot.close()


def test_events_graph_and_errors():
    n = 1 << 20
    with cuda.Stream() as stream, cuda.DeviceBuffer(n) as a, cuda.DeviceBuffer(n) as b, cuda.PinnedBuffer(n) as host:
        host.view(np.uint8, (n,))[...] = 7
        cuda.copy_htod_async(a.ptr, host.ptr, n, stream)
        start, end = cuda.Event(), cuda.Event()
        start.record(stream)
        graph = cuda.CudaGraph(stream, lambda: cuda.copy_dtod_async(b.ptr, a.ptr, n, stream))
        graph.launch(stream)
        end.record(stream)
        assert cuda.elapsed_ms(start, end) >= 0.0
        host.view(np.uint8, (n,))[...] = 0
        cuda.copy_dtoh_async(host.ptr, b.ptr, n, stream)
        stream.synchronize()
        assert (host.view(np.uint8, (n,)) == 7).all()
        graph.close()
        start.close()
        end.close()
    with pytest.raises(CudaError, match="cudaErrorMemoryAllocation"):
        cuda.DeviceBuffer(1 << 50)
    stream.close()  # idempotent
    with pytest.raises(ClosedError):
        stream.synchronize()


def test_upload_from_pinned_array_skips_staging():
    data = np.random.default_rng(5).standard_normal((512, 1024)).astype(np.float32)  # 2 MB: above the pinned check
    slot = IoSlot(device_id=0)
    try:
        with cuda.PinnedBuffer(data.nbytes) as user:
            view = user.view(data.dtype, data.shape)
            view[...] = data
            assert cuda.is_pinned(view.ctypes.data) and not cuda.is_pinned(data.ctypes.data)
            ptr = slot.upload("x", view)
            slot.download("x", ptr, data.shape, data.dtype)
            np.testing.assert_array_equal(slot.collect()["x"], data)
            assert slot.host.allocations == 1  # only the output's pinned buffer: no input staging
    finally:
        slot.close()


def test_slot_pool_close_waits_for_calls_in_flight_and_refuses_later_ones():
    import threading

    from trtkit.backends._device_io import SlotPool

    pool = SlotPool([IoSlot(device_id=0)])
    slot = pool.take()
    closed = threading.Event()
    closer = threading.Thread(target=lambda: (pool.close(), closed.set()))
    closer.start()
    assert not closed.wait(0.3)  # a call holds the only slot: close() waits for it
    x = np.arange(1000, dtype=np.float32)
    ptr = slot.upload("x", x)
    slot.download("x", ptr, x.shape, x.dtype)
    np.testing.assert_array_equal(slot.collect()["x"], x)  # still usable until given back
    pool.give(slot)
    closer.join(5)
    assert closed.is_set()
    with pytest.raises(ClosedError):
        pool.take()
