"""TensorRT / TensorRT-RTX runtime on the tensor-name API (TensorRT 8.5 through 11, lean/dispatch runtimes, RTX).

Replaces the tutorial's ``allocate_buffers``/``do_inference`` (binding API,
removed in TensorRT 10, and wrong buffer sizes for dynamic shapes):

- I/O table from ``num_io_tensors``/``get_tensor_*``; device and pinned
  buffers allocated once per tensor for the largest profile shape, grow-only,
  keyed by name. Output sizes come from setting the max input shapes on a
  context and reading the inferred output shapes.
- Each call: ``set_input_shape`` only when a shape changed, addresses set only
  when they changed, H2D async, ``execute_async_v3`` on the context's stream,
  D2H of the valid region only. Results are copies (see _device_io).
- The profile is chosen from the input shapes; a batch larger than every
  profile's max is split and the outputs concatenated.
- Data-dependent output shapes go through an IOutputAllocator; CUDA graphs
  replay static shapes (``RuntimeConfig.cuda_graph``).
- ``submit``/``infer_many`` pipeline (see _device_io): numpy staging and H2D
  of the next batches run on free IO slots (contexts + 3) while the N
  execution contexts (``RuntimeConfig.contexts``), each on its own stream,
  compute; events order slot and context streams, the host never waits
  between stages.

Every TensorRT call lives in :mod:`trtkit.engine.trt_api`; version differences in :mod:`trtkit.engine.flavor`.
Engines always run on the GPU ``config.device_id``; ``config.device`` does not apply.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from . import cuda
from ..engine.plan_file import EngineFile, read_engine_file
from ..errors import BackendUnavailable, EngineError
from ..spec import RuntimeConfig, TensorSpec
from ..engine import trt_api as api
from ._device_io import IoSlot, PipelinedBackend, SlotPool, StageTimer, concat_outputs, is_device_array, split_batch
from ..engine.flavor import TRT_BACKENDS, TrtFlavor, runtime_only_flavors, trt_flavor
from ..engine.profiles import choose_profile, chunk_size, engine_profiles, no_profile_error
from .base import BackendBase, Feeds, normalize_feeds

__all__ = ["TensorRTBackend", "choose_flavors", "plan_contexts"]


# IO slots beyond the contexts: while the contexts compute, the upload stage stages and copies the next batches
# into free slots (one context: 4 slots, as ORT-CUDA's session has).
_EXTRA_SLOTS = 3


@dataclass
class _ContextState:
    """One execution context, its own compute stream, and what is already set on it (unchanged calls skip it).

    TensorRT: "calling enqueueV3() from the same IExecutionContext with different CUDA streams concurrently
    results in undefined behavior", so a context only ever runs on its own stream; the IO slot's stream
    (uploads, downloads) and this one are ordered with events.
    """

    context: Any
    allocator: Any
    stream: cuda.Stream
    done: cuda.Event
    # Data-dependent outputs live in the context's own buffers (TensorRT keeps using the memory its allocator
    # gave it while that is big enough), copied out on the context's stream before its next run can overwrite them.
    dynamic: cuda.BufferPool = field(default_factory=lambda: cuda.BufferPool("device"))
    profile: int = -1
    pinned: int | None = None  # the one profile this context may use (TensorRT without profile sharing)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    addresses: dict[str, int] = field(default_factory=dict)
    dynamic_ptrs: dict[str, int] = field(default_factory=dict)
    graphs: dict[tuple[Any, ...], cuda.CudaGraph] = field(default_factory=dict)

    def close(self) -> None:
        """Graphs and the context before the stream and event they use (callers synchronized the stream)."""
        for graph in self.graphs.values():
            graph.close()
        self.graphs.clear()
        self.context = self.allocator = None
        self.dynamic.close()
        self.done.close()
        self.stream.close()


def _sidecar(path: Path) -> dict[str, Any]:
    """The sidecar ``trtkit build`` wrote beside the engine ({} when there is none or it is stale)."""
    from ..engine.info import read_sidecar

    return read_sidecar(path) or {}


def _runtime_only(engine: EngineFile, side: dict[str, Any], missing: BackendUnavailable) -> list[TrtFlavor]:
    """Full TensorRT is not installed: the lean/dispatch runtimes, if present, for a version-compatible plan."""
    found = runtime_only_flavors()
    if not found:
        raise BackendUnavailable(f"{str(engine.path)!r} was built by TensorRT, which is not installed here. {missing}") from missing
    if side and not (side.get("flags") or {}).get("version_compatible"):
        names = " and ".join(f.pretty for f in found)
        raise EngineError(
            f"{str(engine.path)!r} is not version-compatible (its sidecar records a build without --versionCompatible), "
            f"and only {names} is installed here, which runs version-compatible engines only. Rebuild it with "
            f"trtkit build --versionCompatible (TensorRT 8.6+), or install full TensorRT {side.get('backend_version', '')}".rstrip()
        )
    return found


def choose_flavors(engine: EngineFile) -> list[TrtFlavor]:
    """TensorRT flavors to try, most likely first: sidecar, then the plan's magic tag, then whatever is installed.
    Without full TensorRT, a TensorRT plan goes to the lean/dispatch runtime when one is installed."""
    side = _sidecar(engine.path)
    wanted = side.get("backend") if side.get("backend") in TRT_BACKENDS else engine.flavor
    if wanted is not None:
        try:
            return [trt_flavor(wanted)]
        except BackendUnavailable as exc:
            if wanted == "tensorrt":
                return _runtime_only(engine, side, exc)
            raise BackendUnavailable(f"{str(engine.path)!r} was built by TensorRT-RTX, which is not installed here. {exc}") from exc
    found = []
    for name in TRT_BACKENDS:
        try:
            found.append(trt_flavor(name))
        except BackendUnavailable:
            continue
    found += runtime_only_flavors()
    if not found:
        trt_flavor("auto")  # raises the install hint
    return found


def plan_contexts(flavor: TrtFlavor, *, contexts: int, dynamic: bool, profiles: tuple[Any, ...],
                  built_with_sharing: bool, what: str) -> tuple[int, ...] | None:
    """Which profile each execution context is pinned to, or None when contexts may share profiles.

    See ``TrtFlavor.profile_sharing``: on TensorRT 8.5 (and 8.6/9.x engines built without
    PROFILE_SHARING_0806) concurrent contexts of a dynamic-shape engine need distinct profiles. Then
    context i owns profile i for good, which is only equivalent to sharing when those profiles are
    identical; otherwise this refuses, with the fix. Static engines have no profile to share.
    """
    if contexts == 1 or not dynamic or flavor.profile_sharing == "always":
        return None
    if flavor.profile_sharing == "preview" and built_with_sharing:
        return None
    reason = (f"{flavor.pretty} cannot share an optimization profile between execution contexts" if flavor.profile_sharing == "never"
              else f"{what} was not built with PROFILE_SHARING_0806 (trtkit build sets it on {flavor.pretty})")
    same = all(p == profiles[0] for p in profiles[:contexts])
    if len(profiles) >= contexts and same:
        return tuple(range(contexts))
    raise EngineError(
        f"RuntimeConfig(contexts={contexts}) on {what}: {reason}, so each concurrent context needs a profile of its "
        f"own, and the engine has {len(profiles)} profile(s){'' if same else ' with different ranges'}. Use contexts=1 "
        f"(bench: --infStreams=1), or rebuild it with {contexts} identical profiles (trtkit build ... --profile <shape "
        f"flags> repeated {contexts} times)" + (", or rebuild it with trtkit build on this TensorRT" if flavor.profile_sharing == "preview" else "")
    )


class TensorRTBackend(PipelinedBackend, BackendBase):
    """Run a serialized TensorRT or TensorRT-RTX engine. ``metadata`` holds the engine's metadata: Ultralytics'
    (stored in front of the plan) and the source ONNX model's ``metadata_props`` (recorded by ``trtkit build``)."""

    name = "tensorrt"
    # submit/infer_many: an upload stage (host staging + H2D on a free slot's stream) runs ahead of one compute
    # stage (enqueues each batch on a context's own stream) and a finish stage (waits for the D2H). Measured on an
    # H200 with TensorRT 8.5 before this: per-slot "upload, then run" workers reached 0.58 of compute-only (bs32).
    _staged = True

    def __init__(self, path: str | os.PathLike[str], *, config: RuntimeConfig) -> None:
        self.config = config
        engine_file = read_engine_file(path)
        self.path = engine_file.path
        side = _sidecar(self.path)
        self.metadata = {**(side.get("metadata") or {}), **(engine_file.metadata or {})} or None
        self.device = f"cuda:{config.device_id}"
        flavors = choose_flavors(engine_file)
        # Before any TensorRT object: a Runtime made without a usable CUDA driver segfaults when touched.
        try:
            cuda.ensure_device(config.device_id)
        except BackendUnavailable as exc:
            raise BackendUnavailable(
                f"engine {str(self.path)!r} cannot be loaded: no usable NVIDIA GPU/driver for "
                f"{' or '.join(f.pretty for f in flavors)} (engines run on the GPU only). {exc}"
            ) from None
        self.flavor, self._runtime, self._engine, self._logger = self._deserialize(engine_file, flavors)
        trt = self.flavor.module
        table = api.io_table(trt, self._engine)
        self._io_in = [t for t in table if t.is_input]
        self._io_out = [t for t in table if not t.is_input]
        self._inputs = tuple(TensorSpec(t.name, t.dtype.name, t.shape) for t in self._io_in)
        self._outputs = tuple(TensorSpec(t.name, t.dtype.name, t.shape) for t in self._io_out)
        count = max(1, max((len(t.profiles) for t in self._io_in), default=1))
        self._profiles = engine_profiles([(t.name, t.profiles) for t in self._io_in], count)
        self._dynamic = any(-1 in t.shape for t in self._io_in)
        self._pinned = plan_contexts(self.flavor, contexts=config.contexts, dynamic=self._dynamic, profiles=self._profiles,
                                     built_with_sharing=bool((side.get("flags") or {}).get("profile_sharing")),
                                     what=f"engine {str(self.path)!r}")
        self._contexts: SlotPool[_ContextState] = SlotPool([self._new_context(i) for i in range(config.contexts)])
        self._out_arrays = self._output_pool(config.contexts + _EXTRA_SLOTS)
        self._slots = SlotPool([self._new_slot() for _ in range(config.contexts + _EXTRA_SLOTS)])
        self._max_out = self._size_outputs(self._contexts.slots[0])
        self._reserve()

    # ------------------------------------------------------------ setup

    def _deserialize(self, engine_file: EngineFile, flavors: list[TrtFlavor]) -> tuple[TrtFlavor, Any, Any, Any]:
        errors: list[Exception] = []
        for flavor in flavors:
            try:
                runtime, engine, logger = api.deserialize(
                    flavor.module, engine_file.plan, plugins=self.config.plugins, what=f"engine {str(engine_file.path)!r}",
                    allow_host_code=flavor.runtime_allows_host_code,
                )
                return flavor, runtime, engine, logger
            except EngineError as exc:
                errors.append(exc)
        raise errors[-1] if len(errors) == 1 else EngineError(" / ".join(str(e) for e in errors))

    def _new_context(self, index: int) -> _ContextState:
        state = _ContextState(context=api.new_context(self._engine), allocator=None,
                              stream=cuda.Stream(device_id=self.config.device_id), done=cuda.Event(timing=False),
                              pinned=None if self._pinned is None else self._pinned[index])
        if not self._dynamic:  # static engine: profile 0 is every context's from creation; never ask for it
            state.profile = 0

        def alloc(name: str, nbytes: int) -> int:
            ptr = int(state.dynamic.get(name, nbytes).ptr)
            state.dynamic_ptrs[name] = ptr
            return ptr

        state.allocator = api.make_output_allocator(self.flavor.module, alloc)
        return state

    def _new_slot(self) -> IoSlot:
        slot = IoSlot(device_id=self.config.device_id, outputs=self._out_arrays)
        slot.extra["ready"] = cuda.Event(timing=False)  # recorded after the uploads; the context's stream waits on it
        return slot

    def _size_outputs(self, state: _ContextState) -> dict[str, int | None]:
        """Bytes per output at the largest input shapes of any profile; None = data-dependent."""
        sizes: dict[str, int | None] = {t.name: 0 for t in self._io_out}
        # Pinned contexts must not touch another context's profile (their profiles are identical anyway).
        indices = [state.pinned] if state.pinned is not None else range(len(self._profiles))
        for index in indices:
            profile = self._profiles[index]
            if self._dynamic:
                api.select_profile(state.context, index, state.stream.handle)
            for t in self._io_in:
                api.set_input_shape(state.context, t.name, profile[t.name].max if t.name in profile else t.shape)
            for t in self._io_out:
                shape = api.output_shape(state.context, t.name)
                if -1 in shape or sizes[t.name] is None:
                    sizes[t.name] = None
                else:
                    sizes[t.name] = max(int(sizes[t.name] or 0), int(np.prod(shape, dtype=np.int64)) * t.dtype.itemsize)
        state.stream.synchronize()
        state.profile = -1 if self._dynamic and state.pinned is None else (state.pinned or 0)
        state.shapes.clear()
        for t in self._io_out:
            if sizes[t.name] is None:
                api.attach_output_allocator(state.context, t.name, state.allocator)
        return sizes

    def _reserve(self) -> None:
        """Allocate every buffer once, at its largest size, so calls never allocate."""
        for state in self._contexts.slots[1:]:
            if state.pinned is not None:  # its own profile, once, for good
                api.select_profile(state.context, state.pinned, state.stream.handle)
                state.profile = state.pinned
            for t in self._io_out:
                if self._max_out[t.name] is None:
                    api.attach_output_allocator(state.context, t.name, state.allocator)
        biggest = {t.name: max((int(np.prod(p[t.name].max, dtype=np.int64)) for p in self._profiles if t.name in p), default=0)
                   * t.dtype.itemsize for t in self._io_in}
        for slot in self._slots.slots:
            for name, nbytes in biggest.items():
                slot.device.get("in/" + name, nbytes)
                slot.host.get("in/" + name, nbytes)
            for t in self._io_out:
                size = self._max_out[t.name]
                if size is not None:
                    slot.output_buffer(t.name, size)
                    slot.host.get("out/" + t.name, size)

    # ------------------------------------------------------------ Backend API

    @property
    def profiles(self) -> tuple[Any, ...]:
        return self._profiles

    def _prepare(self, feeds: Feeds) -> dict[str, Any]:
        return normalize_feeds(self._inputs, feeds, allow_device=True)

    def _pipelinable(self, feeds: Mapping[str, Any]) -> bool:
        """A batch no profile takes is chunked by ``_infer_prepared``, on a worker thread, not by the pipeline."""
        return choose_profile(self._profiles, _shapes(feeds), prefer=0) is not None

    def _infer_prepared(self, feeds: Mapping[str, Any], into: Mapping[str, np.ndarray] | None = None) -> dict[str, Any]:
        if self._pipelinable(feeds):  # one profile takes the whole batch
            return super()._infer_prepared(feeds, into)
        # chunked: the chunks' outputs are joined into new arrays (``into`` is a hint, see submit)
        shapes = _shapes(feeds)
        size = chunk_size(self._profiles, shapes)
        if size is None:
            raise no_profile_error(self._profiles, shapes, what=f"engine {str(self.path)!r}")
        parts = [super(TensorRTBackend, self)._infer_prepared(chunk) for chunk in split_batch(feeds, size)]
        join = functools.partial(_concat_device, device_id=self.config.device_id)
        return concat_outputs(parts, join if self.config.outputs_on_device else None)

    def _run_on(self, slot: IoSlot, feeds: Mapping[str, Any], timer: StageTimer | None, transfers: bool) -> dict[str, Any]:
        """The direct path of ``infer``/``timed_infer``: everything on the caller's thread, holding one context."""
        shapes = _shapes(feeds)
        with self._contexts.acquire() as state:
            self._select(state, shapes)
            ptrs = self._timed_upload(slot, feeds, timer, transfers)
            try:
                out_shapes = self._enqueue(slot, state, feeds, shapes, ptrs, timer)
                return self._timed_finish(slot, timer, transfers, lambda: self._issue_outputs(slot, state, out_shapes))
            except BaseException:
                _settle(slot, state)
                raise

    def _upload_stage(self, slot: IoSlot, feeds: Mapping[str, Any]) -> dict[str, int]:
        """Pipeline stage 1: stage and queue the H2D on the slot's stream (the host does not wait for it)."""
        return {name: slot.upload(name, value) for name, value in feeds.items()}

    def _compute_stage(self, slot: IoSlot, feeds: Mapping[str, Any], staged: dict[str, int]) -> Callable[[], dict[str, Any]]:
        """Pipeline stage 2 (one thread, in order): enqueue on a context, queue the D2H; the callable collects it."""
        shapes = _shapes(feeds)
        with self._contexts.acquire() as state:
            self._select(state, shapes)
            try:
                out_shapes = self._enqueue(slot, state, feeds, shapes, staged, None)
                result = self._issue_outputs(slot, state, out_shapes)  # reads data-dependent shapes while the context is ours
            except BaseException:
                _settle(slot, state)
                raise
        return functools.partial(self._collect, slot, result)

    def _select(self, state: _ContextState, shapes: dict[str, tuple[int, ...]]) -> None:
        """Choose the profile for these shapes and set them on the context (only what changed)."""
        if state.pinned is not None:
            profile = state.pinned if self._profiles[state.pinned].contains(shapes) else None
        else:
            profile = choose_profile(self._profiles, shapes, prefer=state.profile)
        if profile is None:
            raise no_profile_error(self._profiles, shapes, what=f"engine {str(self.path)!r}")
        if profile != state.profile:
            api.select_profile(state.context, profile, state.stream.handle)
            state.profile, state.shapes = profile, {}
        for name, shape in shapes.items():
            if state.shapes.get(name) != shape:
                api.set_input_shape(state.context, name, shape)
                state.shapes[name] = shape

    def _enqueue(self, slot: IoSlot, state: _ContextState, feeds: Mapping[str, Any], shapes: dict[str, tuple[int, ...]],
                 ptrs: Mapping[str, int], timer: StageTimer | None) -> dict[str, tuple[int, ...] | None]:
        """Bind the slot's buffers, run on the context's stream after the slot's uploads; the slot's stream
        waits for the run. Returns the output shapes (None = data-dependent, in the allocator)."""
        for name, ptr in ptrs.items():
            self._bind(state, name, ptr)
        out_shapes = self._bind_outputs(slot, state)
        ready: cuda.Event = slot.extra["ready"]
        ready.record(slot.stream)
        state.stream.wait(ready)
        self._execute(state, feeds, shapes)
        if timer is not None:
            timer.mark(2, state.stream)
        state.done.record(state.stream)
        slot.stream.wait(state.done)
        return out_shapes

    def _bind(self, state: _ContextState, name: str, ptr: int) -> None:
        if state.addresses.get(name) != ptr:
            api.set_address(state.context, name, ptr)
            state.addresses[name] = ptr

    def _bind_outputs(self, slot: IoSlot, state: _ContextState) -> dict[str, tuple[int, ...] | None]:
        out: dict[str, tuple[int, ...] | None] = {}
        for t in self._io_out:
            size = self._max_out[t.name]
            if size is None:
                out[t.name] = None  # known after execution, from the allocator
                continue
            out[t.name] = api.output_shape(state.context, t.name)
            self._bind(state, t.name, slot.output_buffer(t.name, size))
        return out

    def _execute(self, state: _ContextState, feeds: Mapping[str, Any], shapes: dict[str, Any]) -> None:
        static = all(size is not None for size in self._max_out.values())
        if not (self.config.cuda_graph and static and not any(is_device_array(v) for v in feeds.values())):
            api.execute(state.context, state.stream.handle, self._logger)
            return
        # A graph replays the addresses it was captured with: one graph per (profile, shapes, addresses), so the
        # IO slots each get theirs and none is ever stale (slot buffers are reserved once and never move).
        key = (state.profile, tuple(sorted(shapes.items())), tuple(sorted(state.addresses.items())))
        graph = state.graphs.get(key)
        if graph is not None:
            graph.launch(state.stream)
            return
        api.execute(state.context, state.stream.handle, self._logger)  # first run done normally (TensorRT's lazy setup)
        state.graphs[key] = cuda.CudaGraph(state.stream, lambda: api.execute(state.context, state.stream.handle, self._logger))

    def _issue_outputs(self, slot: IoSlot, state: _ContextState, out_shapes: dict[str, tuple[int, ...] | None]) -> dict[str, Any]:
        """Queue the copy of every output on the slot's stream (D2H, or D2D into new DeviceArrays)."""
        device_out = self.config.outputs_on_device
        result: dict[str, Any] = {}
        on_context = False
        for t in self._io_out:
            shape = out_shapes[t.name]
            stream = None
            if shape is None:  # the context's own buffer: copied on its stream, ordered before its next run
                shape, ptr, stream, on_context = state.allocator.shapes[t.name], state.dynamic_ptrs[t.name], state.stream, True
                need, held = int(np.prod(shape, dtype=np.int64)) * t.dtype.itemsize, state.dynamic.size_of(t.name)
                if need > held:
                    raise EngineError(
                        f"engine {str(self.path)!r}: data-dependent output {t.name!r} holds {need} bytes, but "
                        f"{self.flavor.pretty} asked its output allocator for {held} at most. TensorRT 8.5 asks with "
                        "the previous run's size (measured), so an output larger than every earlier one overflows; "
                        "run the largest input first after loading, or use TensorRT 8.6 or newer"
                    )
            else:
                ptr = slot.output_buffer(t.name, int(self._max_out[t.name] or 0))
            if device_out:
                result[t.name] = slot.to_device_array(ptr, shape, t.dtype, stream=stream)
            else:
                slot.download(t.name, ptr, shape, t.dtype, stream=stream)
        if on_context:  # the slot's stream (which collect() waits for) also waits for those copies
            state.done.record(state.stream)
            slot.stream.wait(state.done)
        return result

    def _release(self) -> None:
        self._quiesce_io()  # no call in flight, no work queued on the slots: nothing below is still in use
        self._contexts.drain()
        for state in self._contexts.slots:
            state.stream.synchronize()
        self._contexts.close()  # graphs and contexts before the buffers and streams they use
        self._close_io()
        self._engine = self._runtime = None


def _settle(slot: IoSlot, state: _ContextState) -> None:
    """After a failure mid-call: wait until the context's queued work is done, so the slot and context
    go back to their pools with nothing still writing into the slot's buffers."""
    state.done.record(state.stream)
    slot.stream.wait(state.done)
    slot.stream.synchronize()


def _shapes(feeds: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    return {n: tuple(int(d) for d in a.shape) for n, a in feeds.items()}


def _concat_device(parts: list[Any], *, device_id: int) -> Any:
    """Concatenate DeviceArrays along axis 0 into a new DeviceArray (device to device)."""
    first = parts[0]
    shape = (sum(p.shape[0] for p in parts),) + tuple(first.shape[1:])
    buf = cuda.DeviceBuffer(int(np.prod(shape, dtype=np.int64)) * first.dtype.itemsize)
    with cuda.Stream(device_id=device_id) as stream:
        offset = 0
        for part in parts:
            cuda.copy_dtod_async(buf.ptr + offset, part.ptr, part.nbytes, stream)
            offset += part.nbytes
            stream.synchronize()
            part.close()
    return cuda.DeviceArray(buf, shape, first.dtype)
