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
  replay static shapes (``RuntimeConfig.cuda_graph``); N contexts on N streams
  (``RuntimeConfig.contexts``) serve ``submit``/``infer_many`` concurrently.

Every TensorRT call lives in :mod:`trtkit.engine.trt_api`; version differences in :mod:`trtkit.engine.flavor`.
Engines always run on the GPU ``config.device_id``; ``config.device`` does not apply.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

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


@dataclass
class _ContextState:
    """Per-slot TensorRT state: what is already set on the context, so unchanged calls skip it."""

    context: Any
    allocator: Any
    profile: int = -1
    pinned: int | None = None  # the one profile this context may use (TensorRT without profile sharing)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    addresses: dict[str, int] = field(default_factory=dict)
    dynamic_ptrs: dict[str, int] = field(default_factory=dict)
    graphs: dict[tuple[Any, ...], cuda.CudaGraph] = field(default_factory=dict)

    def drop_graphs(self) -> None:
        for graph in self.graphs.values():
            graph.close()
        self.graphs.clear()


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
    """Run a serialized TensorRT or TensorRT-RTX engine. ``metadata`` holds Ultralytics metadata, if any."""

    name = "tensorrt"

    def __init__(self, path: str | os.PathLike[str], *, config: RuntimeConfig) -> None:
        self.config = config
        engine_file = read_engine_file(path)
        self.path = engine_file.path
        self.metadata = engine_file.metadata
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
        side = _sidecar(self.path)
        self._pinned = plan_contexts(self.flavor, contexts=config.contexts, dynamic=self._dynamic, profiles=self._profiles,
                                     built_with_sharing=bool((side.get("flags") or {}).get("profile_sharing")),
                                     what=f"engine {str(self.path)!r}")
        self._slots = SlotPool([self._new_slot(i) for i in range(config.contexts)])
        self._max_out = self._size_outputs(self._slots.slots[0])
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

    def _new_slot(self, index: int) -> IoSlot:
        slot = IoSlot(device_id=self.config.device_id)
        context = api.new_context(self._engine)
        state = _ContextState(context=context, allocator=None, pinned=None if self._pinned is None else self._pinned[index])
        if not self._dynamic:  # static engine: profile 0 is every context's from creation; never ask for it
            state.profile = 0

        def alloc(name: str, nbytes: int) -> int:
            ptr = slot.output_buffer(name, nbytes)
            state.dynamic_ptrs[name] = ptr
            return ptr

        state.allocator = api.make_output_allocator(self.flavor.module, alloc)
        slot.extra["trt"] = state
        return slot

    def _size_outputs(self, slot: IoSlot) -> dict[str, int | None]:
        """Bytes per output at the largest input shapes of any profile; None = data-dependent."""
        state: _ContextState = slot.extra["trt"]
        sizes: dict[str, int | None] = {t.name: 0 for t in self._io_out}
        # Pinned contexts must not touch another context's profile (their profiles are identical anyway).
        indices = [state.pinned] if state.pinned is not None else range(len(self._profiles))
        for index in indices:
            profile = self._profiles[index]
            if self._dynamic:
                api.select_profile(state.context, index, slot.stream.handle)
            for t in self._io_in:
                api.set_input_shape(state.context, t.name, profile[t.name].max if t.name in profile else t.shape)
            for t in self._io_out:
                shape = api.output_shape(state.context, t.name)
                if -1 in shape or sizes[t.name] is None:
                    sizes[t.name] = None
                else:
                    sizes[t.name] = max(int(sizes[t.name] or 0), int(np.prod(shape, dtype=np.int64)) * t.dtype.itemsize)
        slot.stream.synchronize()
        state.profile = -1 if self._dynamic and state.pinned is None else (state.pinned or 0)
        state.shapes.clear()
        for t in self._io_out:
            if sizes[t.name] is None:
                api.attach_output_allocator(state.context, t.name, state.allocator)
        return sizes

    def _reserve(self) -> None:
        """Allocate every buffer once, at its largest size, so calls never allocate."""
        for slot in self._slots.slots:
            state: _ContextState = slot.extra["trt"]
            if slot is not self._slots.slots[0]:
                if state.pinned is not None:  # its own profile, once, for good
                    api.select_profile(state.context, state.pinned, slot.stream.handle)
                    state.profile = state.pinned
                for t in self._io_out:
                    if self._max_out[t.name] is None:
                        api.attach_output_allocator(state.context, t.name, state.allocator)
            for t in self._io_in:
                biggest = max((int(np.prod(p[t.name].max, dtype=np.int64)) for p in self._profiles if t.name in p), default=0)
                slot.device.get("in/" + t.name, biggest * t.dtype.itemsize)
                slot.host.get("in/" + t.name, biggest * t.dtype.itemsize)
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

    def _infer_prepared(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        shapes = {n: tuple(int(d) for d in a.shape) for n, a in feeds.items()}
        if choose_profile(self._profiles, shapes, prefer=0) is not None:
            return super()._infer_prepared(feeds)
        size = chunk_size(self._profiles, shapes)
        if size is None:
            raise no_profile_error(self._profiles, shapes, what=f"engine {str(self.path)!r}")
        parts = [super(TensorRTBackend, self)._infer_prepared(chunk) for chunk in split_batch(feeds, size)]
        return concat_outputs(parts, None if not self.config.outputs_on_device else _concat_device)

    def _run_on(self, slot: IoSlot, feeds: Mapping[str, Any], timer: StageTimer | None, transfers: bool) -> dict[str, Any]:
        state: _ContextState = slot.extra["trt"]
        shapes = {n: tuple(int(d) for d in a.shape) for n, a in feeds.items()}
        if state.pinned is not None:
            profile = state.pinned if self._profiles[state.pinned].contains(shapes) else None
        else:
            profile = choose_profile(self._profiles, shapes, prefer=state.profile)
        if profile is None:
            raise no_profile_error(self._profiles, shapes, what=f"engine {str(self.path)!r}")
        if profile != state.profile:
            api.select_profile(state.context, profile, slot.stream.handle)
            state.profile, state.shapes = profile, {}
        if timer is not None:
            timer.mark(0, slot.stream)
        for name, value in feeds.items():
            if state.shapes.get(name) != shapes[name]:
                api.set_input_shape(state.context, name, shapes[name])
                state.shapes[name] = shapes[name]
            self._bind(state, name, slot.upload(name, value))
        if timer is not None:
            if not transfers:
                slot.stream.synchronize()
            timer.mark(1, slot.stream)
        out_shapes = self._bind_outputs(slot, state)
        self._execute(slot, state, feeds, shapes)
        if timer is not None:
            timer.mark(2, slot.stream)
        return self._finish(slot, state, out_shapes, timer, transfers)

    def _bind(self, state: _ContextState, name: str, ptr: int) -> None:
        if state.addresses.get(name) != ptr:
            api.set_address(state.context, name, ptr)
            state.addresses[name] = ptr
            state.drop_graphs()  # a captured graph holds the old address

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

    def _execute(self, slot: IoSlot, state: _ContextState, feeds: Mapping[str, Any], shapes: dict[str, Any]) -> None:
        static = all(size is not None for size in self._max_out.values())
        use_graph = self.config.cuda_graph and static and not any(is_device_array(v) for v in feeds.values())
        key = (state.profile, tuple(sorted(shapes.items())))
        graph = state.graphs.get(key) if use_graph else None
        if graph is not None:
            graph.launch(slot.stream)
            return
        api.execute(state.context, slot.stream.handle, self._logger)
        if use_graph:  # first run of these shapes done normally (TensorRT's lazy setup), captured for the next ones
            state.graphs[key] = cuda.CudaGraph(slot.stream, lambda: api.execute(state.context, slot.stream.handle, self._logger))

    def _finish(
        self, slot: IoSlot, state: _ContextState, out_shapes: dict[str, tuple[int, ...] | None], timer: StageTimer | None, transfers: bool
    ) -> dict[str, Any]:
        if timer is not None and not transfers:  # trtexec --noDataTransfers: outputs stay where they are
            timer.mark(3, slot.stream)
            timer.enqueue_ms = (time.perf_counter() - timer.t0) * 1e3
            slot.stream.synchronize()
            return {}
        device_out = self.config.outputs_on_device
        result: dict[str, Any] = {}
        for t in self._io_out:
            shape = out_shapes[t.name]
            if shape is None:
                shape = state.allocator.shapes[t.name]
                ptr = state.dynamic_ptrs[t.name]
            else:
                ptr = slot.output_buffer(t.name, int(self._max_out[t.name] or 0))
            if device_out:
                result[t.name] = slot.to_device_array(ptr, shape, t.dtype)
            else:
                slot.download(t.name, ptr, shape, t.dtype)
        if timer is not None:
            timer.mark(3, slot.stream)
            timer.enqueue_ms = (time.perf_counter() - timer.t0) * 1e3
        if device_out:
            slot.stream.synchronize()
            return result
        return slot.collect()

    def _release(self) -> None:
        self._quiesce_io()  # no call in flight, no work queued: nothing below is still in use
        for slot in self._slots.slots:  # graphs and contexts before the buffers and streams they use
            slot.extra["trt"].drop_graphs()
            slot.extra.clear()
        self._close_io()
        self._engine = self._runtime = None


def _concat_device(parts: list[Any]) -> Any:
    """Concatenate DeviceArrays along axis 0 into a new DeviceArray (device to device)."""
    first = parts[0]
    shape = (sum(p.shape[0] for p in parts),) + tuple(first.shape[1:])
    buf = cuda.DeviceBuffer(int(np.prod(shape, dtype=np.int64)) * first.dtype.itemsize)
    with cuda.Stream() as stream:
        offset = 0
        for part in parts:
            cuda.copy_dtod_async(buf.ptr + offset, part.ptr, part.nbytes, stream)
            offset += part.nbytes
            stream.synchronize()
            part.close()
    return cuda.DeviceArray(buf, shape, first.dtype)
