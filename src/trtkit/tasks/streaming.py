"""Streaming task pipelines: decoding, preprocessing, inference and postprocessing overlap.

``task.stream(images, batch_size=8, workers=None)`` (and :func:`stream_predictions`,
which also yields each image's source and pixels) runs four stages at once::

    feeder thread   iterates the input, submits load + preprocess of each image to the workers
                    (with worker processes: a batch slot at a time, in chunks)
    workers (N)     decode (cv2) + preprocess each image; later, postprocess each image
                    (threads, or processes: see below)
    batcher thread  takes prepared images in input order, copies them into a batch buffer
                    (page-locked memory for GPU backends, so the backend uploads it without
                    staging), starts the inference (``backend.submit`` on GPU backends: upload,
                    compute and download overlap the next batch; ``backend.infer`` on the CPU,
                    which releases the GIL while the workers prepare the next batch)
    finisher thread waits for each batch's outputs, splits them per image and hands each
                    image's postprocess to the workers

Results come out in input order. Memory is bounded: at most ``depth`` batches are in
flight (a fixed ring of ``depth + 2`` batch buffers), plus a window of prepared images
and of finished results, each a small multiple of ``batch_size``.

**Threads or processes.** cv2 releases the GIL inside every call (its bindings wrap each
one in ``PyAllowThreads``: imdecode, resize, copyMakeBorder, cvtColor, dnn.blobFromImage)
and NumPy releases it in ufunc loops, ``astype`` and copies of numeric arrays; ONNX Runtime
and TensorRT release it while they run. So threads scale, up to the Python between those
calls: about 1.2 ms of GIL-held time per image for YOLOv8n at 640, a ceiling near 800
images/s per process. Past that, ``pool="processes"`` decodes and preprocesses in worker
processes (:mod:`trtkit.tasks.stream_workers`): the feeder hands each batch slot (shared
memory, page-locked for GPU backends) to the workers in chunks, they write their rows and
send back only each image's ``meta``; the backend writes each batch's outputs into shared
output slots (page-locked: straight from the GPU, ``submit(into=)``) and the workers
postprocess them there (threads do, for outputs whose per-image shape changes, e.g.
data-dependent NMS results). ``pool="auto"`` picks processes for long inputs on
a GPU backend with at least 4 workers.
``benchmarks/pipelines.py`` measures both ("stream" and "stream/proc" columns).

**Errors.** An image that cannot be read or used (missing, unreadable, zero-size, wrong
dtype) becomes an :class:`ImageError` result in its place; the stream goes on. A missing
dependency (e.g. OpenCV), an inference failure or a postprocess failure stops the stream
with that one error, since it would repeat for every image.
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Generator, Iterable, Mapping, Sequence, Sized, cast

import numpy as np

from ..backends._threads import FlaggedThread, wait_exits
from ..errors import BackendUnavailable, TaskError, TrtkitError
from ._image import as_rgb
from .stream_workers import (
    POOLS, SharedBatchRing, StagesRef, WorkerTraceback, acquire_workers, broken, finish_chunk, host_copy, prepare_chunk,
    probe_feeds, release_workers, share_arrays, shm_free_bytes,
)

__all__ = ["AUTO_PROCESSES_MIN_IMAGES", "StreamOptions", "Frame", "BadInput", "ImageError", "Prediction", "stream_predictions", "BatchStages", "WholeImageStages"]

_POLL_S = 0.05  # how often a blocked stage thread checks that the stream was stopped
# pool="auto" starts worker processes only for inputs at least this long (or of unknown length): spawning
# 16 of them takes about a second, which threads at a few hundred images/s would have used to finish.
AUTO_PROCESSES_MIN_IMAGES = 256


@dataclass(frozen=True)
class StreamOptions:
    """How :func:`stream_predictions` runs.

    ``batch_size`` images per inference (1 when the model's batch axis is static);
    ``workers`` decode/preprocess/postprocess threads (None: one per CPU core);
    ``depth`` batches in flight at once; ``keep_images`` puts each decoded RGB image in
    its :class:`Prediction` (to draw on it). ``pool``: where decoding and preprocessing run:
    ``"threads"``, ``"processes"`` (:mod:`trtkit.tasks.stream_workers`: no shared GIL, batches
    are written into shared memory; a batch is filled before it runs, so not for a live
    camera), or ``"auto"``: processes for a GPU backend with at least 4 workers when the
    task's inputs have a fixed size, ``/dev/shm`` has room and the input is long (unsized, or at
    least :data:`AUTO_PROCESSES_MIN_IMAGES` items: starting the workers costs about a second),
    threads otherwise.
    """

    batch_size: int = 8
    workers: int | None = None
    depth: int = 2
    keep_images: bool = False
    pool: str = "auto"

    def __post_init__(self) -> None:
        for name in ("batch_size", "depth"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TaskError(f"stream {name} (--{name.replace('_size', '')}) must be an integer >= 1, got {value!r}")
        if self.workers is not None and (isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1):
            raise TaskError(f"stream workers (--workers) must be an integer >= 1 or None (one per core), got {self.workers!r}")
        if self.pool not in POOLS:
            raise TaskError(f"stream pool (--pool) must be one of {', '.join(POOLS)}, got {self.pool!r}")

    @property
    def worker_count(self) -> int:
        return self.workers if self.workers is not None else max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class Frame:
    """An image that carries its own name, e.g. a video frame ``clip.mp4#12``."""

    source: str
    image: np.ndarray


@dataclass(frozen=True)
class BadInput:
    """An input known to be unusable before decoding (a glob matching nothing, a video that
    cannot be opened); the stream yields an :class:`ImageError` with ``message`` in its place."""

    source: str
    message: str


@dataclass(frozen=True)
class ImageError:
    """The result in place of an image that could not be processed; the stream goes on."""

    source: str
    message: str

    columns: ClassVar[tuple[str, ...]] = ("error",)

    def to_json(self) -> dict[str, Any]:
        return {"error": self.message}

    def rows(self) -> list[list[str]]:
        return [[self.message]]

    def draw(self, image: np.ndarray) -> np.ndarray:
        return image.copy()


@dataclass(frozen=True)
class Prediction:
    """One input's outcome: its position, its name, its result (or :class:`ImageError`)
    and, with ``keep_images``, its RGB pixels (None when it could not be read)."""

    index: int
    source: str
    result: Any
    image: np.ndarray | None = None

    @property
    def failed(self) -> bool:
        return isinstance(self.result, ImageError)


def source_name(item: Any, index: int) -> str:
    """How an input is named in results and errors: its path, a frame's own name, or ``<array N>``."""
    if isinstance(item, (Frame, BadInput)):
        return item.source
    if isinstance(item, (str, os.PathLike)):
        return os.fspath(item)  # type: ignore[return-value]
    return f"<array {index}>"


# ---------------------------------------------------------------- stages

def _frame_pixels(item: Any) -> Any:
    return item.image if isinstance(item, Frame) else item


def _with_pixels(item: Any, pixels: Any) -> Any:
    return Frame(item.source, pixels) if isinstance(item, Frame) else pixels


def load_rgb(item: Any) -> np.ndarray:
    """The RGB pixels of one input: an array, a path, a :class:`Frame`; a :class:`BadInput` raises its message."""
    if isinstance(item, BadInput):
        raise TaskError(item.message)
    return as_rgb(_frame_pixels(item))


class HostStages:
    """A task's stages without its backend, for worker processes (picklable): load + preprocess,
    split the batch outputs, postprocess. ``task`` is a :func:`~trtkit.tasks.stream_workers.host_copy`;
    ``front`` (picklable, ``front.preprocess(task, rgb)``) replaces the task's preprocess for a model
    with part of the preprocessing inside (:mod:`trtkit.tasks.graph_preprocess`)."""

    def __init__(self, task: Any, *, front: Any = None) -> None:
        self.task = task
        self.front = front

    def prepare(self, item: Any) -> tuple[np.ndarray, Any, Any]:
        rgb = load_rgb(item)
        feeds, meta = self.front.preprocess(self.task, rgb) if self.front is not None else self.task.preprocess(rgb)
        return rgb, feeds, meta

    def split(self, outputs: Mapping[str, np.ndarray], count: int) -> list[dict[str, np.ndarray]]:
        return self.task.split_outputs(outputs, count)  # type: ignore[no-any-return]

    def finish(self, outputs: Mapping[str, np.ndarray], meta: Any) -> Any:
        return self.task.postprocess(outputs, meta)


class _BufferRing:
    """``count`` sets of batch buffers, reused round the ring; grow-only, page-locked for GPU backends.

    A set is taken before a batch is assembled and given back once that batch's inference has
    finished, so the ring bounds the batches in flight and no buffer is overwritten while a
    backend still reads it.
    """

    def __init__(self, count: int, *, pinned: bool) -> None:
        self._pinned = pinned
        self._free: queue.Queue[dict[str, Any]] = queue.Queue()
        self._all: list[dict[str, Any]] = [{} for _ in range(count)]
        for s in self._all:
            self._free.put(s)

    def take(self, stop: threading.Event) -> dict[str, Any]:
        while True:
            try:
                return self._free.get(timeout=_POLL_S)
            except queue.Empty:
                if stop.is_set():
                    raise _Stopped from None

    def give(self, buffers: dict[str, Any]) -> None:
        self._free.put(buffers)

    def view(self, buffers: dict[str, Any], name: str, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        nbytes = int(np.prod(shape)) * dtype.itemsize
        held = buffers.get(name)
        if held is None or held[1] < nbytes:
            if held is not None and self._pinned:
                held[0].close()
            if self._pinned:
                from ..backends.cuda import PinnedBuffer

                held = (PinnedBuffer(nbytes), nbytes)
            else:
                held = (np.empty(nbytes, np.uint8), nbytes)
            buffers[name] = held
        mem: Any = held[0]
        if self._pinned:
            return mem.view(dtype, shape)  # type: ignore[no-any-return]
        return mem[:nbytes].view(dtype).reshape(shape)  # type: ignore[no-any-return]

    def close(self) -> None:
        if self._pinned:
            for s in self._all:
                for mem, _ in s.values():
                    mem.close()
        self._all = []


class BatchStages:
    """How the stream runs a :class:`~trtkit.tasks.base.Task`: ``preprocess`` in the workers,
    stacked inference, ``split_outputs`` + ``postprocess`` in the workers.

    Another front end (e.g. :mod:`trtkit.tasks.graph_preprocess`, preprocessing on the GPU)
    subclasses it and overrides ``prepare`` and ``collate``.
    """

    batched = True

    def __init__(self, task: Any, *, depth: int, backend: Any = None) -> None:
        self.task = task
        self.backend = backend if backend is not None else task.backend
        self.max_batch: int | None = None if task.dynamic_batch else 1
        self._submit = getattr(self.backend, "submit", None) if self._is_gpu() else None
        self._ring = _BufferRing(depth + 2, pinned=self._submit is not None)

    def _is_gpu(self) -> bool:
        if not callable(getattr(self.backend, "submit", None)):
            return False
        from ..backends._device_io import PipelinedBackend  # imported only for a backend that already loaded CUDA

        return isinstance(self.backend, PipelinedBackend)

    def close(self) -> None:
        self._ring.close()

    # -- in the workers
    def prepare(self, image: np.ndarray) -> tuple[dict[str, np.ndarray], Any]:
        return self.task.preprocess(image)  # type: ignore[no-any-return]

    def finish(self, outputs: Mapping[str, np.ndarray], meta: Any) -> Any:
        return self.task.postprocess(outputs, meta)

    def host_stages(self) -> HostStages | None:
        """The stages for worker processes (the task without its backend), or None when this
        front end prepares or finishes with something that cannot leave the process."""
        if type(self).prepare is not BatchStages.prepare or type(self).finish is not BatchStages.finish:
            return None
        return HostStages(host_copy(self.task))

    @property
    def pinned(self) -> bool:
        """True when batches should sit in page-locked memory (a GPU backend)."""
        return self._submit is not None

    @property
    def gpu(self) -> int | None:
        """The GPU a GPU backend runs on (page-locked memory is registered there), else None."""
        return int(self.backend.config.device_id) if self._submit is not None else None

    # -- in the batcher thread
    def collate(self, prepared: Sequence[dict[str, np.ndarray]], buffers: dict[str, Any]) -> dict[str, np.ndarray] | None:
        """One stacked batch in ``buffers``, or None when the feeds cannot be stacked (their shapes differ)."""
        names = list(prepared[0])
        stacked = {}
        for name in names:
            parts = [feeds[name] for feeds in prepared]
            first = parts[0]
            if any(p.shape != first.shape or p.dtype != first.dtype for p in parts):
                return None
            out = self._ring.view(buffers, name, first.dtype, (sum(p.shape[0] for p in parts), *first.shape[1:]))
            if self._submit is not None:  # a GPU backend: CUDA is loaded, the staging threads copy big batches
                from ..backends._device_io import stack_into

                stack_into(out, parts)
            else:
                np.concatenate(parts, axis=0, out=out)
            stacked[name] = out
        return stacked

    def run(self, prepared: Sequence[dict[str, np.ndarray]], stop: threading.Event) -> "_Pending":
        """Start the inference of one batch; returns a handle whose ``result()`` gives per-image outputs."""
        buffers = self._ring.take(stop)
        try:
            stacked = self.collate(prepared, buffers)
        except BaseException:
            self._ring.give(buffers)
            raise
        if stacked is None:  # e.g. classic OCR-style sizes: one inference per image
            self._ring.give(buffers)
            return _Pending([self._start(feeds) for feeds in prepared], None, None, self.split)
        try:
            return self.start_stacked(stacked, len(prepared), release=lambda: self._ring.give(buffers))
        except BaseException:
            self._ring.give(buffers)
            raise

    def start_stacked(self, stacked: Mapping[str, np.ndarray], count: int, *, release: Callable[[], None],
                      into: Mapping[str, np.ndarray] | None = None) -> "_Pending":
        """Start the inference of ``count`` images already stacked in ``stacked``; ``release`` is
        called once the backend is done with those buffers (when this raises, the caller still owns them).
        ``into``: where a GPU backend writes the outputs that fit (``submit(into=)``)."""
        return _Pending([self._start(stacked, into)], count, release, self.split)

    def _start(self, feeds: Mapping[str, np.ndarray], into: Mapping[str, np.ndarray] | None = None) -> "Future[dict[str, Any]]":
        if self._submit is not None:
            return self._submit(feeds, into=into)  # type: ignore[no-any-return]
        done: Future[dict[str, Any]] = Future()
        done.set_result(self.backend.infer(feeds))  # the CPU backends release the GIL while they run
        return done

    def split(self, outputs: Mapping[str, np.ndarray], count: int) -> list[dict[str, np.ndarray]]:
        return self.task.split_outputs(outputs, count)  # type: ignore[no-any-return]


class _Pending:
    """The inference of one batch in flight: ``result()`` waits and splits it into per-image outputs.
    ``count`` is the batch size of one stacked inference (None: one inference per image)."""

    def __init__(
        self,
        futures: list["Future[dict[str, Any]]"],
        count: int | None,
        release: Callable[[], None] | None,
        split: Callable[[Mapping[str, np.ndarray], int], list[dict[str, np.ndarray]]],
    ) -> None:
        self._futures, self._count, self._release, self._split = futures, count, release, split
        self._outs: list[dict[str, np.ndarray]] | None = None

    def result(self) -> list[dict[str, np.ndarray]]:
        outs = self.raw()
        if self._count is None:
            return outs
        return self._split(outs[0], self._count)

    def raw(self) -> list[dict[str, np.ndarray]]:
        """The backend's outputs: one batched dict (stacked), or one per image. The batch buffers
        are released at the first call; later calls give the same outputs."""
        if self._outs is None:
            try:
                self._outs = [f.result() for f in self._futures]
            finally:
                release, self._release = self._release, None
                if release is not None:
                    release()
        return self._outs

    def detach(self, views: Mapping[str, np.ndarray]) -> None:
        """Wait, then replace outputs the backend wrote into ``views`` (a shared slot about to be reused) by copies."""
        self._outs = [{n: a.copy() if any(np.may_share_memory(a, v) for v in views.values()) else a for n, a in o.items()}
                      for o in self.raw()]

    @property
    def stacked(self) -> bool:
        return self._count is not None

    def settle(self) -> None:
        """Wait until the backend is done with this batch (its buffers), without raising its error."""
        wait(self._futures)


class WholeImageStages:
    """For a pipeline whose stages depend on each other per image (OCR: det -> crops -> rec):
    each worker runs the whole pipeline on one image; images run concurrently."""

    batched = False
    max_batch: int | None = 1

    def __init__(self, pipeline: Callable[[np.ndarray], Any]) -> None:
        self.pipeline = pipeline

    def close(self) -> None:
        return None

    def prepare(self, image: np.ndarray) -> tuple[None, Any]:
        return None, self.pipeline(image)


def stages_for(task: Any, *, depth: int) -> Any:
    """The stages that stream ``task``: its own ``stream_stages(depth=)`` when it has one, else by kind."""
    own = getattr(task, "stream_stages", None)
    if callable(own):
        return own(depth=depth)
    if callable(getattr(task, "preprocess", None)) and callable(getattr(task, "postprocess", None)):
        return BatchStages(task, depth=depth)
    return WholeImageStages(task)


# ---------------------------------------------------------------- the engine

@dataclass
class _Processes:
    """The worker processes of a stream and its shared batch slots."""

    workers: Any  # stream_workers.WorkerProcesses
    ring: SharedBatchRing
    task: Any  # whose workers they are
    stages: StagesRef  # what the workers run, sent with every chunk
    outputs: "SharedBatchRing | bool | None" = None  # slots for batch outputs, made at the first batch (False: threads postprocess)
    _finishing: set["Future[Any]"] = field(default_factory=set)  # postprocess chunks not done yet
    _lock: threading.Lock = field(default_factory=threading.Lock)  # done callbacks run on the executor's thread

    @property
    def generation(self) -> tuple[str, ...]:
        """The names of this stream's shared blocks (read when a chunk is sent: arenas and output slots
        appear as it runs); a worker closes blocks not named here, those of earlier streams."""
        return self.ring.names + (self.outputs.names if isinstance(self.outputs, SharedBatchRing) else ())

    def track(self, future: "Future[Any]") -> None:
        with self._lock:
            self._finishing.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: "Future[Any]") -> None:
        with self._lock:
            self._finishing.discard(future)

    def finishing(self) -> list["Future[Any]"]:
        with self._lock:
            return list(self._finishing)

    @staticmethod
    def settle(futures: Sequence["Future[Any]"]) -> None:
        """Cancel chunks not started and wait for the rest: their slot may be reused or removed after."""
        for f in futures:
            f.cancel()
        wait(futures)


_OutSlot = tuple[SharedBatchRing, Any, dict[str, np.ndarray]]  # an output ring, one of its slots, that slot's views


def _give_when_done(futures: Sequence["Future[Any]"], give: Callable[[], None]) -> None:
    """Call ``give`` once every future is done (at once when there are none)."""
    left = [len(futures)]
    lock = threading.Lock()

    def one_done(_: Any) -> None:
        with lock:
            left[0] -= 1
            last = left[0] == 0
        if last:
            give()

    if not futures:
        give()
    for f in futures:
        f.add_done_callback(one_done)


class _Stopped(Exception):
    """Internal: the stream was closed (consumer left, Ctrl-C, or a stage failed)."""


@dataclass
class _Entry:
    index: int
    source: str
    prepared: "Future[Any] | None" = None  # (image, feeds, meta) from the workers
    image: np.ndarray | None = None
    feeds: Any = None
    meta: Any = None
    result: Any = None  # set when known without inference (an error, or a whole-image pipeline)
    done: bool = False
    row: int = 0  # this image's position in its batch's per-image outputs
    pick: int | None = None  # with worker processes: this image's place in its chunk's results
    finish: "Future[Any] | None" = None


@dataclass
class _Failure:
    error: BaseException


_END = object()


@dataclass
class _Engine:
    stages: Any
    options: StreamOptions
    images: Iterable[Any]
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        opts = self.options
        batch = opts.batch_size if self.stages.max_batch is None else min(opts.batch_size, self.stages.max_batch)
        self.batch = batch
        workers = opts.worker_count
        self.procs = self._worker_processes(workers)
        try:
            self._make_stages(workers)
        except BaseException:  # e.g. Ctrl-C right after the worker processes were acquired
            self._release_processes()
            raise

    def _make_stages(self, workers: int) -> None:
        opts, batch = self.options, self.batch
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="trtkit-stream")
        # bounded queues: prepared images (a window the workers fill ahead), batches in flight, finished results
        self.prepared: queue.Queue[Any] = queue.Queue(maxsize=max(2 * workers, batch * (opts.depth + 1)))
        self.batches: queue.Queue[Any] = queue.Queue(maxsize=opts.depth)
        self.ordered: queue.Queue[Any] = queue.Queue(maxsize=max(2 * workers, 2 * batch))
        self.threads = [
            FlaggedThread(target=self._guard, args=(fn, out), name=f"trtkit-stream-{label}", daemon=True)
            for fn, out, label in (
                (self._feed if self.procs is None else self._feed_groups, self.prepared, "feed"),
                (self._batch_loop if self.procs is None else self._batch_groups, self.batches, "batch"),
                (self._finish_loop, self.ordered, "finish"),
            )
        ]

    def _worker_processes(self, workers: int) -> "_Processes | None":
        """Decode + preprocess in worker processes (see :class:`StreamOptions` ``pool``), or None: threads.
        ``auto`` checks the cheap conditions first and falls back to threads on any obstacle; an
        explicit ``processes`` raises a TaskError naming it."""
        pool = self.options.pool
        if pool == "threads" or not self.stages.batched:
            if pool == "processes":
                raise TaskError(self._refusal("this task's stages use its models per image (e.g. OCR)"))
            return None
        if pool == "auto":
            short = isinstance(self.images, Sized) and len(self.images) < AUTO_PROCESSES_MIN_IMAGES
            if short or not (self.stages.pinned and workers >= 4):
                return None  # processes pay off for a GPU backend (the CPU is free for them) on long inputs
        try:
            return self._start_processes(workers)
        except TrtkitError:
            if pool == "processes":
                raise
            return None  # auto: whatever stands in the way of processes, threads still work
        except Exception as exc:  # e.g. the task's preprocess refusing the probe image, no POSIX semaphores
            if pool == "processes":
                raise TaskError(self._refusal(f"{type(exc).__name__}: {exc}")) from exc
            return None

    def _refusal(self, reason: str) -> str:
        return f"stream pool='processes' (--pool processes) cannot run here: {reason}; use --pool threads"

    def _start_processes(self, workers: int) -> "_Processes":
        host = self.stages.host_stages()
        if host is None:
            raise TaskError(self._refusal(
                "this front end's batches change size (preprocessing in the graph with resize='graph'; "
                "GraphPreprocessed.open(task, resize='host') streams in processes)"
            ))
        feeds = probe_feeds(host.prepare)
        if feeds is None:
            raise TaskError(self._refusal("its preprocessed inputs change size with the image, so no fixed batch buffer holds them"))
        count = self.options.depth + 2
        need = SharedBatchRing.nbytes(count, batch=self.batch, feeds=feeds)
        free = shm_free_bytes()
        if free is None:
            raise TaskError(self._refusal("this system has no /dev/shm"))
        if need > free // 2:  # leave room for the arenas, the output slots and everyone else
            raise TaskError(self._refusal(
                f"its batch buffers need {need / 2**20:.0f} MiB of /dev/shm and {free / 2**20:.0f} MiB are free "
                "(Docker: --shm-size); or lower --batch"
            ))
        try:
            ref = StagesRef.of(host)
        except TaskError as exc:
            raise TaskError(self._refusal(str(exc))) from None
        ring = SharedBatchRing(count, batch=self.batch, feeds=feeds, gpu=self.stages.gpu)
        try:
            task = self.stages.task
            return _Processes(acquire_workers(task, count=workers), ring, task, ref)
        except BaseException:
            ring.close()
            raise

    def _release_processes(self) -> None:
        """Remove the shared blocks and give the worker processes back (they drop what they opened)."""
        procs, self.procs = self.procs, None
        if procs is None:
            return
        procs.settle(procs.finishing())  # workers still reading output slots
        procs.ring.close()
        if isinstance(procs.outputs, SharedBatchRing):
            procs.outputs.close()
        release_workers(procs.task, procs.workers)

    # -- queue helpers that give up when the stream is stopped
    def _put(self, q: "queue.Queue[Any]", item: Any) -> None:
        while True:
            try:
                q.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                if self.stop.is_set():
                    raise _Stopped from None

    def _get(self, q: "queue.Queue[Any]") -> Any:
        while True:
            try:
                return q.get(timeout=_POLL_S)
            except queue.Empty:
                if self.stop.is_set():
                    raise _Stopped from None

    def _finished(self, entry: _Entry) -> Any:
        try:
            result = self._wait(entry.finish)  # type: ignore[arg-type]
        except BrokenProcessPool as exc:
            raise broken(exc) from exc
        if entry.pick is None:
            return result
        ok, value = result[entry.pick]
        if not ok:
            error, text = value
            raise error from WorkerTraceback(text)
        return value

    def _wait(self, future: "Future[Any] | _Pending") -> Any:
        # Future.result() cannot be interrupted; these futures always finish (the pool keeps running)
        return future.result()

    def _guard(self, body: Callable[[], None], out: "queue.Queue[Any]") -> None:
        try:
            body()
        except _Stopped:
            return
        except BaseException as exc:  # handed to the consumer, which raises it
            try:
                self._put(out, _Failure(exc))
            except _Stopped:
                pass

    # -- feeder thread
    def _feed(self) -> None:
        for index, item in enumerate(self.images):
            if self.stop.is_set():
                return
            entry = _Entry(index, source_name(item, index))
            entry.prepared = self.pool.submit(self._prepare, item)
            self._put(self.prepared, entry)
        self._put(self.prepared, _END)

    def _prepare(self, item: Any) -> tuple[np.ndarray, Any, Any]:
        rgb = load_rgb(item)
        feeds, meta = self.stages.prepare(rgb)
        return rgb, feeds, meta

    # -- feeder and batcher threads with worker processes
    def _feed_groups(self) -> None:
        """Take a batch slot per ``batch`` inputs and have the worker processes fill its rows, in chunks."""
        procs = cast(_Processes, self.procs)
        chunk = max(1, -(-self.batch // procs.workers.count))  # ceil: one chunk per worker per batch
        items = enumerate(self.images)
        while not self.stop.is_set():
            group: list[tuple[int, Any]] = []
            failed: BaseException | None = None
            try:
                group.extend(itertools.islice(items, self.batch))
            except BaseException as exc:  # the input broke: its items before this one still run, then it is raised
                failed = exc
            if group:
                self._start_group(procs, group, chunk)
            if failed is not None:
                raise failed
            if len(group) < self.batch:
                break
        self._put(self.prepared, _END)

    def _start_group(self, procs: "_Processes", group: list[tuple[int, Any]], chunk: int) -> None:
        slot = self._get(procs.ring.free)
        entries = [_Entry(index, source_name(item, index), row=row) for row, (index, item) in enumerate(group)]
        chunks: list[tuple[int, Future[Any]]] = []
        items = [item for _, item in group]
        try:
            share_arrays(slot, items, unwrap=_frame_pixels, rewrap=_with_pixels)  # arrays go through shared memory
            for start in range(0, len(group), chunk):
                part = items[start : start + chunk]
                chunks.append((start, procs.workers.submit(prepare_chunk, procs.stages, procs.generation, slot.desc, start, part, self.options.keep_images)))
            self._put(self.prepared, (entries, slot, chunks))
        except BaseException:
            procs.settle([f for _, f in chunks])
            procs.ring.give(slot)
            raise

    def _take(self, q: "queue.Queue[Any]", out: "queue.Queue[Any]") -> Any:
        """The next item of ``q``; _END once the end was passed on to ``out``; a stage's failure is raised."""
        item = self._get(q)
        if isinstance(item, _Failure):
            raise item.error
        if item is _END:
            self._put(out, _END)
        return item

    def _batch_groups(self) -> None:
        """Wait for each prepared slot, mark its failed images, and start its inference."""
        procs = cast(_Processes, self.procs)
        while (item := self._take(self.prepared, self.batches)) is not _END:
            entries, slot, chunks = item
            out: _OutSlot | None = None
            try:
                for start, future in chunks:
                    try:
                        outcomes = future.result()
                    except BrokenProcessPool as exc:
                        raise broken(exc) from exc
                    for e, (ok, value, rgb) in zip(entries[start:], outcomes):
                        if ok:
                            e.meta, e.image = value, rgb
                        else:
                            e.result, e.done = ImageError(e.source, value), True
                if all(e.done for e in entries):
                    procs.ring.give(slot)
                    pending = None
                else:  # failed images keep their rows (stale pixels): their outputs are skipped
                    views = procs.ring.views(slot, len(entries))
                    out = self._output_slot(procs, len(entries))
                    pending = self.stages.start_stacked(views, len(entries), release=lambda s=slot: procs.ring.give(s),
                                                        into=out[2] if out is not None else None)
            except BaseException:
                procs.settle([f for _, f in chunks])
                procs.ring.give(slot)
                if out is not None:
                    out[0].give(out[1])
                raise
            self._send(entries, pending, out)

    def _output_slot(self, procs: "_Processes", count: int) -> "_OutSlot | None":
        """A shared output slot for the next batch once the first batch made the ring: the backend then
        writes the outputs into it (straight from the GPU, the ring being page-locked), and the workers
        postprocess them there; no batch-sized copy in this process."""
        ring = procs.outputs
        if not isinstance(ring, SharedBatchRing):
            return None
        slot = self._get(ring.free)
        return ring, slot, ring.views(slot, count)

    # -- batcher thread
    def _batch_loop(self) -> None:
        group: list[_Entry] = []
        good = 0
        while True:
            entry = self._get(self.prepared)
            if isinstance(entry, _Failure):
                self._flush(group)
                raise entry.error
            if entry is _END:
                self._flush(group)
                self._put(self.batches, _END)
                return
            try:
                rgb, feeds, meta = self._wait(entry.prepared)  # type: ignore[arg-type]
            except BackendUnavailable:
                raise  # a missing dependency: every image would fail the same way
            except TrtkitError as exc:
                entry.result, entry.done = ImageError(entry.source, str(exc)), True
            else:
                entry.image = rgb if self.options.keep_images else None
                if not self.stages.batched:
                    entry.result, entry.done = meta, True
                else:
                    entry.feeds, entry.meta = feeds, meta
                    good += 1
            entry.prepared = None
            group.append(entry)
            # flush a full batch, or a partial one when nothing else is waiting (a live camera: no latency)
            if good >= self.batch or (self.prepared.empty() and group):
                self._flush(group)
                group, good = [], 0

    def _flush(self, group: list[_Entry]) -> None:
        if not group:
            return
        todo = [e for e in group if not e.done]
        pending = self.stages.run([e.feeds for e in todo], self.stop) if todo else None
        for row, e in enumerate(todo):
            e.feeds, e.row = None, row  # the batch buffer holds them now
        self._send(group, pending, None)

    def _send(self, group: list[_Entry], pending: "_Pending | None", out: "_OutSlot | None") -> None:
        """Hand a started batch to the finisher; when the stream stops first, wait until the backend is done with it."""
        try:
            self._put(self.batches, (group, pending, out))
        except _Stopped:
            if pending is not None:
                pending.settle()
            if out is not None:
                out[0].give(out[1])
            raise

    # -- finisher thread
    def _finish_loop(self) -> None:
        while (item := self._take(self.batches, self.ordered)) is not _END:
            group, pending, out = item
            if self.procs is not None and pending is not None and pending.stacked and self._finish_in_workers(group, pending, out):
                for e in group:
                    self._put(self.ordered, e)
                continue
            if out is not None:  # outputs the backend wrote into the slot are copied out (results may keep views of
                try:             # their outputs), and the slot is free at once
                    cast(_Pending, pending).detach(out[2])
                finally:
                    out[0].give(out[1])
            per_image = self._wait(pending) if pending is not None else []
            for e in group:
                if not e.done:
                    e.finish = self.pool.submit(self.stages.finish, per_image[e.row], e.meta)
                    e.meta = None
                self._put(self.ordered, e)

    def _finish_in_workers(self, group: list[_Entry], pending: _Pending, out: "_OutSlot | None") -> bool:
        """Postprocess a batch's outputs in the worker processes from a shared output slot, a chunk per
        worker: the slot ``out`` the backend wrote them into, else a free slot they are copied into.
        False (nothing done; ``out`` still held) when the outputs do not fit the slots (their per-image
        shape changed, e.g. a data-dependent output): then threads postprocess this batch."""
        procs = cast(_Processes, self.procs)
        try:
            outputs = {n: np.asarray(a) for n, a in pending.raw()[0].items()}
        except BaseException:  # the inference failed: the backend is done with the slot
            if out is not None:
                out[0].give(out[1])
            raise
        count = len(group)
        if procs.outputs is None:
            if all(a.ndim and a.shape[0] == count and a.dtype.kind in "biufc" for a in outputs.values()):
                shapes = {n: (a.dtype, tuple(a.shape[1:])) for n, a in outputs.items()}
                procs.outputs = SharedBatchRing(self.options.depth + 2, batch=self.batch, feeds=shapes, gpu=self.stages.gpu)
            else:
                procs.outputs = False  # batch not on axis 0, or objects/strings: threads postprocess
        if not isinstance(procs.outputs, SharedBatchRing):
            return False
        ring, slot, views = out if out is not None else cast(_OutSlot, self._output_slot(procs, count))
        if set(views) != set(outputs) or any(outputs[n].shape != v.shape or outputs[n].dtype != v.dtype for n, v in views.items()):
            if out is None:
                ring.give(slot)
            return False
        for name, view in views.items():
            if outputs[name] is not view:  # the backend wrote it elsewhere (e.g. the first batch)
                np.copyto(view, outputs[name])
        todo = [e for e in group if not e.done]
        step = max(1, -(-len(todo) // procs.workers.count))
        futures = []
        try:
            for k in range(0, len(todo), step):
                part = todo[k : k + step]
                rows = [(e.row, e.meta) for e in part]
                future = procs.workers.submit(finish_chunk, procs.stages, procs.generation, slot.desc, count, rows)
                futures.append(future)
                procs.track(future)
                for pick, e in enumerate(part):
                    e.finish, e.pick, e.meta = future, pick, None
        finally:
            _give_when_done(futures, lambda: ring.give(slot))
        return True

    # -- the consumer (the caller's thread)
    def run(self) -> Generator[Prediction, None, None]:
        try:
            for t in self.threads:
                t.start()
            while True:
                entry = self._get(self.ordered)
                if isinstance(entry, _Failure):
                    raise entry.error
                if entry is _END:
                    return
                result = entry.result if entry.done else self._finished(entry)
                yield Prediction(entry.index, entry.source, result, entry.image)
        finally:
            self.close()

    def close(self) -> None:
        self.stop.set()
        interrupt = wait_exits(self.threads)  # a Ctrl-C meanwhile is held until the cleanup below is done
        while True:  # batches started but never finished: the backend must be done with their buffers
            try:
                item = self.batches.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, tuple) and item[1] is not None:
                item[1].settle()
        if self.procs is not None:  # slots still being prepared: the workers must be done writing them
            while True:
                try:
                    item = self.prepared.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, tuple):
                    self.procs.settle([f for _, f in item[2]])
        self.pool.shutdown(wait=True, cancel_futures=True)
        self._release_processes()
        self.stages.close()
        if interrupt is not None:
            raise interrupt


def stream_predictions(task: Any, images: Iterable[Any], *, options: StreamOptions = StreamOptions()) -> Generator[Prediction, None, None]:
    """Run ``task`` over ``images`` (arrays, paths, :class:`Frame`s; any iterable, read lazily)
    and yield a :class:`Prediction` per input, in input order; see the module docstring.

    Closing the iterator early (``break``, Ctrl-C) stops every stage and waits for the
    threads; inputs not yet read stay unread.
    """
    if getattr(task, "_closed", False):
        raise TaskError(f"{type(task).__name__} was used after close(); create a new one")
    return _run(task, images, options)


def _run(task: Any, images: Iterable[Any], options: StreamOptions) -> Generator[Prediction, None, None]:
    # A generator: nothing (threads, worker processes, shared memory) is set up until the first result is asked for,
    # so a stream that is never iterated holds nothing.
    if getattr(task, "_closed", False):  # closed between stream() and the first result
        raise TaskError(f"{type(task).__name__} was used after close(); create a new one")
    yield from _Engine(stages_for(task, depth=options.depth), options, images).run()
