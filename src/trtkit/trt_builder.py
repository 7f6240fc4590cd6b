"""The TensorRT side of ``trtkit build``: logger, progress bar, parser, builder config.

One implementation serves TensorRT 10/11 (``tensorrt``) and TensorRT-RTX
(``tensorrt_rtx``): their Python APIs match except where commented (search for
"RTX:" and "TRT 10:"). The module is passed in as ``trt`` so nothing here imports
TensorRT at module level.
"""

from __future__ import annotations

import ctypes
import logging
import sys
import time
from pathlib import Path
from typing import IO, Any, Sequence

from .errors import BuildError
from .spec import ShapeProfile

__all__ = ["trt_logger", "progress_monitor", "parse_onnx", "configure", "network_io", "load_plugins"]

_LOG = logging.getLogger("trtkit.tensorrt")


def trt_logger(trt: Any, *, verbose: bool = False, errors_as_info: bool = False) -> Any:
    """A ``trt.ILogger`` that routes TensorRT's messages into Python logging ("trtkit.tensorrt").

    Errors are also kept (``last_errors()``) so a failed build's exception can quote
    them. With ``errors_as_info`` they are logged at INFO: the caller raises them.
    """
    sev = trt.ILogger.Severity
    levels = {
        sev.INTERNAL_ERROR: logging.ERROR,
        sev.ERROR: logging.ERROR,
        sev.WARNING: logging.WARNING,
        sev.INFO: logging.INFO,
        sev.VERBOSE: logging.DEBUG,
    }
    errors = (sev.INTERNAL_ERROR, sev.ERROR)

    class _Logger(trt.ILogger):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            # TensorRT skips messages below min_severity, which keeps VERBOSE chatter cheap.
            self.min_severity = sev.VERBOSE if verbose else sev.INFO

        def log(self, severity: Any, msg: str) -> None:
            try:
                if severity in errors:
                    self.errors.append(msg.strip())
                level = logging.INFO if (errors_as_info and severity in errors) else levels.get(severity, logging.INFO)
                if _LOG.isEnabledFor(level):
                    _LOG.log(level, "%s", msg.rstrip())
            except KeyboardInterrupt:  # never let it unwind through C++; the progress monitor cancels the build
                pass

        def last_errors(self, n: int = 3) -> str:
            return " | ".join(e.replace("\n", " ") for e in self.errors[-n:])

    return _Logger()


def progress_monitor(trt: Any, *, show: bool, stream: IO[str] | None = None) -> Any | None:
    """A ``trt.IProgressMonitor`` drawing one progress line on stderr, or None where the version lacks it.

    It is installed even when hidden: returning False from ``step_complete`` is how
    Ctrl-C cancels a running build (the KeyboardInterrupt is caught in the callback,
    which must not raise into TensorRT, and re-raised after the build returns).
    """
    if not hasattr(trt, "IProgressMonitor"):  # TRT 10.0 and older have no progress API
        return None
    out = stream or sys.stderr

    class _Progress(trt.IProgressMonitor):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.phases: dict[str, list[Any]] = {}  # name -> [parent, steps, done]
            self.interrupted = False
            self._last = 0.0

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            try:
                self.phases[phase_name] = [parent_phase, max(int(num_steps), 1), 0]
                self._draw()
            except KeyboardInterrupt:
                self.interrupted = True

        def step_complete(self, phase_name: str, step: int) -> bool:
            try:
                if phase_name in self.phases:
                    self.phases[phase_name][2] = int(step) + 1
                self._draw()
            except KeyboardInterrupt:
                self.interrupted = True
            return not self.interrupted

        def phase_finish(self, phase_name: str) -> None:
            try:
                parent = self.phases.pop(phase_name, [None])[0]
                if parent is None and show:
                    out.write("\r\033[K")
                    out.flush()
            except KeyboardInterrupt:
                self.interrupted = True

        def _draw(self) -> None:
            now = time.monotonic()
            if not show or now - self._last < 0.1:
                return
            self._last = now
            top = [(n, p) for n, p in self.phases.items() if p[0] is None]
            if not top:
                return
            name, (_, steps, done) = top[0]
            inner = list(self.phases.items())[-1]
            frac = min(done / steps, 1.0)
            bar = "#" * int(frac * 24)
            detail = f" > {inner[0]} {inner[1][2]}/{inner[1][1]}" if inner[0] != name else ""
            out.write(f"\r\033[K[{bar:<24}] {name} {done}/{steps}{detail}"[:160])
            out.flush()

    return _Progress()


def load_plugins(trt: Any, logger: Any, builder: Any, plugins: Sequence[str]) -> None:
    """Register TensorRT's bundled plugins and load the user's plugin libraries."""
    # TRT 10/11: registers EfficientNMS_TRT, BatchedNMS_TRT... (libnvinfer_plugin). RTX: the function exists
    # but RTX ships no plugin library, so it registers nothing.
    if hasattr(trt, "init_libnvinfer_plugins"):
        trt.init_libnvinfer_plugins(logger, "")
    registry = builder.get_plugin_registry() if hasattr(builder, "get_plugin_registry") else trt.get_plugin_registry()
    for lib in plugins:
        if hasattr(registry, "load_library"):
            handle = registry.load_library(str(lib))
            ok = handle is not None
        else:  # older TensorRT: plugins register themselves from static initializers on dlopen
            try:
                ctypes.CDLL(str(lib))
                ok = True
            except OSError:
                ok = False
        if not ok:
            raise BuildError(
                f"plugin library {str(lib)!r} could not be loaded ({logger.last_errors() or 'dlopen failed'}); "
                "check it was built for this TensorRT version and that its own dependencies are on LD_LIBRARY_PATH"
            )


def _parser_error(err: Any, model: str) -> str:
    """One parser error with node name and op type (both APIs have node_name/node_operator since TRT 10)."""
    node_name = err.node_name() if hasattr(err, "node_name") else ""
    op = err.node_operator() if hasattr(err, "node_operator") else ""
    node = err.node() if hasattr(err, "node") else -1
    where = f"node {node_name or '#' + str(node)!r}" + (f" (op {op})" if op else "") if node >= 0 or node_name else "the model"
    return f"{where}: {err.desc().strip()} [{str(err.code()).rsplit('.', 1)[-1]}]"


def parse_onnx(trt: Any, logger: Any, network: Any, *, path: Path, data: bytes | None) -> None:
    """Parse the ONNX file (or converted ``data``) into ``network``; BuildError listing every parser error."""
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse_from_file(str(path)) if data is None else parser.parse(data, str(path))
    if ok:
        return
    errors = [_parser_error(parser.get_error(i), str(path)) for i in range(parser.num_errors)]
    unsupported = any("Plugin not found" in e or "No importer registered" in e for e in errors)
    hint = (
        "this op is neither a standard ONNX op the parser supports nor a registered plugin: load its plugin "
        "with --plugins lib.so, or replace the op before export"
        if unsupported
        else "check the model with `trtkit inspect`, or simplify it (onnxslim) before building"
    )
    raise BuildError(f"the TensorRT ONNX parser rejected {str(path)!r}: " + "; ".join(errors or [logger.last_errors()]) + f". {hint}")


def configure(trt: Any, builder: Any, config: Any, *, profiles: Sequence[ShapeProfile], flags: Sequence[str],
              optimization_level: int | None, workspace_bytes: int | None) -> None:
    """Apply profiles, builder flags, optimization level and workspace to a builder config."""
    for index, profile in enumerate(profiles):
        opt = builder.create_optimization_profile()
        for name, r in profile.ranges:
            opt.set_shape(name, r.min, r.opt, r.max)
        if config.add_optimization_profile(opt) < 0:
            raise BuildError(f"TensorRT refused optimization profile {index} ({profile.describe()}); check it against the model")
    for flag in flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    if optimization_level is not None:
        config.builder_optimization_level = optimization_level
    if workspace_bytes is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if hasattr(trt, "ProfilingVerbosity"):  # per-layer details for `trtkit inspect`
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED


def _dtype_name(trt: Any, dtype: Any) -> str:
    import numpy as np

    try:
        return np.dtype(trt.nptype(dtype)).name
    except TypeError:  # bfloat16, fp8, fp4: no numpy dtype
        return str(dtype).rsplit(".", 1)[-1].lower()


def network_io(trt: Any, network: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(inputs, outputs) of the parsed network as sidecar dicts (shape with -1 for dynamic dims)."""
    def tensor(t: Any) -> dict[str, Any]:
        return {"name": t.name, "dtype": _dtype_name(trt, t.dtype), "shape": [int(d) for d in t.shape]}

    return (
        [tensor(network.get_input(i)) for i in range(network.num_inputs)],
        [tensor(network.get_output(i)) for i in range(network.num_outputs)],
    )
