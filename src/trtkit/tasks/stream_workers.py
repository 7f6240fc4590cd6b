"""Worker processes for :mod:`trtkit.tasks.streaming`: decoding and preprocessing in other
processes, written straight into shared-memory batch buffers.

Why processes: cv2 and NumPy release the GIL inside each call, but the Python around them
(reading the file, the letterbox arithmetic, building the feeds dict, futures and queues per
image) holds it. ``py-spy record --gil`` counted about 1.2 ms of GIL-held Python per image for
YOLOv8n at 640, which caps one process near 800 images/s however many cores it has; a GPU
runs the model several times faster. In worker processes each has its own GIL.

Why shared memory: a preprocessed 640x640 float32 image is 4.9 MB; pickling it back to the
parent would cost more than preparing it. Each worker writes its rows into the batch buffer
itself (:class:`SharedBatchRing`), and for GPU backends the parent page-locks those buffers
(``cudaHostRegister``), so the backend uploads them without staging. The caller's arrays go
the same way (a per-slot arena); only small things cross the pipes: paths, each image's
``meta``, the results.

What runs in a worker is a copy of the task without its backend (:func:`host_copy`): the
backend holds GPU memory and sessions that cannot cross a process boundary, and preprocess
only reads the model's input specs; it travels with every chunk (:class:`StagesRef`, a few KB),
so a task changed between streams is never run with its old settings. Workers are started with
``spawn`` (a fork of a process holding a CUDA context and the ORT/TensorRT thread pools is not
safe), all at once, without the parent's main script (:func:`_main_not_imported`), once per
task and kept until ``task.close()``: spawning 16 workers costs about a second. When a stream
ends, every worker closes the blocks it opened, so an idle pool holds no memory.
"""

from __future__ import annotations

import copy
import hashlib
import io
import os
import pickle
import queue
import signal
import threading
import traceback
import types
from concurrent.futures import Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from multiprocessing import spawn as mp_spawn
from multiprocessing.shared_memory import SharedMemory
from typing import Any, Callable, Iterator, Mapping, Sequence, cast

import numpy as np

from ..errors import BackendUnavailable, TaskError, TrtkitError
from ..spec import TensorSpec

__all__ = ["POOLS", "ModelFacts", "SharedArray", "share_arrays", "host_copy", "probe_feeds", "shm_free_bytes", "SharedBatchRing", "StagesRef", "WorkerProcesses", "acquire_workers", "release_workers"]

POOLS = ("auto", "threads", "processes")

_FORGET_TIMEOUT_S = 5.0  # how long workers wait for each other to drop a finished stream's blocks
_SHM_DIR = "/dev/shm"  # where POSIX shared memory lives on Linux; its size is the limit (Docker: 64 MB unless --shm-size)


@dataclass(frozen=True)
class ModelFacts:
    """What a task's preprocess and postprocess may read of its backend, without the backend's
    sessions and GPU memory: the worker processes' copy of the task holds this instead."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    metadata: Mapping[str, str] = field(default_factory=dict)


def host_copy(task: Any) -> Any:
    """A picklable copy of ``task`` whose backend is replaced by its :class:`ModelFacts`."""
    clone = copy.copy(task)
    meta = getattr(task.backend, "metadata", None)
    clone.backend = ModelFacts(tuple(task.inputs), tuple(task.outputs), dict(meta) if isinstance(meta, Mapping) else {})
    clone._owns_backend = False
    clone.__dict__.pop("_stream_workers", None)
    return clone


def probe_feeds(prepare: Callable[[Any], tuple[Any, Mapping[str, np.ndarray], Any]]) -> dict[str, tuple[np.dtype, tuple[int, ...]]] | None:
    """The per-image feed (dtype, shape without the batch axis) of each input, when it does not depend
    on the image's size (letterboxed or resized to the model's size); None when it does (e.g. OCR
    recognition crops, preprocessing in the graph), since then a fixed batch buffer cannot hold it."""
    found = []
    for h, w in ((96, 128), (150, 110)):
        _, feeds, _ = prepare(np.zeros((h, w, 3), np.uint8))
        found.append({name: (np.asarray(a).dtype, tuple(np.asarray(a).shape)) for name, a in feeds.items()})
    if found[0] != found[1] or any(len(s) == 0 or s[0] != 1 for _, s in found[0].values()):
        return None
    return {name: (dt, shape[1:]) for name, (dt, shape) in found[0].items()}


def shm_free_bytes() -> int | None:
    """Free bytes of ``/dev/shm``, or None where it does not exist (not Linux)."""
    try:
        st = os.statvfs(_SHM_DIR)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def create_block(nbytes: int) -> SharedMemory:
    """A new shared block with its pages reserved now: tmpfs only sets a size, and a write past what
    /dev/shm can hold would kill the writing process with SIGBUS instead of raising."""
    shm = SharedMemory(create=True, size=max(1, nbytes))
    try:
        os.posix_fallocate(shm._fd, 0, shm.size)  # type: ignore[attr-defined]  # the block's own descriptor
    except OSError as exc:
        _drop(shm)
        raise TaskError(
            f"cannot reserve {nbytes / 2**20:.0f} MiB of shared memory for the stream's worker processes "
            f"({exc.strerror or exc}; {(shm_free_bytes() or 0) / 2**20:.0f} MiB of /dev/shm are free). Give /dev/shm "
            "more room (Docker: --shm-size), lower --batch, or stream with pool='threads' (--pool threads)"
        ) from None
    return shm


@dataclass
class _Slot:
    """One set of batch buffers: per input, a shared block (and its page-lock for GPU backends)."""

    blocks: dict[str, tuple[SharedMemory, np.ndarray, Any]]
    desc: tuple[tuple[str, str, str, tuple[int, ...]], ...]  # what a worker needs: (input, block name, dtype, batch shape)
    arena: SharedMemory | None = None  # the caller's arrays of the batch being prepared (grow-only)


@dataclass(frozen=True)
class SharedArray:
    """An input array the parent copied into a slot's arena: a worker reads it there instead of
    receiving it pickled through a pipe (0.75 MB per 500x500 frame, through one pipe for all workers)."""

    block: str
    offset: int
    dtype: str
    shape: tuple[int, ...]


def share_arrays(slot: _Slot, items: list[Any], *, unwrap: Callable[[Any], Any], rewrap: Callable[[Any, Any], Any]) -> None:
    """Copy the numeric arrays among ``items`` (``unwrap(item)`` gives an item's array or None) into
    ``slot``'s arena (grown when too small) and replace them with ``rewrap(item, SharedArray)``."""
    arrays = [(i, a) for i, a in ((i, unwrap(item)) for i, item in enumerate(items)) if isinstance(a, np.ndarray) and a.dtype.kind in "biuf"]
    need = sum(-(-a.nbytes // 64) * 64 for _, a in arrays)  # 64-byte aligned
    if not need:
        return
    if slot.arena is None or slot.arena.size < need:
        _drop(slot.arena)
        slot.arena = create_block(max(need, 2 * slot.arena.size if slot.arena is not None else need))
    arena = cast(SharedMemory, slot.arena)
    offset = 0
    for i, a in arrays:
        np.copyto(np.ndarray(a.shape, a.dtype, buffer=arena.buf, offset=offset), a)
        items[i] = rewrap(items[i], SharedArray(arena.name, offset, a.dtype.str, a.shape))
        offset += -(-a.nbytes // 64) * 64


def _drop(shm: SharedMemory | None) -> None:
    if shm is None:
        return
    shm.unlink()
    try:
        shm.close()
    except BufferError:
        # A view of the block is still referenced somewhere (e.g. a caller kept a result that aliases
        # it); the name is gone already and the mapping goes with the last view.
        return


class SharedBatchRing:
    """``count`` slots of batch buffers in shared memory, taken before a batch is prepared and given
    back once its inference has finished (so it bounds the batches in flight, like the thread
    pipeline's ring). ``gpu``: page-lock every block for a GPU backend on that device (None: not locked)."""

    def __init__(self, count: int, *, batch: int, feeds: Mapping[str, tuple[np.dtype, tuple[int, ...]]], gpu: int | None) -> None:
        self.free: queue.Queue[_Slot] = queue.Queue()  # the slots not in use; take one with free.get()
        self._slots: list[_Slot] = []
        try:
            for _ in range(count):
                blocks: dict[str, tuple[SharedMemory, np.ndarray, Any]] = {}
                self._slots.append(_Slot(blocks, ()))
                for name, (dtype, shape) in feeds.items():
                    full = (batch, *shape)
                    nbytes = max(1, int(np.prod(full)) * dtype.itemsize)
                    shm = create_block(nbytes)
                    array: np.ndarray = np.ndarray(full, dtype, buffer=shm.buf)
                    blocks[name] = (shm, array, None)
                    if gpu is not None:  # imported only for a GPU backend, which has loaded CUDA already
                        from ..backends.cuda import HostRegistration

                        blocks[name] = (shm, array, HostRegistration(array.ctypes.data, nbytes, device_id=gpu))
                self._slots[-1].desc = tuple((n, b[0].name, b[1].dtype.str, b[1].shape) for n, b in blocks.items())
        except BaseException:
            self.close()
            raise
        for s in self._slots:
            self.free.put(s)

    @staticmethod
    def nbytes(count: int, *, batch: int, feeds: Mapping[str, tuple[np.dtype, tuple[int, ...]]]) -> int:
        return count * sum(batch * int(np.prod(shape)) * dtype.itemsize for dtype, shape in feeds.values())

    def give(self, slot: _Slot) -> None:
        self.free.put(slot)

    @property
    def names(self) -> tuple[str, ...]:
        """Every block's name: the batch buffers and the arenas."""
        return tuple(d[1] for slot in self._slots for d in slot.desc) + tuple(s.arena.name for s in self._slots if s.arena is not None)

    @staticmethod
    def views(slot: _Slot, count: int) -> dict[str, np.ndarray]:
        """The first ``count`` rows of each input of ``slot``: the batch to run."""
        return {name: array[:count] for name, (_, array, _) in slot.blocks.items()}

    def close(self) -> None:
        """Unlock and remove every block. Call once no worker writes and no backend reads them."""
        for slot in self._slots:
            for name, (shm, array, reg) in list(slot.blocks.items()):
                if reg is not None:
                    reg.close()
                del array
                slot.blocks.pop(name)
                _drop(shm)
            _drop(slot.arena)
            slot.arena = None
        self._slots = []


# ---------------------------------------------------------------- in the worker processes

_worker: dict[str, Any] = {}  # this worker's stages (streaming.HostStages), and the blocks it has opened (by name)


def _init_worker(barrier: Any) -> None:
    # Ctrl-C reaches the whole process group; the parent handles it and stops the workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker["stages"] = (None, None)
    _worker["blocks"] = {}
    _worker["barrier"] = barrier


@dataclass(frozen=True)
class StagesRef:
    """A stream's stages as every chunk carries them: pickled once per stream (a few KB), unpickled by
    a worker only when they differ from the last ones it used. So a task changed between two streams
    is never run with its old settings, and one pool serves any task state."""

    key: str
    blob: bytes

    @classmethod
    def of(cls, stages: Any) -> "StagesRef":
        """Raises TaskError when the stages cannot reach a worker: an object pickle cannot send, or one
        whose class lives in the main script or a notebook (``__main__``), which the workers do not import."""
        buffer = io.BytesIO()
        finder = _MainFinder(buffer)
        try:
            finder.dump(stages)
        except (pickle.PicklingError, AttributeError, TypeError) as exc:  # what pickle raises for what it cannot send
            raise TaskError(f"the task cannot be sent to worker processes ({exc}); define its class at a module's top level") from None
        if finder.found:
            raise TaskError(
                f"the task uses {finder.found}, defined in the main script or a notebook, which worker processes do not "
                "import; define it in a module"
            )
        blob = buffer.getvalue()
        return cls(hashlib.sha256(blob).hexdigest(), blob)


class _MainFinder(pickle.Pickler):
    """A pickler that notes any object whose class (or itself, a class or function) belongs to ``__main__``."""

    found = ""

    def persistent_id(self, obj: Any) -> None:
        owner = obj if isinstance(obj, (type, types.FunctionType)) else type(obj)
        if getattr(owner, "__module__", None) == "__main__" and not self.found:
            self.found = f"{getattr(owner, '__qualname__', owner)!s}"
        return None


class WorkerTraceback(Exception):
    """The traceback of an exception raised in a stream worker process (set as its ``__cause__``)."""

    def __str__(self) -> str:
        return f"\n\"\"\"\n{self.args[0]}\"\"\""


def portable(exc: BaseException) -> tuple[BaseException, str]:
    """``exc`` as it can cross back to the parent, and its traceback text: an exception pickle cannot
    rebuild (e.g. one with keyword-only arguments) would otherwise break the whole pool."""
    text = "".join(traceback.format_exception(exc))
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # any failure to rebuild it: send what it said instead
        return TaskError(f"{type(exc).__name__}: {exc} (raised in a stream worker process)"), text
    return exc, text


def _stages(ref: StagesRef) -> Any:
    key, stages = _worker["stages"]
    if key != ref.key:
        stages = pickle.loads(ref.blob)
        _worker["stages"] = (ref.key, stages)
    return stages


def _started() -> bool:
    """Submitted once per worker when a pool starts: returns once all of them are up."""
    try:
        _worker["barrier"].wait(timeout=_START_TIMEOUT_S)
    except threading.BrokenBarrierError:
        return False
    return True


def forget_all() -> bool:
    """Close every block this worker holds; submitted once per worker when a stream ends (the barrier
    makes each worker take exactly one), so an idle pool holds no stream's memory."""
    try:
        _worker["barrier"].wait(timeout=_FORGET_TIMEOUT_S)
    except threading.BrokenBarrierError:
        return False  # a worker was busy elsewhere: this one still forgets; the others do at their next call
    finally:
        _forget_blocks(set())
    return True


def _attached(name: str) -> np.ndarray:
    """The bytes of shared block ``name``, opened once per worker (closed by :func:`_forget_blocks`)."""
    blocks: dict[str, tuple[SharedMemory, np.ndarray]] = _worker["blocks"]
    if name not in blocks:
        shm = SharedMemory(name=name)
        blocks[name] = (shm, np.ndarray((shm.size,), np.uint8, buffer=shm.buf))
    return blocks[name][1]


def _view(name: str, offset: int, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return _attached(name)[offset : offset + nbytes].view(np.dtype(dtype)).reshape(shape)


def _block(name: str, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """A batch block (a slot's input, or output) as its array."""
    return _view(name, 0, dtype, shape)


def shared_view(ref: SharedArray) -> np.ndarray:
    """In a worker: the array ``ref`` names, read in place from its arena."""
    return _view(ref.block, ref.offset, ref.dtype, ref.shape)


def _resolve(item: Any) -> Any:
    """An input with its :class:`SharedArray` (itself, or a frame's image) replaced by the array."""
    if isinstance(item, SharedArray):
        return shared_view(item)
    if isinstance(getattr(item, "image", None), SharedArray):
        return replace(item, image=shared_view(item.image))
    return item


def _forget_blocks(keep: set[str]) -> None:
    """Close the blocks of earlier streams (their memory is freed only when every process has closed them)."""
    blocks: dict[str, tuple[SharedMemory, np.ndarray]] = _worker["blocks"]
    for name in [n for n in blocks if n not in keep]:
        shm, array = blocks.pop(name)
        del array
        try:
            shm.close()
        except BufferError:  # a result still aliases the block: its mapping goes with that view
            continue


def _check_generation(generation: tuple[str, ...]) -> None:
    if any(name not in generation for name in _worker["blocks"]):
        _forget_blocks(set(generation))


def finish_chunk(ref: StagesRef, generation: tuple[str, ...], desc: Sequence[tuple[str, str, str, tuple[int, ...]]], count: int, rows: Sequence[tuple[int, Any]]) -> list[tuple[bool, Any]]:
    """Postprocess ``rows`` ((row, meta) pairs) of a batch's outputs, which the parent copied into the
    shared blocks ``desc`` names (``count`` rows); returns ``(True, result)`` (small, pickled back) or
    ``(False, (the exception, its traceback text))`` per row."""
    _check_generation(generation)
    stages = _stages(ref)
    outputs = {name: _block(block, dtype, shape)[:count] for name, block, dtype, shape in desc}
    per_image = stages.split(outputs, count)
    results: list[tuple[bool, Any]] = []
    for row, meta in rows:
        try:
            results.append((True, stages.finish(per_image[row], meta)))
        except Exception as exc:  # raised in the parent when the stream reaches this image, as with threads
            results.append((False, portable(exc)))
    return results


def prepare_chunk(ref: StagesRef, generation: tuple[str, ...], desc: Sequence[tuple[str, str, str, tuple[int, ...]]], start: int, items: Sequence[Any], keep: bool) -> list[tuple[bool, Any, Any]]:
    """Decode and preprocess ``items`` into rows ``start...`` of the slot ``desc`` names. Per item:
    ``(True, meta, rgb or None)``, or ``(False, message, None)`` for an image that cannot be used."""
    _check_generation(generation)
    prepare = _stages(ref).prepare
    out: list[tuple[bool, Any, Any]] = []
    for row, item in enumerate(items, start):
        try:
            rgb, feeds, meta = prepare(_resolve(item))
            if keep and rgb.base is not None:  # a view of the arena, reused for the next batch
                rgb = rgb.copy()
            for name, block, dtype, shape in desc:
                arr = np.asarray(feeds[name])
                if arr.shape != (1, *shape[1:]) or arr.dtype != np.dtype(dtype):
                    raise TaskError(
                        f"preprocessing gave input {name!r} {arr.dtype} {list(arr.shape)}, but the batch buffer holds "
                        f"{np.dtype(dtype)} {[1, *shape[1:]]}; stream this task with pool='threads' (--pool threads)"
                    )
                _block(block, dtype, shape)[row] = arr[0]
        except BackendUnavailable:
            raise  # a missing dependency: every image would fail the same way
        except TrtkitError as exc:
            out.append((False, str(exc), None))
            continue
        except Exception as exc:  # stops the stream, as with threads; sent so that the parent can rebuild it
            raise portable(exc)[0] from None
        out.append((True, meta, rgb if keep else None))
    return out


# ---------------------------------------------------------------- in the parent

class WorkerProcesses:
    """``count`` worker processes that run a task's load + preprocess and postprocess (see the
    module docstring; each chunk names its stages with a :class:`StagesRef`). Owned by the task
    (``task.close()`` stops them); ``close()`` is idempotent. ``users`` counts the streams on them.

    All ``count`` start at once, without the parent's main script (:func:`_main_not_imported`)."""

    def __init__(self, *, count: int) -> None:
        self.count, self.users = count, 0
        context = get_context("spawn")
        self._barrier = context.Barrier(count)
        self._executor = ProcessPoolExecutor(max_workers=count, mp_context=context, initializer=_init_worker, initargs=(self._barrier,))
        try:
            with _main_not_imported():  # the executor spawns a process per submit while none is idle
                started = [self._executor.submit(_started) for _ in range(count)]
            wait(started, timeout=_START_TIMEOUT_S)
            if not all(f.done() and not f.exception() and f.result() for f in started):
                raise TaskError(
                    f"{count} stream worker processes did not all start within {_START_TIMEOUT_S:.0f} s; "
                    "lower --workers, or stream with pool='threads' (--pool threads)"
                )
        except BrokenProcessPool as exc:
            self.close()
            raise broken(exc) from exc
        except BaseException:
            self.close()
            raise

    def submit(self, fn: Callable[..., Any], *args: Any) -> "Future[Any]":
        """Run ``prepare_chunk`` or ``finish_chunk`` in a worker."""
        try:
            return self._executor.submit(fn, *args)
        except BrokenProcessPool as exc:
            raise broken(exc) from exc
        except RuntimeError as exc:  # "cannot schedule new futures after shutdown"
            raise TaskError(f"the task was closed while a stream was running ({exc}); close it after the stream ends") from None

    def forget(self) -> None:
        """Have every worker drop the blocks of the streams that ran (a stream may start meanwhile: its
        workers open its blocks again). A pool already stopped or broken has nothing to drop."""
        try:
            futures = [self._executor.submit(forget_all) for _ in range(self.count)]
        except (RuntimeError, BrokenProcessPool):
            return
        wait(futures)
        self._barrier.reset()

    @property
    def broken(self) -> bool:
        return bool(getattr(self._executor, "_broken", False))

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


_START_TIMEOUT_S = 120.0  # spawning 16 workers took about 1.4 s on the H200; a loaded machine takes longer
_spawn_lock = threading.Lock()


@contextmanager
def _main_not_imported() -> Iterator[None]:
    """While our worker processes start, leave the parent's main script out of what spawn gives them.

    spawn imports the main script again in each child (as ``__mp_main__``) so that pickled references
    to ``__main__`` resolve. Our workers need only trtkit and the task's own module (stages that use
    ``__main__`` are refused first, :meth:`StagesRef.of`), and a script that loads models, streams or
    starts a server at its top level, without ``if __name__ == "__main__":``, would do it all again in
    every worker. The standard library has no option for this, so its hook is swapped, under a lock,
    only while our workers start; all of them start then (none is started later)."""
    real = mp_spawn.get_preparation_data

    def without_main(name: str) -> dict[str, Any]:
        data: dict[str, Any] = real(name)
        data.pop("init_main_from_path", None)
        data.pop("init_main_from_name", None)
        return data

    with _spawn_lock:
        mp_spawn.get_preparation_data = without_main
        try:
            yield
        finally:
            mp_spawn.get_preparation_data = real


def broken(exc: BaseException) -> TaskError:
    """The error for a worker process that died or could not start."""
    return TaskError(
        f"a stream worker process died or could not start ({exc}); if the machine ran out of memory, lower "
        "--workers or --batch, or stream with pool='threads' (--pool threads)"
    )


_pools_lock = threading.Lock()


def acquire_workers(task: Any, *, count: int) -> WorkerProcesses:
    """Worker processes for one stream of ``task``: the task's own (started on first use, kept until
    ``task.close()``) when they have ``count`` workers or no other stream uses them; else new ones,
    for this stream only. Give them back with :func:`release_workers`."""
    with _pools_lock:
        if getattr(task, "_closed", False):
            raise TaskError(f"{type(task).__name__} was closed before its stream started; create a new one")
        held: WorkerProcesses | None = task.__dict__.get("_stream_workers")
        if held is not None and not held.users and (held.broken or held.count != count):
            held.close()
            task.__dict__.pop("_stream_workers")
            held = None
        if held is None or held.count != count:
            pool = WorkerProcesses(count=count)
            if held is None:
                task.__dict__["_stream_workers"] = pool
        else:
            pool = held
        pool.users += 1
        return pool


def release_workers(task: Any, pool: WorkerProcesses) -> None:
    """A stream is done with ``pool``. The last stream on the task's own pool has its workers drop the
    blocks they opened (still counted as a user meanwhile, so nothing closes the pool under it); a pool
    made for one stream only is stopped."""
    with _pools_lock:
        own = task.__dict__.get("_stream_workers") is pool
        last = pool.users == 1
    if own and last and not pool.broken:
        pool.forget()
    with _pools_lock:
        pool.users -= 1
        idle = pool.users == 0
        own = task.__dict__.get("_stream_workers") is pool
    if idle and not own:
        pool.close()
