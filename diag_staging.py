import time, numpy as np, os, sys
sys.path.insert(0, "src")
from trtkit.backends import _device_io as d, cuda
x = np.random.rand(32, 3, 320, 320).astype(np.float32)
nb = x.nbytes
pinned = cuda.PinnedBuffer(nb); dst = pinned.view(x.dtype, x.shape)
dev = cuda.DeviceBuffer(nb); s = cuda.Stream()
def t(f, n=30):
    f(); t0 = time.perf_counter()
    for _ in range(n): f()
    ms = (time.perf_counter() - t0) / n * 1e3
    return f"{ms:.2f} ms {nb / ms / 1e6:.1f} GB/s"
print("bytes", nb, "cpus", os.cpu_count())
print("np.copyto 1 thread       ", t(lambda: np.copyto(dst, x)))
for k in (2, 4, 8, 12, 16):
    d._COPY_THREADS = k; d._copy_pool = None
    print(f"stage_copy {k:2d} threads      ", t(lambda: d.stage_copy(dst, x)))
d._COPY_THREADS = 8; d._copy_pool = None
def pageable():
    cuda.copy_htod_async(dev.ptr, x.ctypes.data, nb, s); s.synchronize()
def pinned_dma():
    cuda.copy_htod_async(dev.ptr, pinned.ptr, nb, s); s.synchronize()
print("pageable H2D (driver)    ", t(pageable))
print("pinned H2D               ", t(pinned_dma))
slot = d.IoSlot(device_id=0)
def up():
    slot.upload("x", x); slot.stream.synchronize()
print("IoSlot.upload (chunked)  ", t(up))
y = np.random.rand(*x.shape).astype(np.float32)
print("fresh np.empty + copy    ", t(lambda: np.copyto(np.empty_like(x), x)))
print("is_pinned(x)", cuda.is_pinned(x.ctypes.data), "is_pinned(dst)", cuda.is_pinned(dst.ctypes.data))
def stage_then_dma():
    d.stage_copy(dst, x); cuda.copy_htod_async(dev.ptr, pinned.ptr, nb, s); s.synchronize()
print("stage all then DMA       ", t(stage_then_dma))
flat_src = x.reshape(-1); flat_dst = dst.reshape(-1)
def chunked(k):
    step = -(-x.size // k)
    for a in range(0, x.size, step):
        b = min(a + step, x.size)
        d.stage_copy(flat_dst[a:b], flat_src[a:b])
        cuda.copy_htod_async(dev.ptr + a * 4, pinned.ptr + a * 4, (b - a) * 4, s)
    s.synchronize()
for k in (2, 4, 8):
    print(f"chunked {k}                ", t(lambda: chunked(k)))
def up2():
    slot.upload("x", x)
print("IoSlot.upload no sync    ", t(up2)); slot.stream.synchronize()
import cProfile, pstats
pr = cProfile.Profile(); pr.enable(); [up() for _ in range(10)]; pr.disable()
pstats.Stats(pr).sort_stats("cumtime").print_stats(12)
