"""ONNX Runtime on the CUDA execution provider, with IO binding and the shared buffer manager.

Plain ``session.run`` with numpy copies inputs from pageable memory and
allocates outputs every call (YOLOv8n bs32 on an H200: 28 ms against 9.3 ms
device-resident). Here inputs go numpy -> pinned staging (parallel copy) ->
device buffers owned per slot, outputs are bound to device buffers sized from
the first call of each input-shape set, and ORT runs on a stream trtkit owns
(``user_compute_stream``), so CUDA events time each stage, and several slots
overlap the staging and copies of one batch with the compute of another:
``submit``/``infer_many`` feed an upload thread that stages into free slots ahead
and ONE compute thread that runs the batches in order (ORT releases the GIL while
it runs); ``infer`` stays a direct call on the caller's thread. Runs keep ORT's
default end-of-run synchronization (see ``_release`` for why). Results are
copies, as in the TensorRT backend.
"""

from __future__ import annotations

import functools
import math
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from . import cuda
from ..errors import DTypeError, SpecError, Spelling
from ..spec import RuntimeConfig
from ._device_io import IoSlot, PipelinedBackend, SlotPool, StageTimer
from .base import Feeds, normalize_feeds
from .onnxruntime import OnnxRuntimeBackend, ort_errors

__all__ = ["OrtCudaBackend"]

_CUDA_EP = "CUDAExecutionProvider"
_Key = tuple[tuple[str, tuple[int, ...]], ...]


def _numpy_dtype(name: str, *, output: str) -> np.dtype:
    try:
        return np.dtype(name)
    except TypeError as exc:
        raise DTypeError(
            f"output {output!r} has type {name}, which numpy cannot hold, so the ONNX Runtime CUDA backend "
            "cannot bind it to a buffer; add a Cast to float32/float16 at the end of the model"
        ) from exc


@dataclass
class _Binding:
    """One slot's IO binding and what is bound on it, so a call with the same pointers and
    shapes as the last one binds nothing (each bind is a Python -> C++ round trip)."""

    binding: Any
    inputs_ready: cuda.Event
    compute_done: cuda.Event
    inputs: dict[str, tuple[int, tuple[int, ...]]] = field(default_factory=dict)
    outputs: dict[str, tuple[int, tuple[int, ...]]] | None = None  # None: ORT allocates the outputs

    def forget(self) -> None:
        """After a failed run the binding's state is unknown: bind everything again next time."""
        self.binding.clear_binding_inputs()
        self.binding.clear_binding_outputs()
        self.inputs.clear()
        self.outputs = None

    def close(self) -> None:
        self.binding = None  # ORT's objects first (ORT-allocated outputs live in the binding)
        self.inputs_ready.close()
        self.compute_done.close()


class OrtCudaBackend(PipelinedBackend, OnnxRuntimeBackend):
    """ONNX Runtime CUDA EP with IO binding. ``contexts`` = slots (at least 4, so the stages overlap)."""

    name = "onnxruntime-cuda"
    _staged = True  # one session: submit/infer_many go through an upload stage and one compute stage

    def __init__(self, path: str | os.PathLike[str], *, config: RuntimeConfig) -> None:
        if config.cuda_graph or config.plugins:
            options = {
                "cuda_graph": Spelling(python="cuda_graph=True", cli="--cuda-graph") if config.cuda_graph else None,
                "plugins": Spelling(python=f"plugins={list(config.plugins)}", cli=f"--plugins {' '.join(config.plugins)}")
                if config.plugins else None,
            }
            given = {k: v for k, v in options.items() if v is not None}
            raise SpecError(
                "the ONNX Runtime CUDA backend does not support " + ", ".join(f"{{{k}}}" for k in given)
                + "; drop them, or build a TensorRT engine where they apply",
                spellings=given,
            )
        cuda.ensure_device(config.device_id)
        self._compute = cuda.Stream(device_id=config.device_id)  # before the session: _providers() names it
        super().__init__(path, config=config)
        self._device_id = config.device_id
        self._out_shapes: dict[_Key, dict[str, tuple[int, ...]]] = {}
        self._ort_allocated: set[_Key] = set()  # shape sets whose outputs depend on data
        self._shape_lock = threading.Lock()
        # ORT's default run options on purpose: each run ends by synchronizing the compute stream and
        # releasing the pinned buffers its kernels used. With "disable_synchronize_execution_providers"
        # ORT keeps those buffers until the session is destroyed and then frees them from a CUDA host
        # callback, which aborts the process (cudaFreeHost -> error 800; see _release). Slots still
        # overlap: a run blocks only its own worker thread, the other slots upload meanwhile.
        self._run_options = self._ort.RunOptions()
        # ORT's default graph id, set explicitly: unset, ORT's Python wrapper looks it up through a C++
        # exception on every run (about 60 us per call measured on an H200 host).
        self._run_options.add_run_config_entry("gpu_graph_id", "0")
        self._in_dtypes = {s.name: np.dtype(s.dtype) for s in self._inputs}  # inputs are numpy types (checked at load)
        self._out_dtypes = {s.name: _numpy_dtype(s.dtype, output=s.name) for s in self._outputs}
        # submit/infer_many: one slot uploading, one computing, one finishing, one spare (buffers grow on first use)
        count = max(4, config.contexts)
        self._out_arrays = self._output_pool(count)
        self._slots = SlotPool([self._new_slot() for _ in range(count)])

    def _providers(self) -> list[Any]:
        preload = getattr(self._ort, "preload_dlls", None)
        if preload is not None:  # onnxruntime-gpu >= 1.21 finds pip-installed CUDA/cuDNN this way
            preload()
        providers = super()._providers()
        opts = {"device_id": str(self.config.device_id), "user_compute_stream": str(self._compute.handle), "has_user_compute_stream": "1"}
        return [(_CUDA_EP, opts) if (p[0] if isinstance(p, tuple) else p) == _CUDA_EP else p for p in providers]

    def _new_slot(self) -> IoSlot:
        slot = IoSlot(device_id=self.config.device_id, outputs=self._out_arrays)
        slot.extra["ort"] = _Binding(self.session.io_binding(), cuda.Event(timing=False), cuda.Event(timing=False))
        return slot

    def _prepare(self, feeds: Feeds) -> dict[str, Any]:
        return normalize_feeds(self._inputs, feeds, allow_device=True)

    def _run_on(self, slot: IoSlot, feeds: Mapping[str, Any], timer: StageTimer | None, transfers: bool) -> dict[str, Any]:
        """The direct path of ``infer``/``timed_infer``: upload, run and download on the caller's thread."""
        state: _Binding = slot.extra["ort"]
        ptrs = self._timed_upload(slot, feeds, timer, transfers)
        shapes = self._run_uploaded(slot, state, feeds, ptrs, timer)
        return self._timed_finish(slot, timer, transfers, lambda: self._issue_outputs(slot, state, shapes))

    def _upload_stage(self, slot: IoSlot, feeds: Mapping[str, Any]) -> dict[str, int]:
        """Pipeline stage 1: inputs on the device when this returns (the host waits for the copy:
        measured on an H200, a compute stage that runs only uploaded batches keeps the GPU busier
        than one whose stream waits on an event for the upload)."""
        ptrs = {name: slot.upload(name, value) for name, value in feeds.items()}
        slot.stream.synchronize()
        return ptrs

    def _compute_stage(self, slot: IoSlot, feeds: Mapping[str, Any], staged: dict[str, int]) -> Callable[[], dict[str, Any]]:
        """Pipeline stage 2 (one thread, in order): run, queue the D2H; the returned callable collects it."""
        state: _Binding = slot.extra["ort"]
        shapes = self._run_uploaded(slot, state, feeds, staged, None)
        result = self._issue_outputs(slot, state, shapes)
        return functools.partial(self._collect, slot, result)

    def _run_uploaded(
        self, slot: IoSlot, state: _Binding, feeds: Mapping[str, Any], ptrs: Mapping[str, int], timer: StageTimer | None
    ) -> dict[str, tuple[int, ...]] | None:
        state.inputs_ready.record(slot.stream)
        self._compute.wait(state.inputs_ready)  # GPU-side: the host does not wait for the upload
        key: _Key = tuple((n, tuple(v.shape)) for n, v in feeds.items())
        try:
            self._bind_inputs(state, key, ptrs)
            shapes = self._run_bound(slot, state, key, feeds)
        except BaseException:
            state.forget()
            raise
        if timer is not None:
            timer.mark(2, self._compute)
        state.compute_done.record(self._compute)
        slot.stream.wait(state.compute_done)
        return shapes

    def _bind_inputs(self, state: _Binding, key: _Key, ptrs: Mapping[str, int]) -> None:
        for name, shape in key:
            bound = (ptrs[name], shape)
            if state.inputs.get(name) != bound:  # bind_input replaces an earlier binding of the same name
                state.binding.bind_input(name, "cuda", self._device_id, self._in_dtypes[name], list(shape), bound[0])
                state.inputs[name] = bound

    def _run_bound(self, slot: IoSlot, state: _Binding, key: _Key, feeds: Mapping[str, Any]) -> dict[str, tuple[int, ...]] | None:
        """Run with outputs in our buffers when their shapes are known; None = ORT allocated them."""
        with self._shape_lock:
            known = None if key in self._ort_allocated else self._out_shapes.get(key)
        if known is None:
            state.binding.clear_binding_outputs()  # ORT allocates afresh, for whatever shapes this run has
            for spec in self._outputs:
                state.binding.bind_output(spec.name, "cuda", self._device_id)
            state.outputs = None
        else:
            self._bind_outputs(slot, state, known)
        try:
            self.session.run_with_iobinding(state.binding, self._run_options)
        except ort_errors() as exc:
            if known is None:
                raise self._run_error(dict(feeds), exc) from exc
            with self._shape_lock:  # output shapes vary with the data: let ORT allocate from now on
                self._ort_allocated.add(key)
            return self._run_bound(slot, state, key, feeds)
        if known is None and key not in self._ort_allocated:
            values = state.binding.get_outputs()
            with self._shape_lock:
                self._out_shapes[key] = {s.name: tuple(int(d) for d in v.shape()) for s, v in zip(self._outputs, values)}
        return known

    def _bind_outputs(self, slot: IoSlot, state: _Binding, known: Mapping[str, tuple[int, ...]]) -> None:
        if state.outputs is None:  # from ORT-allocated outputs to ours: start from an empty output list
            state.binding.clear_binding_outputs()
            state.outputs = {}
        for spec in self._outputs:
            shape = known[spec.name]
            dtype = self._out_dtypes[spec.name]
            bound = (slot.output_buffer(spec.name, math.prod(shape) * dtype.itemsize), shape)
            if state.outputs.get(spec.name) != bound:
                state.binding.bind_output(spec.name, "cuda", self._device_id, dtype, list(shape), bound[0])
                state.outputs[spec.name] = bound

    def _issue_outputs(self, slot: IoSlot, state: _Binding, shapes: dict[str, tuple[int, ...]] | None) -> dict[str, Any]:
        """Queue the copy of every output on the slot stream (D2H, or D2D into new DeviceArrays)."""
        values: Any = state.binding.get_outputs() if shapes is None else None
        result: dict[str, Any] = {}
        for i, spec in enumerate(self._outputs):
            dtype = self._out_dtypes[spec.name]
            if shapes is None:  # ORT allocated the outputs (first call of these shapes, or data-dependent)
                shape, ptr = tuple(int(d) for d in values[i].shape()), int(values[i].data_ptr())
            else:
                shape = shapes[spec.name]
                ptr = state.outputs[spec.name][0]  # type: ignore[index]  # bound by _bind_outputs
            if self.config.outputs_on_device:
                result[spec.name] = slot.to_device_array(ptr, shape, dtype)
            else:
                slot.download(spec.name, ptr, shape, dtype)
        return result

    def _release(self) -> None:
        """Finish every call and all queued GPU work, release ORT's objects, then free ours.

        (The abort this used to hit: ORT frees the pinned argument buffers of kernels such as
        Concat/Split from a host function on the compute stream, holding a reference to its
        pinned-memory arena. Runs with ``disable_synchronize_execution_providers`` left those
        buffers queued until the session was destroyed; the host function then dropped the last
        reference and ``cudaFreeHost`` ran inside the CUDA callback, where every CUDA call fails
        with cudaErrorNotPermitted (800). Runs now use ORT's default, which releases them per run.)
        """
        self._quiesce_io()
        self._compute.synchronize()
        for slot in self._slots.slots:
            state = slot.extra.pop("ort", None)
            if state is not None:
                state.close()
        self._run_options = None
        super()._release()  # drops the session
        self._compute.synchronize()
        self._close_io()
        self._compute.close()

    def __repr__(self) -> str:
        return f"OrtCudaBackend({str(self.path)!r}, device_id={self.config.device_id}, slots={len(self._slots.slots)})"
