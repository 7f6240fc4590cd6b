"""The TensorRT calls shared by build, inspect and run: one logger, one plugin loader, one deserialize,
one dtype map, and every call the runtime makes on an engine or execution context.

TensorRT cannot run without a GPU, so the CPU test suite checks this module (and ``builder.py`` and
``info.py``, which hold the builder's and the inspector's calls) against the real ``tensorrt_rtx``
binding classes: ``tests/test_tensorrt_runtime.py`` parses each file, finds every attribute used on a
role variable (``ROLES``) and checks that the binding class has it and accepts the arguments given.
``backends/tensorrt.py`` must not touch TensorRT objects itself (a test checks that too). Only the
tensor-name API (TensorRT 8.5 through 11 and TensorRT-RTX) is used; the binding API that TensorRT 10
removed is not.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..errors import BackendUnavailable, EngineError

if TYPE_CHECKING:  # type-checked against tensorrt stubs (tests/test_typecheck.py)
    import tensorrt as trt_types

__all__ = [
    "ROLES",
    "IoTensor",
    "shared_logger",
    "load_plugins",
    "deserialize",
    "dtype_name",
    "io_table",
    "new_context",
    "make_output_allocator",
]

_LOG = logging.getLogger("trtkit.tensorrt")

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


def shared_logger(trt: ModuleType, *, verbose: bool | None = None) -> Any:
    """The process-wide logger for a TensorRT module, shared by builder, runtime and inspector.

    Older TensorRT keeps the first logger a process registers and ignores later ones, so they must
    share one to see each other's errors. ``verbose`` (when given) sets whether VERBOSE messages
    are produced at all; TensorRT skips messages below ``min_severity``, which keeps chatter cheap.
    """
    with _loggers_lock:
        if trt.__name__ not in _loggers:
            _loggers[trt.__name__] = _make_logger(trt)
        logger = _loggers[trt.__name__]
    if verbose is not None:
        logger.min_severity = trt.ILogger.Severity.VERBOSE if verbose else trt.ILogger.Severity.INFO
    return logger


def _make_logger(trt: ModuleType) -> Any:
    """An ILogger that routes TensorRT's messages into Python logging ("trtkit.tensorrt") and keeps its
    errors, so a failure can quote them. Errors are logged at INFO: the caller raises them as trtkit errors."""
    logger_base = trt.ILogger
    sev = logger_base.Severity
    levels = {sev.INTERNAL_ERROR: logging.INFO, sev.ERROR: logging.INFO, sev.WARNING: logging.WARNING,
              sev.INFO: logging.INFO, sev.VERBOSE: logging.DEBUG}

    class _Logger(logger_base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            logger_base.__init__(self)
            self.errors: list[str] = []
            self._lock = threading.Lock()
            self.min_severity = sev.INFO
            self.interrupted = False  # Ctrl-C arrived inside a callback; the caller re-raises it (check_interrupt)

        def log(self, severity: Any, msg: str) -> None:
            try:
                if severity in (sev.ERROR, sev.INTERNAL_ERROR):
                    with self._lock:
                        self.errors.append(str(msg).strip())
                level = levels.get(severity, logging.INFO)
                if _LOG.isEnabledFor(level):
                    _LOG.log(level, "%s", str(msg).rstrip())
            except KeyboardInterrupt:  # never let it unwind through C++: kept, and re-raised by check_interrupt()
                self.interrupted = True

        def check_interrupt(self) -> None:
            """Re-raise a Ctrl-C that arrived while TensorRT was calling back into this logger (parsing runs the
            logger on the main thread, where the signal lands)."""
            if self.interrupted:
                self.interrupted = False
                raise KeyboardInterrupt

        def take(self) -> list[str]:
            """The errors logged since the last take (and forget them)."""
            with self._lock:
                out, self.errors = self.errors, []
            return out

        def last_errors(self, n: int = 3) -> str:
            with self._lock:
                return " | ".join(e.replace("\n", " ") for e in self.errors[-n:])

    return _Logger()


def load_plugins(trt: ModuleType, logger: Any, plugins: Sequence[str], *, error: type[Exception] = EngineError) -> None:
    """Register TensorRT's bundled plugins, then load the user's plugin libraries (for build and run alike).

    ``trt.get_plugin_registry()`` is the one registry call every version has (8.5 has no
    ``Runtime.get_plugin_registry``). ``init_libnvinfer_plugins`` registers EfficientNMS_TRT and friends
    on full TensorRT; TensorRT-RTX and the lean runtime ship no plugin library (it is absent or registers nothing).
    """
    if hasattr(trt, "init_libnvinfer_plugins"):
        trt.init_libnvinfer_plugins(logger, "")
    if not plugins:
        return
    registry = trt.get_plugin_registry()
    for lib in plugins:
        if hasattr(registry, "load_library"):
            ok = registry.load_library(str(lib)) is not None
        else:  # TensorRT < 8.6: plugins register themselves from static initializers on dlopen
            try:
                ctypes.CDLL(str(lib))
                ok = True
            except OSError:
                ok = False
        if not ok:
            raise error(
                f"plugin library {str(lib)!r} could not be loaded by TensorRT ({logger.last_errors() or 'dlopen failed'}): "
                "check the path, that it was built for this TensorRT version, and that its own dependencies are "
                "on LD_LIBRARY_PATH"
            )


def deserialize(trt: ModuleType, plan: bytes, *, plugins: Sequence[str], what: str,
                allow_host_code: bool = False) -> tuple[Any, Any, Any]:
    """Return (runtime, engine, logger). Raises EngineError/BackendUnavailable quoting TensorRT's own errors.

    ``allow_host_code`` (``TrtFlavor.runtime_allows_host_code``, 8.6+): version-compatible plans embed
    their lean runtime, which TensorRT only loads when the runtime allows host code (as Polygraphy does).
    The caller checks CUDA first: a Runtime made without a usable driver segfaults when touched.
    """
    logger = shared_logger(trt)
    logger.take()  # drop errors of earlier, unrelated calls
    runtime = trt.Runtime(logger)
    if allow_host_code:
        runtime.engine_host_code_allowed = True
    load_plugins(trt, logger, plugins)
    engine = runtime.deserialize_cuda_engine(plan)
    logger.check_interrupt()
    if engine is None:
        raise explain_failure(logger.take(), what=what, version=str(getattr(trt, "__version__", "?")),
                              rtx=trt.__name__ == "tensorrt_rtx", lean="lean" in trt.__name__ or "dispatch" in trt.__name__)
    return runtime, engine, logger


def explain_failure(errors: list[str], *, what: str, version: str, rtx: bool, lean: bool = False) -> Exception:
    """Turn TensorRT's logged errors into one clear trtkit error (the cause first, TensorRT's words after)."""
    text = " | ".join(errors) or "TensorRT logged no error"
    low = text.lower()
    name = "TensorRT-RTX" if rtx else "TensorRT"
    if lean:
        return EngineError(
            f"{what} could not be loaded by the TensorRT lean/dispatch runtime {version}, which runs only engines "
            f"built with --versionCompatible by TensorRT 8.6+ no newer than itself. Rebuild it with trtkit build "
            f"--versionCompatible, or install full TensorRT. TensorRT said: {text}"
        )
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


def dtype_name(trt: ModuleType, dtype: Any) -> str:
    """The one TensorRT-dtype -> name map: numpy's name where numpy has the type, else TensorRT's own
    (``bfloat16``, ``fp8``, ``fp4`` have no numpy dtype)."""
    try:
        return np.dtype(trt.nptype(dtype)).name
    except TypeError:
        return str(dtype).rsplit(".", 1)[-1].lower()


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
