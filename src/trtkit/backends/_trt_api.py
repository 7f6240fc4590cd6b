"""Every TensorRT call the runtime makes, in one place.

TensorRT cannot run without a GPU, so this module is what the CPU test suite
checks against the real ``tensorrt_rtx`` binding classes: ``tests/test_tensorrt_runtime.py``
parses this file, finds each attribute used on a role variable (``ROLES``)
and checks that the binding class has it and accepts the arguments given.
``backends/tensorrt.py`` must not touch TensorRT objects itself (a test checks
that too). Only the tensor-name API (TensorRT 8.6 through 11 and TensorRT-RTX)
is used; the binding API that TensorRT 10 removed is not.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..errors import BackendUnavailable, EngineError

if TYPE_CHECKING:  # type-checked against tensorrt stubs (tests/test_typecheck.py)
    import tensorrt as trt_types

__all__ = ["ROLES", "IoTensor", "CapturingLogger", "deserialize", "io_table", "new_context", "make_output_allocator"]

# Variable name in this module -> TensorRT class it holds. The call-site test reads this table.
ROLES: dict[str, str] = {
    "trt": "<module>",
    "runtime": "Runtime",
    "engine": "ICudaEngine",
    "context": "IExecutionContext",
    "registry": "IPluginRegistry",
    "allocator_base": "IOutputAllocator",
    "logger_base": "ILogger",
}


@dataclass(frozen=True)
class IoTensor:
    """One engine I/O tensor. ``shape`` has -1 for dynamic dims; ``profiles`` holds (min, opt, max) per profile (inputs only)."""

    name: str
    is_input: bool
    dtype: np.dtype
    shape: tuple[int, ...]
    profiles: tuple[tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]], ...]


_loggers: dict[str, Any] = {}
_loggers_lock = threading.Lock()


def shared_logger(trt: ModuleType) -> Any:
    """The process-wide capturing logger for a TensorRT module.

    Older TensorRT keeps the first logger a process registers and ignores later
    ones, so builder and runtime must share one to see each other's errors.
    """
    with _loggers_lock:
        if trt.__name__ not in _loggers:
            _loggers[trt.__name__] = make_logger(trt)
        return _loggers[trt.__name__]


def make_logger(trt: ModuleType) -> Any:
    """A TensorRT ILogger that keeps ERROR/INTERNAL_ERROR messages so failures can quote them."""
    logger_base = trt.ILogger

    class _Logger(logger_base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            logger_base.__init__(self)
            self.errors: list[str] = []
            self._lock = threading.Lock()

        def log(self, severity: Any, msg: str) -> None:
            if severity in (logger_base.ERROR, logger_base.INTERNAL_ERROR):
                with self._lock:
                    self.errors.append(str(msg))

        def take(self) -> list[str]:
            with self._lock:
                out, self.errors = self.errors, []
            return out

    return _Logger()


CapturingLogger = Any  # the class is built at runtime from trt.ILogger


def load_plugins(trt: ModuleType, runtime: "trt_types.Runtime", plugins: Sequence[str]) -> None:
    registry = runtime.get_plugin_registry()
    for lib in plugins:
        if registry.load_library(str(lib)) is None:
            raise EngineError(
                f"plugin library {lib!r} could not be loaded by TensorRT (missing file, wrong TensorRT version, "
                "or its plugins are already registered); check the path and that it was built for this TensorRT"
            )


def deserialize(trt: ModuleType, plan: bytes, *, plugins: Sequence[str], what: str) -> tuple[Any, Any, Any]:
    """Return (runtime, engine, logger). Raises EngineError/BackendUnavailable quoting TensorRT's own errors."""
    logger = shared_logger(trt)
    logger.take()  # drop errors of earlier, unrelated calls
    runtime = trt.Runtime(logger)
    load_plugins(trt, runtime, plugins)
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise explain_failure(logger.take(), what=what, version=str(getattr(trt, "__version__", "?")), rtx=trt.__name__ == "tensorrt_rtx")
    return runtime, engine, logger


def explain_failure(errors: list[str], *, what: str, version: str, rtx: bool) -> Exception:
    """Turn TensorRT's logged errors into one clear trtkit error (the cause first, TensorRT's words after)."""
    text = " | ".join(errors) or "TensorRT logged no error"
    low = text.lower()
    name = "TensorRT-RTX" if rtx else "TensorRT"
    if "compute capability" in low or "incompatible device" in low or "expecting compute" in low:
        hint = (
            "TensorRT-RTX runs on RTX (Ampere and newer GeForce/workstation) GPUs, not on data-centre GPUs such as "
            "Hopper; use full TensorRT there (pip install 'trtkit[trt]') and build the engine with it"
            if rtx
            else "engines are tied to the GPU architecture they were built on; rebuild the engine on this GPU "
            "(or build with a hardware-compatibility level)"
        )
        return EngineError(f"{what} cannot run on this GPU: {name} {version} refused it. {hint}. TensorRT said: {text}")
    if "magic" in low or "serialization version" in low or "version tag" in low or "incompatible" in low:
        return EngineError(
            f"{what} was not built by {name} {version} (serialization version/magic mismatch): engines only load "
            f"with the exact TensorRT version that built them. Rebuild it with this version (trtkit build), "
            f"or install the TensorRT that built it. TensorRT said: {text}"
        )
    if "plugin" in low:
        return EngineError(
            f"{what} needs a TensorRT plugin that is not loaded; pass its library with --plugins / "
            f"RuntimeConfig(plugins=(...)). TensorRT said: {text}"
        )
    if "header.size" in low or "blobsize" in low or "truncat" in low:
        return EngineError(f"{what} is truncated or corrupt (its size does not match its header); rebuild it. TensorRT said: {text}")
    if "cudaerror 35" in low or "driver version is insufficient" in low or "no cuda-capable device" in low or "cudaerror 100" in low:
        return BackendUnavailable(
            f"{what} cannot be loaded: no usable NVIDIA GPU/driver for {name} {version}. "
            f"Install or update the NVIDIA driver (nvidia-smi must work). TensorRT said: {text}"
        )
    return EngineError(f"{what} could not be deserialized by {name} {version}. TensorRT said: {text}")


def _dims(value: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in value)


def io_table(trt: ModuleType, engine: "trt_types.ICudaEngine") -> tuple[IoTensor, ...]:
    """The engine's I/O tensors in engine order, with per-profile input ranges."""
    out = []
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        shape = _dims(engine.get_tensor_shape(name))
        if is_input and -1 in shape:
            profiles = tuple(
                tuple(_dims(d) for d in engine.get_tensor_profile_shape(name, p))
                for p in range(engine.num_optimization_profiles)
            )
        elif is_input:  # static input: the one shape is min, opt and max of every profile
            profiles = tuple((shape, shape, shape) for _ in range(engine.num_optimization_profiles))
        else:
            profiles = ()
        out.append(
            IoTensor(
                name=name,
                is_input=is_input,
                dtype=np.dtype(trt.nptype(engine.get_tensor_dtype(name))),
                shape=shape,
                profiles=profiles,  # type: ignore[arg-type]
            )
        )
    return tuple(out)


def new_context(engine: "trt_types.ICudaEngine") -> Any:
    context = engine.create_execution_context()
    if context is None:
        raise EngineError("TensorRT could not create an execution context (out of device memory?); use fewer contexts")
    return context


def select_profile(context: "trt_types.IExecutionContext", index: int, stream_handle: int) -> None:
    if not context.set_optimization_profile_async(index, stream_handle):
        raise EngineError(f"TensorRT refused optimization profile {index}; the engine may have fewer profiles")


def set_input_shape(context: "trt_types.IExecutionContext", name: str, shape: tuple[int, ...]) -> None:
    if not context.set_input_shape(name, shape):
        raise EngineError(f"TensorRT refused input shape {list(shape)} for {name!r} in the active profile")


def set_address(context: "trt_types.IExecutionContext", name: str, ptr: int) -> None:
    if not context.set_tensor_address(name, ptr):
        raise EngineError(f"TensorRT refused the device address of tensor {name!r}")


def output_shape(context: "trt_types.IExecutionContext", name: str) -> tuple[int, ...]:
    """Shape TensorRT inferred for an output from the current input shapes (-1 = data-dependent)."""
    return _dims(context.get_tensor_shape(name))


def execute(context: "trt_types.IExecutionContext", stream_handle: int, logger: Any) -> None:
    if not context.execute_async_v3(stream_handle):
        raise EngineError("TensorRT execution failed: " + (" | ".join(logger.take()) or "no message logged"))


def attach_output_allocator(context: "trt_types.IExecutionContext", name: str, allocator: Any) -> None:
    if not context.set_output_allocator(name, allocator):
        raise EngineError(f"TensorRT refused the output allocator for data-dependent output {name!r}")


def make_output_allocator(trt: ModuleType, alloc: Any) -> Any:
    """An IOutputAllocator for data-dependent outputs; ``alloc(name, nbytes) -> ptr`` (grow-only pool)."""
    allocator_base = trt.IOutputAllocator

    class _Allocator(allocator_base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            allocator_base.__init__(self)
            self.shapes: dict[str, tuple[int, ...]] = {}

        def reallocate_output(self, tensor_name: str, memory: int, size: int, alignment: int) -> int:
            return int(alloc(tensor_name, max(int(size), 1)))

        def reallocate_output_async(self, tensor_name: str, memory: int, size: int, alignment: int, stream: int) -> int:
            return int(alloc(tensor_name, max(int(size), 1)))

        def notify_shape(self, tensor_name: str, shape: Any) -> None:
            self.shapes[tensor_name] = _dims(shape)

    return _Allocator()
