"""CUDA plumbing for the GPU backends: owners for streams, events and memory.

Every resource is an object with ``close()`` and a ``with`` form (rule 6);
``close()`` is idempotent. Memory is allocated through the CUDA runtime of
cuda-python (``cuda.bindings.runtime``), imported lazily so ``import trtkit``
never touches CUDA. A failed CUDA call raises :class:`~trtkit.errors.CudaError`
naming the call and the ``cudaError`` name; no driver or no GPU raises
:class:`~trtkit.errors.BackendUnavailable`.

Why hand-written rather than cupy/torch: they are heavy optional deps, and the
runtime needs exactly raw pointers, pinned host memory and streams that it can
hand to TensorRT and ONNX Runtime.
"""

from __future__ import annotations

import ctypes
import math
import threading
from types import ModuleType
from typing import Any, TypeVar

import numpy as np

from .._optional import require
from ..errors import BackendUnavailable, ClosedError, CudaError, Spelling

__all__ = [
    "runtime",
    "check",
    "ensure_device",
    "mem_info",
    "is_pinned",
    "HostRegistration",
    "Stream",
    "Event",
    "PinnedBuffer",
    "DeviceBuffer",
    "BufferPool",
    "copy_htod_async",
    "copy_dtoh_async",
    "copy_dtod_async",
    "elapsed_ms",
    "DeviceArray",
    "CudaGraph",
    "device_pointer",
]

# cudaError names that mean "CUDA cannot be used here at all", not "a call went wrong".
_UNAVAILABLE = {
    "cudaErrorNoDevice",
    "cudaErrorInsufficientDriver",
    "cudaErrorInitializationError",
    "cudaErrorSystemDriverMismatch",
    "cudaErrorCompatNotSupportedOnDevice",
    "cudaErrorDevicesUnavailable",
    "cudaErrorStubLibrary",
}
_H2D, _D2H, _D2D = 1, 2, 3  # cudaMemcpyKind values (stable across CUDA versions)


_runtime: ModuleType | None = None


def runtime() -> ModuleType:
    """The ``cuda.bindings.runtime`` module, or BackendUnavailable with the install hint.

    Cached after the first import: every CUDA call goes through here, and an
    import lookup per call added microseconds to each inference.
    """
    global _runtime
    if _runtime is None:
        _runtime = require("cuda.bindings.runtime", purpose="GPU buffers and streams")
    return _runtime


def _error_name(err: Any) -> str:
    rt = runtime()
    _, name = rt.cudaGetErrorName(err)
    return name.decode() if isinstance(name, bytes) else str(name)


def _error_text(err: Any) -> str:
    rt = runtime()
    _, text = rt.cudaGetErrorString(err)
    return text.decode() if isinstance(text, bytes) else str(text)


def check(result: Any, what: str) -> Any:
    """Unpack a cuda-python result tuple ``(err, *values)``; raise on an error.

    Returns None, the single value, or a tuple of values.
    """
    values = result if isinstance(result, tuple) else (result,)
    err, rest = values[0], values[1:]
    if err:  # cudaSuccess is 0; enum members compare by value
        name = _error_name(err)
        text = _error_text(err)
        if name in _UNAVAILABLE:
            raise BackendUnavailable(
                f"CUDA is not usable here: {what} failed with {name} ({text}). "
                "Check that an NVIDIA GPU is present and its driver is installed and new enough "
                "(nvidia-smi), or run on the CPU with {cpu}",
                spellings={"cpu": Spelling(python="device='cpu' (backend='onnxruntime')", cli="--backend onnxruntime")},
            )
        raise CudaError(f"{what} failed with {name} ({text})")
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else rest


_device_lock = threading.Lock()
_checked_devices: set[int] = set()


def ensure_device(device_id: int = 0) -> None:
    """Make ``device_id`` current on this thread; BackendUnavailable when there is no such GPU."""
    rt = runtime()
    with _device_lock:
        if device_id not in _checked_devices:
            count = check(rt.cudaGetDeviceCount(), "cudaGetDeviceCount")
            if not 0 <= device_id < count:
                raise BackendUnavailable(
                    f"GPU {device_id} was requested but {count} CUDA device(s) are visible; "
                    f"pass device_id between 0 and {count - 1} (or check CUDA_VISIBLE_DEVICES)"
                )
            _checked_devices.add(device_id)
    check(rt.cudaSetDevice(device_id), f"cudaSetDevice({device_id})")


def compute_capability(device_id: int = 0) -> tuple[int, int]:
    """(major, minor) of a GPU, e.g. (9, 0) for Hopper."""
    rt = runtime()
    ensure_device(device_id)
    major = check(rt.cudaDeviceGetAttribute(rt.cudaDeviceAttr.cudaDevAttrComputeCapabilityMajor, device_id), "cudaDeviceGetAttribute")
    minor = check(rt.cudaDeviceGetAttribute(rt.cudaDeviceAttr.cudaDevAttrComputeCapabilityMinor, device_id), "cudaDeviceGetAttribute")
    return int(major), int(minor)


def is_pinned(ptr: int) -> bool:
    """True when host address ``ptr`` is page-locked (cudaHostAlloc/cudaHostRegister, torch pin_memory):
    such memory is copied to the device directly, without staging."""
    err, attrs = runtime().cudaPointerGetAttributes(ptr)
    return int(err) == 0 and attrs is not None and int(attrs.type) == 1  # cudaMemoryTypeHost


def mem_info() -> tuple[int, int]:
    """(free, total) bytes of device memory on the current GPU."""
    free, total = check(runtime().cudaMemGetInfo(), "cudaMemGetInfo")
    return int(free), int(total)


_O = TypeVar("_O", bound="_Owner")


class _Owner:
    """Idempotent close + ``with``; subclasses free their handle in ``_free``."""

    _closed = False
    kind = "CUDA resource"

    def __enter__(self: _O) -> _O:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._free()

    def _free(self) -> None:  # pragma: no cover - overridden
        pass

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"{self.kind} was used after close(); create a new one")

    def __del__(self) -> None:  # safety net only; close() is the contract
        try:
            self.close()
        except (CudaError, BackendUnavailable, AttributeError, TypeError, ImportError):
            # At interpreter shutdown cuda-python may be half torn down (AttributeError/TypeError/
            # ImportError), or the context already destroyed (CudaError); nothing useful can be done.
            return


class Stream(_Owner):
    """A non-blocking CUDA stream. ``handle`` is the integer cudaStream_t TensorRT/ORT take."""

    kind = "CUDA stream"
    _foreign: Any = None  # event for wait_foreign, made on first use

    def __init__(self, *, device_id: int = 0) -> None:
        ensure_device(device_id)
        rt = runtime()
        self._stream = check(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking), "cudaStreamCreateWithFlags")
        self.handle = int(self._stream)

    def synchronize(self) -> None:
        self._check_open()
        check(runtime().cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")

    def wait(self, event: "Event") -> None:
        """Make later work on this stream wait for ``event`` (no host blocking)."""
        self._check_open()
        check(runtime().cudaStreamWaitEvent(self._stream, event.raw, 0), "cudaStreamWaitEvent")

    def wait_foreign(self, handle: int) -> None:
        """Wait for the work queued so far on another library's stream (torch, cupy), by handle."""
        self._check_open()
        rt = runtime()
        if self._foreign is None:  # one event per stream, reused: re-recording an event is allowed
            self._foreign = check(rt.cudaEventCreateWithFlags(rt.cudaEventDisableTiming), "cudaEventCreateWithFlags")
        check(rt.cudaEventRecord(self._foreign, handle), "cudaEventRecord(foreign stream)")
        check(rt.cudaStreamWaitEvent(self._stream, self._foreign, 0), "cudaStreamWaitEvent")

    def _free(self) -> None:
        rt = runtime()
        if self._foreign is not None:
            check(rt.cudaEventDestroy(self._foreign), "cudaEventDestroy")
            self._foreign = None
        check(rt.cudaStreamDestroy(self._stream), "cudaStreamDestroy")


class Event(_Owner):
    """A CUDA event; timing events by default (``elapsed_ms``)."""

    kind = "CUDA event"

    def __init__(self, *, timing: bool = True) -> None:
        rt = runtime()
        flags = rt.cudaEventDefault if timing else rt.cudaEventDisableTiming
        self.raw = check(rt.cudaEventCreateWithFlags(flags), "cudaEventCreateWithFlags")

    def record(self, stream: Stream) -> None:
        self._check_open()
        check(runtime().cudaEventRecord(self.raw, stream.handle), "cudaEventRecord")

    def synchronize(self) -> None:
        self._check_open()
        check(runtime().cudaEventSynchronize(self.raw), "cudaEventSynchronize")

    def _free(self) -> None:
        check(runtime().cudaEventDestroy(self.raw), "cudaEventDestroy")


def elapsed_ms(start: Event, end: Event) -> float:
    """Milliseconds between two recorded events (waits for ``end``)."""
    end.synchronize()
    return float(check(runtime().cudaEventElapsedTime(start.raw, end.raw), "cudaEventElapsedTime"))


class PinnedBuffer(_Owner):
    """Page-locked host memory: the only host memory CUDA copies asynchronously at full speed."""

    kind = "pinned host buffer"

    def __init__(self, nbytes: int) -> None:
        self.nbytes = max(int(nbytes), 1)
        rt = runtime()
        self.ptr = int(check(rt.cudaHostAlloc(self.nbytes, rt.cudaHostAllocDefault), f"cudaHostAlloc({self.nbytes} bytes)"))
        # One numpy array over the whole buffer, made once: view() only slices it (no ctypes per call).
        raw = (ctypes.c_uint8 * self.nbytes).from_address(self.ptr)
        self._bytes: np.ndarray = np.frombuffer(raw, dtype=np.uint8)  # type: ignore[call-overload]

    def view(self, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
        """A numpy array over the first ``prod(shape)`` elements (a view: valid until close())."""
        self._check_open()
        dt = np.dtype(dtype)
        nbytes = math.prod(shape) * dt.itemsize
        if nbytes > self.nbytes:
            raise CudaError(f"pinned buffer of {self.nbytes} bytes cannot hold {dt} {list(shape)}; allocate a larger one")
        return self._bytes[:nbytes].view(dt).reshape(shape)

    def _free(self) -> None:
        self._bytes = np.empty(0, np.uint8)  # drop our view before the memory goes
        check(runtime().cudaFreeHost(self.ptr), "cudaFreeHost")


class HostRegistration(_Owner):
    """Page-locks existing host memory (``cudaHostRegister``), e.g. a shared-memory block that
    worker processes write into, so the device copies from it directly, without staging."""

    kind = "page-locked host registration"

    def __init__(self, ptr: int, nbytes: int, *, device_id: int = 0) -> None:
        self.ptr, self.nbytes = int(ptr), int(nbytes)
        rt = runtime()
        # Registered on ``device_id`` (the backend's GPU), then the thread's current device is restored: a thread
        # that never chose a GPU would otherwise create a context on GPU 0 just to register.
        previous = int(check(rt.cudaGetDevice(), "cudaGetDevice"))
        ensure_device(device_id)
        try:
            check(rt.cudaHostRegister(self.ptr, self.nbytes, rt.cudaHostRegisterDefault), f"cudaHostRegister({self.nbytes} bytes)")
        finally:
            check(rt.cudaSetDevice(previous), f"cudaSetDevice({previous})")

    def _free(self) -> None:
        check(runtime().cudaHostUnregister(self.ptr), "cudaHostUnregister")


class DeviceBuffer(_Owner):
    """Device memory from cudaMalloc."""

    kind = "device buffer"

    def __init__(self, nbytes: int) -> None:
        self.nbytes = max(int(nbytes), 1)
        self.ptr = int(check(runtime().cudaMalloc(self.nbytes), f"cudaMalloc({self.nbytes} bytes)"))

    def _free(self) -> None:
        check(runtime().cudaFree(self.ptr), "cudaFree")


class BufferPool(_Owner):
    """Grow-only buffers keyed by tensor name (rule 6).

    ``get(name, nbytes)`` returns the buffer for ``name``, reallocating only
    when it is too small, so a steady stream of calls allocates nothing.
    ``kind`` is ``"device"`` or ``"pinned"``.
    """

    def __init__(self, kind: str) -> None:
        if kind not in ("device", "pinned"):
            raise ValueError(f"BufferPool kind must be 'device' or 'pinned', got {kind!r}")
        self.kind = f"{kind} buffer pool"
        self._factory = DeviceBuffer if kind == "device" else PinnedBuffer
        self._buffers: dict[str, DeviceBuffer | PinnedBuffer] = {}
        self.allocations = 0  # how many times memory was (re)allocated: tests check growth-only

    def get(self, name: str, nbytes: int) -> Any:
        self._check_open()
        buf = self._buffers.get(name)
        if buf is None or buf.nbytes < nbytes:
            if buf is not None:
                buf.close()
            buf = self._factory(nbytes)
            self._buffers[name] = buf
            self.allocations += 1
        return buf

    def nbytes(self) -> int:
        return sum(b.nbytes for b in self._buffers.values())

    def size_of(self, name: str) -> int:
        """Bytes held for ``name`` (0 when none)."""
        buf = self._buffers.get(name)
        return 0 if buf is None else int(buf.nbytes)

    def _free(self) -> None:
        for buf in self._buffers.values():
            buf.close()
        self._buffers.clear()


def _memcpy_async(dst_ptr: int, src_ptr: int, nbytes: int, kind: int, stream: Stream, label: str) -> None:
    # The message is built only on failure: this runs several times per inference.
    err = runtime().cudaMemcpyAsync(dst_ptr, src_ptr, nbytes, kind, stream.handle)[0]
    if err:
        check((err,), f"cudaMemcpyAsync({label}, {nbytes} bytes)")


def copy_htod_async(dst_ptr: int, src_ptr: int, nbytes: int, stream: Stream) -> None:
    _memcpy_async(dst_ptr, src_ptr, nbytes, _H2D, stream, "H2D")


def copy_dtoh_async(dst_ptr: int, src_ptr: int, nbytes: int, stream: Stream) -> None:
    _memcpy_async(dst_ptr, src_ptr, nbytes, _D2H, stream, "D2H")


def copy_dtod_async(dst_ptr: int, src_ptr: int, nbytes: int, stream: Stream) -> None:
    _memcpy_async(dst_ptr, src_ptr, nbytes, _D2D, stream, "D2D")


class DeviceArray(_Owner):
    """A device tensor trtkit returns (``outputs_on_device``): owns its memory, exposes
    ``__cuda_array_interface__`` so ``torch.as_tensor(x, device="cuda")`` and
    ``cupy.asarray(x)`` wrap it without a copy. Keep it alive while they use it.
    """

    kind = "device array"

    def __init__(self, buffer: DeviceBuffer, shape: tuple[int, ...], dtype: Any) -> None:
        self.buffer = buffer
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)

    @property
    def ptr(self) -> int:
        return self.buffer.ptr

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        self._check_open()
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (self.ptr, False), "version": 3, "strides": None, "stream": None}

    def numpy(self) -> np.ndarray:
        """Copy to a new host array."""
        self._check_open()
        out = np.empty(self.shape, self.dtype)
        if out.nbytes:
            check(runtime().cudaMemcpy(out.ctypes.data, self.ptr, out.nbytes, _D2H), "cudaMemcpy(D2H)")
        return out

    def _free(self) -> None:
        self.buffer.close()


def device_pointer(value: Any) -> tuple[int, int | None]:
    """(pointer, producer stream handle or None) of a contiguous device array (``__cuda_array_interface__``).

    DLPack-only arrays are not read here; torch and cupy arrays expose both protocols.
    """
    cai = value.__cuda_array_interface__
    strides = cai.get("strides")
    if strides is not None:
        itemsize = np.dtype(cai["typestr"]).itemsize
        want, acc = [], itemsize
        for dim in reversed(cai["shape"]):
            want.append(acc)
            acc *= int(dim)
        expected = tuple(reversed(want))
        if tuple(strides) != expected and int(np.prod(cai["shape"])) > 1:
            raise CudaError(
                f"device array with strides {tuple(strides)} is not C-contiguous; pass x.contiguous() (torch) "
                "or cupy.ascontiguousarray(x)"
            )
    stream = cai.get("stream")
    return int(cai["data"][0]), (int(stream) if stream else None)


class CudaGraph(_Owner):
    """A captured CUDA graph of ``body()`` on ``stream``, replayed with ``launch()``.

    Why: for static shapes, replaying TensorRT's kernels as one graph removes
    per-kernel launch overhead (trtexec --useCudaGraph).
    """

    kind = "CUDA graph"

    def __init__(self, stream: Stream, body: Any) -> None:
        rt = runtime()
        mode = rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        check(rt.cudaStreamBeginCapture(stream.handle, mode), "cudaStreamBeginCapture")
        try:
            body()
        finally:
            graph = check(rt.cudaStreamEndCapture(stream.handle), "cudaStreamEndCapture")
        try:
            self._exec = check(rt.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        finally:
            rt.cudaGraphDestroy(graph)

    def launch(self, stream: Stream) -> None:
        self._check_open()
        check(runtime().cudaGraphLaunch(self._exec, stream.handle), "cudaGraphLaunch")

    def _free(self) -> None:
        check(runtime().cudaGraphExecDestroy(self._exec), "cudaGraphExecDestroy")
