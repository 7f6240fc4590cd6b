"""The buffer manager both GPU backends share (TensorRT and ONNX Runtime's CUDA EP).

An :class:`IoSlot` is everything one in-flight inference needs: a stream,
grow-only device and pinned buffers keyed by tensor name, and timing events.
numpy inputs are copied into pinned staging memory (several threads for big
arrays: one core cannot feed PCIe/NVLink), then copied to the device
asynchronously; device arrays (torch/cupy, ``__cuda_array_interface__``) are
used in place. Results are **copies**: numpy outputs are the caller's own ``submit(into=)``
arrays, or arrays of a :class:`PinnedArrayPool` (page-locked, so the GPU writes them directly;
an array is reused only once nothing refers to it any more), or new arrays; ``outputs_on_device``
outputs are new :class:`~trtkit.backends.cuda.DeviceArray`s. Nothing a caller holds is overwritten by the next call.

:class:`PipelinedBackend` runs ``submit``/``infer_many`` so the staging and upload
of batch k+1 overlap the compute of batch k. Both GPU backends set ``_staged = True``
and get a :class:`_Pipeline`: an upload thread staging into free slots ahead, one
compute thread enqueueing the batches in order (ONNX Runtime: on its one session;
TensorRT: on its execution contexts, each with its own stream), and a finish thread
returning the results. Per-slot "upload, then run" workers (the fallback when
``_staged`` is off) fall into lockstep: their runs end together, then they all
upload while the GPU idles (TensorRT 8.5 on an H200: 0.58 of compute-only at bs32).
"""

from __future__ import annotations

import math
import mmap
import os
import queue
import sys
import threading
import time
import weakref
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import Any, Callable, Generic, Iterable, Iterator, Mapping, Protocol, TypeVar

import numpy as np

from . import cuda
from ._threads import FlaggedThread, wait_exits
from ..errors import ClosedError, CudaError, ShapeError, TrtkitError
from .base import Feeds, StageTimes

__all__ = ["IoSlot", "SlotPool", "PinnedArrayPool", "PipelinedBackend", "StageTimer", "is_device_array", "stage_copy", "stack_into",
           "split_batch", "concat_outputs"]

_PARALLEL_COPY_BYTES = 8 << 20  # below this one thread copies faster than four can be woken
# Half the cores, at most 8: on the 16-core H200 host 8 threads stage 38-44 GB/s against 47-52 with 16, and
# infer_many's compute thread (ORT launching kernels) must not lose its core to the upload stage's copies.
_COPY_THREADS = max(2, min(8, (os.cpu_count() or 2) // 2))
_PINNED_CHECK_BYTES = 1 << 20  # below this, staging costs less than asking CUDA whether the array is pinned
_PAGE = mmap.PAGESIZE  # (64 KiB on some aarch64 kernels: a registration must not share a page with other memory)
_copy_pool: ThreadPoolExecutor | None = None
_copy_pool_lock = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _copy_pool
    with _copy_pool_lock:
        if _copy_pool is None:
            _copy_pool = ThreadPoolExecutor(max_workers=_COPY_THREADS, thread_name_prefix="trtkit-stage")
        return _copy_pool


def stage_copy(dst: np.ndarray, src: np.ndarray) -> None:
    """Copy ``src`` into ``dst`` (C-contiguous, same size), in parallel chunks for large arrays.

    numpy releases the GIL while copying, so chunks on several threads scale
    with memory bandwidth; this is what lets pinned staging beat pageable copies.
    Small arrays take one direct ``copyto`` (no thread hand-off: that costs more
    than the copy). Every chunk has finished when this returns, also on error.
    """
    if src.nbytes < _PARALLEL_COPY_BYTES:
        np.copyto(dst.reshape(src.shape), src, casting="no")
        return
    flat_dst, flat_src = dst.reshape(-1), np.ascontiguousarray(src).reshape(-1)
    if flat_dst.dtype != flat_src.dtype:
        raise TypeError(f"stage_copy copies {flat_src.dtype} into {flat_dst.dtype}: the dtypes must match (no casting)")
    if flat_dst.size != flat_src.size:
        raise ValueError(f"stage_copy copies {flat_src.size} elements into {flat_dst.size}: the sizes must match")
    step = -(-flat_src.size // _COPY_THREADS)
    pool = _pool()
    jobs = [pool.submit(np.copyto, flat_dst[a : a + step], flat_src[a : a + step]) for a in range(0, flat_src.size, step)]
    wait(jobs)  # all of them, even when one failed: none may still write into dst after we return
    for job in jobs:
        job.result()


def stack_into(out: np.ndarray, parts: list[np.ndarray]) -> None:
    """``np.concatenate(parts, axis=0, out=out)``, the parts copied on the staging threads when the batch is big.

    A streaming batch of 32 letterboxed 640x640 images is 157 MB of float32; one thread copies it in
    15-25 ms, which alone would cap a pipeline near 2,000 images/s, so the parts go to the copy pool.
    """
    if out.nbytes < _PARALLEL_COPY_BYTES or len(parts) < 2:
        np.concatenate(parts, axis=0, out=out)
        return
    rows = sum(part.shape[0] for part in parts)
    if rows != out.shape[0]:  # before any copy starts: none may still write into out after we raise
        raise ValueError(f"stack_into: the parts hold {rows} rows, the output {out.shape[0]}")
    jobs, row = [], 0
    for part in parts:
        jobs.append(_pool().submit(np.copyto, out[row : row + part.shape[0]], part, casting="no"))
        row += part.shape[0]
    wait(jobs)  # all of them, even when one failed: none may still write into out after we return
    for job in jobs:
        job.result()


class _LockedArray:
    """One page-locked host array of a :class:`PinnedArrayPool`: numpy-owned memory, page-aligned and
    registered with CUDA, so it stays an ordinary numpy array after ``unlock()``."""

    def __init__(self, nbytes: int, *, device_id: int, register: Callable[..., Any]) -> None:
        size = -(-nbytes // _PAGE) * _PAGE
        # numpy owns the memory: every array made from it (and every view a caller makes of those)
        # has ``owner`` as its base, so ``owner``'s reference count says whether anyone still holds one.
        self.owner = np.empty(size + _PAGE, np.uint8)
        start = -self.owner.ctypes.data % _PAGE  # whole pages: a registration shares no page with other memory
        self.data = self.owner[start : start + size]
        self.nbytes = size
        lock = register(self.data.ctypes.data, size, device_id=device_id)
        # Unregistered when ``owner`` dies (numpy clears weak references before it frees the memory), whoever
        # held it last, or at ``unlock()``; not at interpreter exit, when CUDA may already be gone.
        self._unlock = weakref.finalize(self.owner, lock.close)
        self._unlock.atexit = False
        self._unheld = sys.getrefcount(self.owner)  # ours only: the pool's entry and self.data

    def held(self) -> bool:
        """Whether an array made from this memory is still referenced outside the pool."""
        return sys.getrefcount(self.owner) != self._unheld

    def array(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        return self.data[: math.prod(shape) * dtype.itemsize].view(dtype).reshape(shape)

    def unlock(self) -> None:
        self._unlock()  # (once: a finalizer runs at most once)


class PinnedArrayPool:
    """Page-locked numpy arrays for a backend's outputs, each reused once nothing refers to it.

    Without it every numpy output is a new pageable array: the GPU writes into pinned staging, and a
    host thread copies that into the new array, touching its pages for the first time (a batch of
    YOLOv8n outputs at 320 is 23 MB; at 640, 90 MB). With it the GPU writes straight into an array
    that is returned as the result. ``take`` gives an array only when no result, and no view of one,
    is still alive (reference counts, as a caching host allocator would use events): nothing a caller
    holds is ever overwritten. A caller that keeps every result (``list(infer_many(...))``) makes the
    pool grow to ``per_name`` arrays per output, then new arrays come as before.

    ``close()`` unregisters every array; those a caller still holds stay valid, as pageable memory.
    """

    def __init__(self, *, device_id: int, per_name: int, max_bytes: int | None = None,
                 register: Callable[..., Any] | None = None) -> None:
        self._device_id = device_id
        self._per_name = per_name
        self._max_bytes = _pinned_budget() if max_bytes is None else max_bytes
        # (CUDA's registration by default; the CPU tests pass a stand-in that locks nothing.)
        self._register = register or cuda.HostRegistration
        self._arrays: dict[str, list[_LockedArray]] = {}
        self._bytes = 0
        self._lock = threading.Lock()
        self._closed = False

    @property
    def nbytes(self) -> int:
        """Bytes of page-locked output memory the pool holds now."""
        return self._bytes

    @property
    def per_name(self) -> int:
        """How many arrays per output the pool makes at most."""
        return self._per_name

    def take(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray | None:
        """A page-locked array for output ``name`` that nobody holds, or None (then stage as usual)."""
        nbytes = math.prod(shape) * dtype.itemsize
        with self._lock:
            if self._closed or not nbytes:
                return None
            entries = self._arrays.setdefault(name, [])
            for entry in entries:
                if entry.nbytes >= nbytes and not entry.held():
                    return entry.array(shape, dtype)
            if len(entries) >= self._per_name:  # make room: an unheld array too small for this output goes
                small = next((e for e in entries if not e.held()), None)
                if small is None:
                    return None
                entries.remove(small)
                self._bytes -= small.nbytes
                small.unlock()
            size = -(-nbytes // _PAGE) * _PAGE
            if self._bytes + size > self._max_bytes:
                return None
            try:
                entry = _LockedArray(nbytes, device_id=self._device_id, register=self._register)
            except CudaError:  # out of page-locked memory, or a platform without registration:
                self._closed = True  # outputs are staged into new arrays from now on, as without the pool
                return None
            entries.append(entry)
            self._bytes += entry.nbytes
            return entry.array(shape, dtype)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            entries = [e for group in self._arrays.values() for e in group]
            self._arrays.clear()
            self._bytes = 0
        for entry in entries:
            entry.unlock()


def _pinned_budget() -> int:
    """Page-locked output memory per backend: 2 GiB, or an eighth of the host's memory if less."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):  # not every platform reports it
        return 2 << 30
    return int(min(2 << 30, total // 8))


def is_device_array(value: Any) -> bool:
    return hasattr(value, "__cuda_array_interface__")


class StageTimer:
    """CUDA events at the stage boundaries of one inference (see StageTimes). Reused per slot."""

    def __init__(self) -> None:
        self.events = tuple(cuda.Event() for _ in range(4))
        self.t0 = 0.0
        self.enqueue_ms = 0.0

    def start(self) -> "StageTimer":
        self.t0 = time.perf_counter()
        self.enqueue_ms = 0.0
        return self

    def mark(self, index: int, stream: cuda.Stream) -> None:
        self.events[index].record(stream)

    def result(self, *, transfers: bool) -> StageTimes:
        e = self.events
        compute = cuda.elapsed_ms(e[1], e[2])
        if not transfers:
            return StageTimes(0.0, compute, 0.0, self.enqueue_ms)
        return StageTimes(cuda.elapsed_ms(e[0], e[1]), compute, cuda.elapsed_ms(e[2], e[3]), self.enqueue_ms)

    def close(self) -> None:
        for ev in self.events:
            ev.close()


class IoSlot:
    """Buffers + stream for one in-flight inference. ``extra`` holds the backend's per-slot objects."""

    def __init__(self, *, device_id: int, outputs: PinnedArrayPool | None = None) -> None:
        self.device_id = device_id
        self.stream = cuda.Stream(device_id=device_id)
        self.device = cuda.BufferPool("device")
        self.host = cuda.BufferPool("pinned")
        self.extra: dict[str, Any] = {}
        self._outputs = outputs  # the backend's page-locked output arrays (shared by its slots)
        self._pending: list[tuple[str, tuple[int, ...], np.dtype]] = []
        self._timer: StageTimer | None = None
        self._into: Mapping[str, np.ndarray] = {}  # the current call's destinations (``submit(into=)``)
        self._direct: dict[str, np.ndarray] = {}  # outputs this call copies straight into their destination

    def timer(self) -> StageTimer:
        """This slot's stage timer (made once: creating CUDA events per call costs host time)."""
        if self._timer is None:
            self._timer = StageTimer()
        return self._timer.start()

    def reset(self, *, into: Mapping[str, np.ndarray] | None = None) -> None:
        """Start a call: forget downloads queued by one that failed before ``collect()``, and take
        this call's output destinations (see :meth:`PipelinedBackend.submit`)."""
        self._pending.clear()
        self._direct.clear()
        self._into = into or {}

    def _destination(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray | None:
        """The caller's array for output ``name`` when it fits it exactly (shape, dtype, C order)."""
        dest = self._into.get(name)
        if dest is None or dest.shape != shape or dest.dtype != dtype or not dest.flags.c_contiguous or not dest.flags.writeable:
            return None
        return dest

    def upload(self, name: str, value: Any) -> int:
        """Device pointer holding input ``name``: the caller's own for device arrays, else staged + copied."""
        if is_device_array(value):
            ptr, producer = cuda.device_pointer(value)
            if producer is not None:
                self.stream.wait_foreign(producer)
            return ptr
        arr = value if isinstance(value, np.ndarray) else np.asarray(value)
        nbytes = arr.nbytes
        dev = self.device.get("in/" + name, nbytes)
        if not nbytes:
            return dev.ptr
        if nbytes >= _PINNED_CHECK_BYTES and arr.flags.c_contiguous and cuda.is_pinned(arr.ctypes.data):
            cuda.copy_htod_async(dev.ptr, arr.ctypes.data, nbytes, self.stream)  # already page-locked: no staging
        else:
            self._stage_and_copy(name, arr, dev.ptr)
        return dev.ptr

    def _stage_and_copy(self, name: str, arr: np.ndarray, dst: int) -> None:
        """numpy -> pinned (all of it) -> device, in one DMA.

        Not in chunks with the DMA of one overlapping the staging of the next: measured on the H200 host
        (39 MB, 8 staging threads), staging slows to a third while a DMA reads the pinned buffer, and
        4 chunks took 3.1 ms against 2.1 ms for staging everything, then one DMA (1.0 + 0.7 ms)."""
        pinned = self.host.get("in/" + name, arr.nbytes)
        stage_copy(pinned.view(arr.dtype, arr.shape), arr)
        cuda.copy_htod_async(dst, pinned.ptr, arr.nbytes, self.stream)

    def output_buffer(self, name: str, nbytes: int) -> int:
        return self.device.get("out/" + name, nbytes).ptr

    def download(self, name: str, src_ptr: int, shape: tuple[int, ...], dtype: np.dtype, *, stream: cuda.Stream | None = None) -> None:
        """Queue the copy of the valid region of an output into page-locked memory: the call's ``into`` array
        or a pool array (straight), else pinned staging; ``collect()`` returns it. ``stream``: another
        stream to copy on (the caller makes this slot's stream wait for it)."""
        nbytes = math.prod(shape) * dtype.itemsize
        dest = self._destination(name, shape, dtype)
        direct = None  # a page-locked array the GPU writes straight into
        if nbytes >= _PINNED_CHECK_BYTES:
            if dest is None:
                direct = self._outputs.take(name, shape, dtype) if self._outputs is not None else None
            elif cuda.is_pinned(dest.ctypes.data) and cuda.is_pinned(dest.ctypes.data + nbytes - 1):
                direct = dest  # (an array may run past a locked range: both ends are checked)
        if direct is not None:
            cuda.copy_dtoh_async(direct.ctypes.data, src_ptr, nbytes, stream or self.stream)
            self._direct[name] = direct
        elif nbytes:
            cuda.copy_dtoh_async(self.host.get("out/" + name, nbytes).ptr, src_ptr, nbytes, stream or self.stream)
        self._pending.append((name, shape, dtype))

    def collect(self) -> dict[str, np.ndarray]:
        """Wait for the stream and return the downloaded outputs: in the call's destination arrays
        where they fit, else in new arrays."""
        self.stream.synchronize()
        out: dict[str, np.ndarray] = {}
        try:
            for name, shape, dtype in self._pending:
                if name in self._direct:
                    out[name] = self._direct[name]  # the DMA wrote it
                    continue
                dest = self._destination(name, shape, dtype)
                view = self.host.get("out/" + name, math.prod(shape) * dtype.itemsize).view(dtype, shape)
                if dest is None and view.nbytes < _PARALLEL_COPY_BYTES:
                    out[name] = view.copy()
                    continue
                if dest is None:
                    dest = np.empty(shape, dtype)
                stage_copy(dest, view)
                out[name] = dest
        finally:
            self._pending.clear()
            self._direct.clear()
            self._into = {}
        return out

    def to_device_array(self, src_ptr: int, shape: tuple[int, ...], dtype: np.dtype, *, stream: cuda.Stream | None = None) -> cuda.DeviceArray:
        """A new DeviceArray holding a copy of an output (device to device, on this stream or ``stream``)."""
        nbytes = math.prod(shape) * dtype.itemsize
        buf = cuda.DeviceBuffer(nbytes)
        if nbytes:
            cuda.copy_dtod_async(buf.ptr, src_ptr, nbytes, stream or self.stream)
        return cuda.DeviceArray(buf, shape, dtype)

    def close(self) -> None:
        for value in self.extra.values():  # events etc. a backend keeps per slot
            if isinstance(value, (cuda.Event, cuda.DeviceBuffer, cuda.PinnedBuffer)):
                value.close()
        self.extra.clear()
        if self._timer is not None:
            self._timer.close()
        self.device.close()
        self.host.close()
        self.stream.close()


class _Closable(Protocol):
    def close(self) -> None: ...


_T = TypeVar("_T", bound=_Closable)


class SlotPool(Generic[_T]):
    """A thread-safe pool of IoSlots (or other per-call resources with ``close()``, e.g. TensorRT contexts):
    ``take()``/``give()`` (or ``with pool.acquire() as slot``).

    ``drain()`` waits until every slot is back (no call in flight) and keeps them:
    a call that races with close() then gets ClosedError instead of closed buffers.
    """

    def __init__(self, slots: list[_T]) -> None:
        self.slots = slots
        self._free: queue.SimpleQueue[_T] = queue.SimpleQueue()
        self._drained = False
        for slot in slots:
            self._free.put(slot)

    def take(self) -> _T:
        try:
            return self._free.get_nowait()  # the common case: a slot is free, no waiting machinery
        except queue.Empty:
            pass
        while True:
            if self._drained:
                raise ClosedError("the backend was closed while this call waited for a free slot; create a new one")
            try:
                return self._free.get(timeout=0.1)
            except queue.Empty:
                continue

    def give(self, slot: _T) -> None:
        self._free.put(slot)

    @contextmanager
    def acquire(self) -> Iterator[_T]:
        slot = self.take()
        try:
            yield slot
        finally:
            self.give(slot)

    def drain(self) -> None:
        if self._drained:
            return
        self._drained = True
        for _ in self.slots:
            self._free.get()

    def close(self) -> None:
        self.drain()
        for slot in self.slots:
            slot.close()


def settle(slot: IoSlot, exc: BaseException) -> BaseException:
    """After a failed call: wait for the copies it queued (a DMA into the caller's ``into`` arrays or the
    pool's) before the slot and those arrays are reused, and forget them. Returns the error to raise."""
    try:
        slot.stream.synchronize()
    except TrtkitError as sync_error:  # the GPU is in a failed state; the call's own error comes along
        sync_error.__context__ = exc
        exc = sync_error
    slot.reset()
    return exc


class _Job:
    """One submitted inference on its way through the pipeline's stages."""

    __slots__ = ("feeds", "into", "future")

    def __init__(self, feeds: Mapping[str, Any], into: Mapping[str, np.ndarray] | None) -> None:
        self.feeds = feeds
        self.into = into
        self.future: Future[dict[str, Any]] = Future()


_Staged = tuple[_Job, IoSlot, Any]


class _Pipeline:
    """Upload thread -> compute thread -> finish thread, each in submission order.

    The upload stage takes a free slot (the pool bounds how far it runs ahead),
    stages and copies the inputs and waits for the copy on the host; the single
    compute stage runs the batches one after another and queues the D2H; the
    finish stage waits for the D2H, copies the results out, completes the
    Future and hands the slot back. ``stop()`` lets every job already submitted
    finish (close() waits for calls in flight), then joins the threads.
    """

    def __init__(self, owner: "PipelinedBackend") -> None:
        self._owner = owner
        self._device = owner._gpu()
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._ready: queue.SimpleQueue[_Staged | None] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[_Staged | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._stopped = False
        self._threads = [
            FlaggedThread(target=loop, name=f"trtkit-{label}", daemon=True)
            for loop, label in ((self._upload_loop, "upload"), (self._compute_loop, "compute"), (self._finish_loop, "finish"))
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, feeds: Mapping[str, Any], into: Mapping[str, np.ndarray] | None) -> "Future[dict[str, Any]]":
        job = _Job(feeds, into)
        with self._lock:
            if self._stopped:
                raise ClosedError("the backend was closed while this call was submitted; create a new one")
            self._jobs.put(job)
        return job.future

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            self._jobs.put(None)  # after every job already queued: those still run to the end
        interrupt = wait_exits(self._threads)  # a Ctrl-C meanwhile is held until all three threads are done
        if interrupt is not None:
            raise interrupt

    def _fail(self, job: _Job, slot: IoSlot, exc: BaseException) -> None:
        """End a failed job: copies it queued before failing (e.g. a DMA into the caller's ``into``
        arrays) finish before its Future is done and its slot is reused."""
        exc = settle(slot, exc)
        self._owner._slots.give(slot)
        job.future.set_exception(exc)

    def _upload_loop(self) -> None:
        cuda.ensure_device(self._device)  # a new thread starts on GPU 0: launches and allocations go to the backend's GPU
        while (job := self._jobs.get()) is not None:
            if not job.future.set_running_or_notify_cancel():
                continue
            try:
                slot = self._owner._slots.take()
            except ClosedError as exc:
                job.future.set_exception(exc)
                continue
            try:
                slot.reset(into=job.into)
                staged = self._owner._upload_stage(slot, job.feeds)
            except BaseException as exc:  # the caller gets it from the Future
                self._fail(job, slot, exc)
                continue
            self._ready.put((job, slot, staged))
        self._ready.put(None)

    def _compute_loop(self) -> None:
        cuda.ensure_device(self._device)  # a new thread starts on GPU 0: launches and allocations go to the backend's GPU
        while (item := self._ready.get()) is not None:
            job, slot, staged = item
            try:
                finish = self._owner._compute_stage(slot, job.feeds, staged)
            except BaseException as exc:
                self._fail(job, slot, exc)
                continue
            self._done.put((job, slot, finish))
        self._done.put(None)

    def _finish_loop(self) -> None:
        cuda.ensure_device(self._device)  # a new thread starts on GPU 0: launches and allocations go to the backend's GPU
        while (item := self._done.get()) is not None:
            job, slot, finish = item
            try:
                result = finish()
            except BaseException as exc:
                self._fail(job, slot, exc)
                continue
            self._owner._slots.give(slot)  # first, so the upload stage can refill it at once
            job.future.set_result(result)


class PipelinedBackend:
    """``infer``/``submit``/``infer_many``/``timed_infer`` over a SlotPool; subclasses implement ``_run_on``.

    ``_run_on(slot, feeds, timer, transfers)`` enqueues one inference on the slot and returns its outputs.
    Subclasses with ``_staged = True`` also split it in two for ``submit``/``infer_many``:
    ``_upload_stage(slot, feeds)`` (inputs on the device when it returns) and
    ``_compute_stage(slot, feeds, staged)`` (runs, queues the D2H, returns a callable giving the outputs).
    """

    _slots: SlotPool[IoSlot]
    _out_arrays: PinnedArrayPool | None = None
    _staged = False
    _executor: ThreadPoolExecutor | None = None
    _pipeline: _Pipeline | None = None
    _io_closed = False
    _exec_lock = threading.Lock()

    def _upload_stage(self, slot: IoSlot, feeds: Mapping[str, Any]) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def _compute_stage(self, slot: IoSlot, feeds: Mapping[str, Any], staged: Any) -> Callable[[], dict[str, Any]]:
        raise NotImplementedError  # pragma: no cover

    def _prepare(self, feeds: Feeds) -> dict[str, Any]:  # pragma: no cover - overridden
        raise NotImplementedError

    def _output_pool(self, slots: int) -> PinnedArrayPool | None:
        """The page-locked output arrays the backend's ``slots`` IO slots share: enough for ``infer_many``'s
        default depth (2 per slot) plus the result the caller holds and the one being yielded."""
        config = self.config  # type: ignore[attr-defined]  # the backend's RuntimeConfig
        if config.outputs_on_device or not config.pinned_outputs:  # outputs stay on the GPU / the caller said no
            return None
        return PinnedArrayPool(device_id=self._gpu(), per_name=2 * slots + 3)

    def _gpu(self) -> int:
        """The GPU this backend runs on (``RuntimeConfig.device_id``): every thread it starts makes it current."""
        return int(self.config.device_id)  # type: ignore[attr-defined]  # the backend's RuntimeConfig

    def _pipelinable(self, feeds: Mapping[str, Any]) -> bool:
        """Whether the staged pipeline takes this call (else a worker thread runs ``_infer_prepared``)."""
        return True

    def _timed_upload(self, slot: IoSlot, feeds: Mapping[str, Any], timer: StageTimer | None, transfers: bool) -> dict[str, int]:
        """The direct path's uploads on the slot's stream, between stage marks 0 and 1 when timed."""
        if timer is not None:
            timer.mark(0, slot.stream)
        ptrs = {name: slot.upload(name, value) for name, value in feeds.items()}
        if timer is not None:
            if not transfers:  # trtexec --noDataTransfers: the compute mark starts after the inputs are there
                slot.stream.synchronize()
            timer.mark(1, slot.stream)
        return ptrs

    def _timed_finish(self, slot: IoSlot, timer: StageTimer | None, transfers: bool,
                      issue: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The direct path's end: ``issue()`` queues the output copies (none without transfers), stage mark 3,
        then the outputs."""
        if timer is not None and not transfers:  # outputs stay where they are
            timer.mark(3, slot.stream)
            timer.enqueue_ms = (time.perf_counter() - timer.t0) * 1e3
            slot.stream.synchronize()
            return {}
        result = issue()
        if timer is not None:
            timer.mark(3, slot.stream)
            timer.enqueue_ms = (time.perf_counter() - timer.t0) * 1e3
        return self._collect(slot, result)

    def _collect(self, slot: IoSlot, result: dict[str, Any]) -> dict[str, Any]:
        """Wait for the copies queued on the slot's stream; numpy outputs come back in new arrays or
        the call's ``into`` arrays."""
        if self.config.outputs_on_device:  # type: ignore[attr-defined]  # the backend's RuntimeConfig
            slot.stream.synchronize()
            slot.reset()  # (``into`` does not apply: the slot holds no reference to the caller's arrays)
            return result
        return slot.collect()

    def _run_on(self, slot: IoSlot, feeds: Mapping[str, Any], timer: StageTimer | None, transfers: bool) -> dict[str, Any]:
        raise NotImplementedError  # pragma: no cover

    def _run_slot(self, feeds: Mapping[str, Any], timer: bool, transfers: bool, into: Mapping[str, np.ndarray] | None = None) -> Any:
        """One inference on a free slot; with ``timer``, its StageTimes instead of its outputs."""
        slot = self._slots.take()
        try:
            slot.reset(into=into)
            if not timer:
                return self._run_on(slot, feeds, None, True)
            stages = slot.timer()
            self._run_on(slot, feeds, stages, transfers)
            return stages.result(transfers=transfers)  # before the slot (and its timer) is handed on
        except BaseException as exc:
            failure = settle(slot, exc)
            if failure is exc:
                raise
            raise failure from exc
        finally:
            self._slots.give(slot)

    def _infer_prepared(self, feeds: Mapping[str, Any], into: Mapping[str, np.ndarray] | None = None) -> dict[str, Any]:
        return self._run_slot(feeds, False, True, into)  # type: ignore[no-any-return]

    def infer(self, feeds: Feeds) -> dict[str, Any]:
        """Run once and wait; outputs in model order (numpy copies, or DeviceArrays with outputs_on_device)."""
        self._check_open()  # type: ignore[attr-defined]  # from BackendBase
        return self._infer_prepared(self._prepare(feeds))

    def submit(self, feeds: Feeds, *, into: Mapping[str, np.ndarray] | None = None) -> "Future[dict[str, Any]]":
        """Start an inference on a worker thread; the Future gives its outputs. Validation errors raise here.

        ``into``: arrays to receive numpy outputs, by name (the caller must not touch them until the
        Future is done). An output whose shape and dtype match its array (C-contiguous, writable) is
        written there and returned as that array -- straight from the GPU when the array is
        page-locked -- which saves a batch-sized allocation and copy per call; any other output comes
        back in a new array, as without ``into`` (e.g. a data-dependent shape, or an engine's batch
        above its profile max, which runs in chunks). Ignored with ``outputs_on_device``.
        """
        self._check_open()  # type: ignore[attr-defined]
        prepared = self._prepare(feeds)
        if self._staged and self._pipelinable(prepared):
            return self._stages().submit(prepared, into)
        return self._workers().submit(self._infer_prepared, prepared, into)

    def infer_many(self, batches: Iterable[Feeds], *, depth: int | None = None) -> Iterator[dict[str, Any]]:
        """Yield the outputs of each batch in order, keeping ``depth`` (default 2 per slot) in flight."""
        limit = depth or 2 * len(self._slots.slots)
        pending: deque[Future[dict[str, Any]]] = deque()
        for batch in batches:
            pending.append(self.submit(batch))
            if len(pending) >= limit:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    def timed_infer(self, feeds: Feeds, *, transfers: bool = True) -> StageTimes:
        """Run once and time H2D / compute / D2H with CUDA events; ``transfers=False`` keeps IO on the device."""
        self._check_open()  # type: ignore[attr-defined]
        return self._run_slot(self._prepare(feeds), True, transfers)  # type: ignore[no-any-return]

    def _stages(self) -> _Pipeline:
        with self._exec_lock:
            if self._io_closed:
                raise ClosedError("the backend was closed while this call was submitted; create a new one")
            if self._pipeline is None:
                self._pipeline = _Pipeline(self)
            return self._pipeline

    def _workers(self) -> ThreadPoolExecutor:
        with self._exec_lock:
            if self._io_closed:
                raise ClosedError("the backend was closed while this call was submitted; create a new one")
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=len(self._slots.slots), thread_name_prefix="trtkit-infer",
                                                    initializer=cuda.ensure_device, initargs=(self._gpu(),))
            return self._executor

    def _quiesce_io(self) -> None:
        """Wait for every call in flight and for all GPU work it queued on the slot streams.

        Runs first in close(): nothing may still be using a context, session,
        event or buffer when it is freed (see docs/runtime.md, "Closing").
        """
        with self._exec_lock:
            self._io_closed = True
            executor, self._executor = self._executor, None
            pipeline, self._pipeline = self._pipeline, None
        if executor is not None:
            executor.shutdown(wait=True)
        if pipeline is not None:
            pipeline.stop()
        self._slots.drain()
        for slot in self._slots.slots:
            slot.stream.synchronize()

    def _close_io(self) -> None:
        try:
            self._quiesce_io()
            self._slots.close()
        finally:
            if self._out_arrays is not None:
                self._out_arrays.close()


def split_batch(feeds: Mapping[str, Any], max_batch: int) -> list[dict[str, Any]]:
    """Split every input along axis 0 into chunks of at most ``max_batch`` (inputs must agree on the batch)."""
    sizes = {name: int(arr.shape[0]) for name, arr in feeds.items()}
    if len(set(sizes.values())) != 1:
        raise ShapeError(
            f"cannot split inputs into batches: their first dims differ ({sizes}); "
            "give every input the same batch size, or a batch that fits the engine's profile"
        )
    total = next(iter(sizes.values()))
    return [{n: a[i : i + max_batch] for n, a in feeds.items()} for i in range(0, total, max_batch)]


def concat_outputs(parts: list[dict[str, Any]], concat: Callable[[list[Any]], Any] | None = None) -> dict[str, Any]:
    """Concatenate chunked outputs along axis 0 (numpy by default)."""
    join = concat or (lambda xs: np.concatenate(xs, axis=0))
    return {name: join([p[name] for p in parts]) for name in parts[0]}
