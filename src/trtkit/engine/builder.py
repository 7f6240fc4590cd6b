"""The TensorRT builder calls of ``trtkit build``: progress bar, ONNX parser, builder config, network I/O.

One implementation serves TensorRT 8.5 to 11 (``tensorrt``) and TensorRT-RTX
(``tensorrt_rtx``): where they differ, ``flavor.py`` decides (network flags, which
options exist). The module is passed in as ``trt`` so nothing here imports
TensorRT at module level.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import IO, Any, Sequence

from ..errors import BuildError
from ..atomic import write_bytes_atomic
from ..spec import BuildConfig, ShapeProfile
from .build_options import BuilderOptions
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
    if not hasattr(trt, "IProgressMonitor"):  # TRT 8.5/8.6 have no progress API (flavor.has_progress_monitor)
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


def configure(trt: Any, builder: Any, network: Any, config: Any, *, profiles: Sequence[ShapeProfile],
              options: BuilderOptions, workspace_bytes: int | None) -> dict[str, Any]:
    """Apply profiles and builder settings to a builder config; return what the sidecar records."""
    if not profiles:  # static network: one fixed profile. TensorRT 8.5 refuses to build a network with a
        # data-dependent shape (NonZero, NMS) without any profile ("need profile"); fixed is what it is anyway.
        opt = builder.create_optimization_profile()
        for index in range(network.num_inputs):
            tensor = network.get_input(index)
            if not tensor.is_shape_tensor:
                shape = tuple(int(d) for d in tensor.shape)
                opt.set_shape(tensor.name, shape, shape, shape)
        config.add_optimization_profile(opt)
    for index, profile in enumerate(profiles):
        opt = builder.create_optimization_profile()
        for name, r in profile.ranges:
            opt.set_shape(name, r.min, r.opt, r.max)
        if config.add_optimization_profile(opt) < 0:
            raise BuildError(f"TensorRT refused optimization profile {index} ({profile.describe()}); check it against the model")
    for flag in options.flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    if not options.tf32:
        config.clear_flag(trt.BuilderFlag.TF32)
    record: dict[str, Any] = {"tf32": bool(config.get_flag(trt.BuilderFlag.TF32))}
    if options.tactic_edits:
        mask = int(config.get_tactic_sources())
        for name, enable in options.tactic_edits:
            bit = 1 << int(getattr(trt.TacticSource, name))
            mask = mask | bit if enable else mask & ~bit
        if not config.set_tactic_sources(mask):
            raise BuildError(f"TensorRT refused the tactic sources {options.tactic_edits}; check --tacticSources")
    mask = int(config.get_tactic_sources())
    names = getattr(trt.TacticSource, "__members__", {})
    record["tactic_sources"] = sorted(n for n, m in names.items() if mask & (1 << int(m)))
    if options.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if options.exclude_lean_runtime:
        config.set_flag(trt.BuilderFlag.EXCLUDE_LEAN_RUNTIME)
    if options.hardware_level is not None:
        config.hardware_compatibility_level = getattr(trt.HardwareCompatibilityLevel, options.hardware_level)
    if options.profile_sharing:
        config.set_preview_feature(trt.PreviewFeature.PROFILE_SHARING_0806, True)
    record.update(version_compatible=options.version_compatible, exclude_lean_runtime=options.exclude_lean_runtime,
                  hardware_compatibility=options.hardware_level or "NONE", profile_sharing=options.profile_sharing)
    if options.optimization_level is not None:
        config.builder_optimization_level = options.optimization_level
    if workspace_bytes is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if hasattr(trt, "ProfilingVerbosity"):  # per-layer details for `trtkit inspect` / --dumpLayerInfo
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    return record


def apply_io_formats(trt: Any, network: Any, options: BuilderOptions) -> None:
    """trtexec --inputIOFormats/--outputIOFormats on a weakly typed network: I/O dtype + linear layout."""
    for count, get, types, flag in ((network.num_inputs, network.get_input, options.input_formats, "--inputIOFormats"),
                                    (network.num_outputs, network.get_output, options.output_formats, "--outputIOFormats")):
        if not types:
            continue
        if len(types) not in (1, count):
            raise BuildError(f"{flag} gives {len(types)} formats but the network has {count} tensors; give one per "
                             "tensor in order, or one for all")
        for index in range(count):
            tensor = get(index)
            tensor.dtype = getattr(trt, types[0] if len(types) == 1 else types[index])
            tensor.allowed_formats = 1 << int(trt.TensorFormat.LINEAR)


def network_io(trt: Any, network: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(inputs, outputs) of the parsed network as sidecar dicts (shape with -1 for dynamic dims)."""
    def tensor(t: Any) -> dict[str, Any]:
        return {"name": t.name, "dtype": dtype_name(trt, t.dtype), "shape": [int(d) for d in t.shape]}

    return (
        [tensor(network.get_input(i)) for i in range(network.num_inputs)],
        [tensor(network.get_output(i)) for i in range(network.num_outputs)],
    )


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


# Builds stopped by Ctrl-C, with the TensorRT objects they use: kept alive for the rest of the process,
# because TensorRT may still call back into them (seen with TensorRT-RTX: phase_start/log from its own
# threads after build_serialized_network returned cancelled). Process exit must then skip interpreter
# finalization, or those callbacks abort it: the CLI leaves with os._exit (cli/build.py).
_interrupted: list[tuple[threading.Thread, tuple[Any, ...]]] = []


def _build_interruptibly(builder: Any, network: Any, config: Any, monitor: Any | None, *, device: int | None = None) -> Any:
    """``build_serialized_network`` on a worker thread, so Ctrl-C reaches the main thread at once.

    The binding releases the GIL while building (all versions), so the main thread keeps handling
    signals. On Ctrl-C: with a progress monitor (9.0+, RTX) the build is cancelled (``step_complete``
    returns False) and waited for; without one (8.5/8.6) nothing can stop it, so it is abandoned: the
    thread finishes in the background and its result is dropped. Either way KeyboardInterrupt
    propagates and nothing has been written.
    """
    result: dict[str, Any] = {}
    done = threading.Event()

    def work() -> None:
        try:
            if device is not None:  # the builder's CUDA context, current here too: a new thread has none, and
                from ..backends.cuda import ensure_device  # TensorRT warns "The CUDA context changed between

                ensure_device(device)  # createInferBuilder and buildSerializedNetwork" (seen with 8.5 on an H200)
            result["host"] = builder.build_serialized_network(network, config)
        except BaseException as exc:  # handed to the main thread below
            result["error"] = exc
        finally:
            done.set()

    thread = threading.Thread(target=work, name="trtkit-build", daemon=True)
    # The main thread waits on an Event, never in Thread.join(): on Python 3.11, a Ctrl-C landing inside join()'s
    # lock wait makes join release the still-running thread's state lock (the bpo-45274 handler), and join can then
    # raise RuntimeError "release unlocked lock" instead of KeyboardInterrupt; the CLI then finalised the interpreter
    # while the build thread still called back into Python, and the process aborted (seen once in CI).
    try:
        thread.start()
        while not done.wait(0.1):
            pass
    except KeyboardInterrupt:
        _interrupted.append((thread, (builder, network, config, monitor)))
        if monitor is not None:
            monitor.interrupted = True  # step_complete now returns False: TensorRT stops at its next step
            try:
                done.wait()
            except KeyboardInterrupt:  # a second Ctrl-C: stop waiting
                pass
        raise
    if monitor is not None and monitor.interrupted:  # Ctrl-C seen inside a callback on this thread
        raise KeyboardInterrupt
    if "error" in result:
        raise result["error"]
    return result.get("host")


def run_builder(flavor: Any, *, onnx_path: Path, data: bytes | None, options: BuildConfig, plan: PrecisionPlan,
                builder_options: BuilderOptions, profiles: Sequence[ShapeProfile], plugins: Sequence[Path],
                timing_cache: Path | None) -> tuple[bytes, list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """Parse, configure and build; returns (engine bytes, inputs, outputs, recorded settings).
    ``data`` replaces the file's bytes."""
    trt = flavor.module
    if not flavor.is_rtx:  # full TensorRT builds for the current CUDA device
        from ..backends.cuda import ensure_device

        ensure_device(options.device)
    logger = shared_logger(trt, verbose=options.verbose)
    logger.take()  # drop errors of earlier, unrelated calls
    logger.interrupted = False
    builder = trt.Builder(logger)
    load_plugins(trt, logger, [str(p) for p in plugins], error=BuildError)
    network = builder.create_network(flavor.network_flags(strongly_typed=plan.strongly_typed))
    parse_onnx(trt, logger, network, path=onnx_path, data=data)
    logger.check_interrupt()
    apply_io_formats(trt, network, builder_options)
    config = builder.create_builder_config()
    record = configure(trt, builder, network, config, profiles=profiles, options=builder_options,
                       workspace_bytes=options.workspace_bytes)
    _attach_timing_cache(config, timing_cache)
    show = options.progress if options.progress is not None else sys.stderr.isatty()
    monitor = progress_monitor(trt, show=show)
    if monitor is not None:
        config.progress_monitor = monitor
    host = _build_interruptibly(builder, network, config, monitor, device=None if flavor.is_rtx else options.device)
    logger.check_interrupt()
    if host is None:
        raise BuildError(
            f"{flavor.backend} {flavor.version} could not build an engine from {str(onnx_path)!r}: "
            f"{logger.last_errors() or 'no error was logged'}. Run with --verbose for TensorRT's full log"
        )
    _save_timing_cache(config, timing_cache)
    return bytes(memoryview(host)), *network_io(trt, network), record
