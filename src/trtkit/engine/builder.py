"""The TensorRT builder calls of ``trtkit build``: progress bar, ONNX parser, builder config, network I/O.

One implementation serves TensorRT 10/11 (``tensorrt``) and TensorRT-RTX
(``tensorrt_rtx``): their Python APIs match except where commented (search for
"RTX:" and "TRT 10:"). The module is passed in as ``trt`` so nothing here imports
TensorRT at module level.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import IO, Any, Sequence

from ..errors import BuildError
from ..atomic import write_bytes_atomic
from ..spec import BuildConfig, ShapeProfile
from .precision import PrecisionPlan
from .trt_api import dtype_name, load_plugins, shared_logger

__all__ = ["ROLES", "run_builder", "progress_monitor", "parse_onnx", "configure", "network_io"]

# Variable name in this module -> TensorRT class it holds (checked against the real bindings, see trt_api).
ROLES: dict[str, str] = {
    "trt": "<module>",
    "builder": "Builder",
    "config": "IBuilderConfig",
    "network": "INetworkDefinition",
    "parser": "OnnxParser",
    "opt": "IOptimizationProfile",
}



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


def network_io(trt: Any, network: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(inputs, outputs) of the parsed network as sidecar dicts (shape with -1 for dynamic dims)."""
    def tensor(t: Any) -> dict[str, Any]:
        return {"name": t.name, "dtype": dtype_name(trt, t.dtype), "shape": [int(d) for d in t.shape]}

    return (
        [tensor(network.get_input(i)) for i in range(network.num_inputs)],
        [tensor(network.get_output(i)) for i in range(network.num_outputs)],
    )


def _network_flags(trt: Any, plan: PrecisionPlan) -> int:
    # TRT 10: explicit batch is the only mode (EXPLICIT_BATCH is deprecated and ignored), so 0 is right.
    # TRT 11 / RTX: every network is strongly typed; the flag still exists in RTX and is harmless.
    if plan.strongly_typed and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return 0


def _attach_timing_cache(config: Any, path: Path | None) -> Any:
    if path is None:
        return None
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data)
    if not config.set_timing_cache(cache, False):  # a cache from another TensorRT/GPU: start a fresh one
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, False)
    return cache


def _save_timing_cache(config: Any, path: Path | None) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, bytes(memoryview(config.get_timing_cache().serialize())), what="timing cache")


def run_builder(flavor: Any, *, onnx_path: Path, data: bytes | None, options: BuildConfig, plan: PrecisionPlan,
                profiles: Sequence[ShapeProfile], plugins: Sequence[Path], timing_cache: Path | None
                ) -> tuple[bytes, list[dict[str, Any]], list[dict[str, Any]]]:
    """Parse, configure and build; returns (engine bytes, inputs, outputs). ``data`` replaces the file's bytes."""
    trt = flavor.module
    if not flavor.is_rtx:  # full TensorRT builds for the current CUDA device
        from ..backends.cuda import ensure_device

        ensure_device(options.device)
    logger = shared_logger(trt, verbose=options.verbose)
    logger.take()  # drop errors of earlier, unrelated calls
    builder = trt.Builder(logger)
    load_plugins(trt, logger, [str(p) for p in plugins], error=BuildError)
    network = builder.create_network(_network_flags(trt, plan))
    parse_onnx(trt, logger, network, path=onnx_path, data=data)
    config = builder.create_builder_config()
    configure(trt, builder, config, profiles=profiles, flags=plan.builder_flags,
              optimization_level=options.optimization_level, workspace_bytes=options.workspace_bytes)
    _attach_timing_cache(config, timing_cache)
    show = options.progress if options.progress is not None else sys.stderr.isatty()
    monitor = progress_monitor(trt, show=show)
    if monitor is not None:
        config.progress_monitor = monitor
    host = builder.build_serialized_network(network, config)
    if monitor is not None and monitor.interrupted:
        raise KeyboardInterrupt
    if host is None:
        raise BuildError(
            f"{flavor.backend} {flavor.version} could not build an engine from {str(onnx_path)!r}: "
            f"{logger.last_errors() or 'no error was logged'}. Run with --verbose for TensorRT's full log"
        )
    _save_timing_cache(config, timing_cache)
    return bytes(memoryview(host)), *network_io(trt, network)
