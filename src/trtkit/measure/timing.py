"""What :mod:`trtkit.measure.bench` runs: the input shapes per sweep point, and the timing loop.

The loop follows trtexec: warm up for ``warmup_ms``, then time for at least
``duration_s`` AND at least ``iterations``. Several backends alternate in
round-robin blocks of ``duration_s / BLOCK_FRACTION`` so that background load
on a noisy machine hits all of them alike and their ratios stay fair.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from ..errors import BenchError, ProfileError, ShapeError
from ..spec import Shape, ShapeProfile, TensorSpec, format_shape, format_shapes, validate_shapes

if TYPE_CHECKING:
    from .bench_types import BenchConfig

__all__ = ["BLOCK_FRACTION", "Step", "Tick", "Run", "plan_shapes", "axis0", "make_feeds", "check_transfers", "make_step", "measure_interleaved"]

BLOCK_FRACTION = 10  # interleaved runs alternate in blocks of duration / BLOCK_FRACTION


# ------------------------------------------------------------------ shapes

def plan_shapes(backend: Any, *, config: "BenchConfig", label: str) -> list[tuple[int | None, dict[str, Shape]]]:
    """[(batch, shapes)] per sweep point (batch None when not sweeping), checked against the model."""
    specs: tuple[TensorSpec, ...] = tuple(backend.inputs)
    if not config.batches:
        from .inputs import plan_shapes as default_shapes  # the generator's rule: a lone dynamic batch axis becomes 1

        shapes = default_shapes(specs, config.shapes).shapes
        _check_profiles(backend, shapes, label=label)
        return [(None, shapes)]
    plan: list[tuple[int | None, dict[str, Shape]]] = []
    for batch in config.batches:
        shapes = _batched_shapes(specs, given=config.shapes or {}, batch=batch)
        validate_shapes(specs, shapes, what=f"batch {batch}")
        _check_profiles(backend, shapes, label=label)
        plan.append((batch, shapes))
    return plan


def _batched_shapes(specs: Sequence[TensorSpec], *, given: Mapping[str, Shape], batch: int) -> dict[str, Shape]:
    names = [s.name for s in specs]
    for name in given:
        if name not in names:
            validate_shapes(specs, {name: given[name]}, what="--shapes")  # raises the usual unknown-name error
    shapes: dict[str, Shape] = {}
    for spec in specs:
        if spec.rank == 0:
            raise ShapeError(f"input {spec.name!r} is a scalar (shape []), so --batch cannot set its axis 0; drop --batch")
        axis0 = spec.shape[0]
        if isinstance(axis0, int) and axis0 != batch:
            raise ShapeError(
                f"--batch {batch}: input {spec.name!r} has static shape {spec.display_shape()}, so its batch axis is "
                f"fixed at {axis0}; use --batch {axis0}, or make axis 0 dynamic first with "
                f"`trtkit reshape --dynamic {spec.name}:0`"
            )
        shapes[spec.name] = (batch, *_rest_dims(spec, given=given.get(spec.name)))
    return shapes


def _rest_dims(spec: TensorSpec, *, given: Shape | None) -> Shape:
    """The non-batch dims of one input in a sweep: from --shapes (without axis 0) or the static dims."""
    rest = spec.shape[1:]
    example = format_shape([d if isinstance(d, int) else 640 for d in rest]) or "(nothing)"
    if given is not None:
        if len(given) == spec.rank:
            raise BenchError(
                f"--shapes gives {spec.name!r} the full shape {format_shape(given)}, which sets the batch that --batch "
                f"also sets; with --batch give --shapes without the batch axis, e.g. {spec.name}:{format_shape(given[1:])}"
            )
        if len(given) != spec.rank - 1:
            raise ShapeError(
                f"--shapes gives {spec.name!r} {len(given)} dims, but with --batch it takes the {spec.rank - 1} dims "
                f"after the batch axis of {spec.display_shape()}, e.g. {spec.name}:{example}"
            )
        return tuple(int(d) for d in given)
    if any(isinstance(d, str) for d in rest):
        raise ShapeError(
            f"input {spec.name!r} {spec.display_shape()} has dynamic dims besides the batch axis; give them with "
            f"--shapes without the batch axis, e.g. --shapes {spec.name}:{example}"
        )
    return tuple(int(d) for d in rest)  # type: ignore[arg-type]


def _check_profiles(backend: Any, shapes: Mapping[str, Shape], *, label: str) -> None:
    """Engines with optimization profiles: fail before running when no profile fits ``shapes``."""
    profiles = getattr(backend, "profiles", None) or ()
    relevant = [p for p in profiles if isinstance(p, ShapeProfile) and p.ranges]
    if not relevant or any(p.contains(shapes) for p in relevant):
        return
    listing = "; ".join(f"profile {i}: {p.describe()}" for i, p in enumerate(relevant))
    raise ProfileError(
        f"{label}: shapes {format_shapes(shapes)} fit no optimization profile of the engine ({listing}); "
        "use shapes within a profile, or rebuild the engine with a larger --maxShapes"
    )


def axis0(shapes: Mapping[str, Shape]) -> int | None:
    """The batch when every input has a rank >= 1 and they agree on axis 0."""
    firsts = {s[0] for s in shapes.values() if len(s) >= 1}
    if len(firsts) == 1 and all(len(s) >= 1 for s in shapes.values()):
        return int(next(iter(firsts)))
    return None


def make_feeds(backend: Any, *, shapes: Mapping[str, Shape], config: "BenchConfig") -> dict[str, np.ndarray]:
    from .inputs import generate_inputs

    return dict(generate_inputs(backend.inputs, shapes=shapes, seed=config.seed))


# ---------------------------------------------------------- measuring

Step = Callable[[], tuple[float, Any]]  # one inference -> (host wall ms, StageTimes | None)


def check_transfers(backend: Any, *, config: "BenchConfig", label: str) -> None:
    if not config.transfers and not hasattr(backend, "timed_infer"):
        raise BenchError(
            f"{label}: --no-data-transfers needs a GPU backend that keeps inputs and outputs on the device "
            f"(ort-cuda or tensorrt), but {backend.name!r} runs on the host; drop --no-data-transfers"
        )


def make_step(backend: Any, *, feeds: dict[str, np.ndarray], config: "BenchConfig") -> Step:
    clock = time.perf_counter
    timed = getattr(backend, "timed_infer", None)
    if timed is not None:
        transfers = config.transfers

        def gpu_step() -> tuple[float, Any]:
            t0 = clock()
            st = timed(feeds, transfers=transfers)
            return (clock() - t0) * 1e3, st

        return gpu_step
    infer = backend.infer

    def host_step() -> tuple[float, Any]:
        t0 = clock()
        infer(feeds)
        return (clock() - t0) * 1e3, None

    return host_step


@dataclass
class Run:
    """Samples of one backend accumulated over its blocks (mutable, private)."""

    samples: list[tuple[float, Any]] = field(default_factory=list)
    walltime_s: float = 0.0
    warmup_iterations: int = 0
    warmup_s: float = 0.0

    def done(self, config: "BenchConfig") -> bool:
        return self.walltime_s >= config.duration_s and len(self.samples) >= config.iterations


Tick = Callable[[str, str, float, float, int], None]  # (label, phase, elapsed s, target s, iterations) -> None


def measure_interleaved(steps: Mapping[str, Step], *, config: "BenchConfig", tick: Tick | None = None,
                        interval_s: float = 0.1) -> dict[str, Run]:
    """Warm every backend up, then alternate timed blocks until each has run long and often enough.

    ``tick`` (optional) hears where the loop is, at most every ``interval_s`` seconds, from inside the loop
    (one clock comparison per iteration when it is quiet).
    """
    runs = {label: Run() for label in steps}
    warm_s = config.warmup_ms / 1e3
    for label, step in steps.items():
        report = _block_tick(tick, label, "warm-up", warm_s, before_s=0.0, before_n=0)
        warm, wall = _run_block(step, seconds=warm_s, iterations=1 if config.warmup_ms > 0 else 0,
                                streams=config.streams, tick=report, interval_s=interval_s)
        runs[label].warmup_iterations, runs[label].warmup_s = len(warm), wall
    block_s = config.duration_s if len(steps) == 1 else config.duration_s / BLOCK_FRACTION
    while not all(r.done(config) for r in runs.values()):
        for label, step in steps.items():
            run = runs[label]
            need = max(config.iterations - len(run.samples), 1) if len(steps) == 1 else 1
            report = _block_tick(tick, label, "measure", config.duration_s, before_s=run.walltime_s, before_n=len(run.samples))
            samples, wall = _run_block(step, seconds=block_s, iterations=need, streams=config.streams,
                                       tick=report, interval_s=interval_s)
            run.samples += samples
            run.walltime_s += wall
    return runs


def _block_tick(tick: Tick | None, label: str, phase: str, target_s: float, *, before_s: float,
                before_n: int) -> Callable[[float, int], None] | None:
    """A block's (elapsed, iterations) made into the run's totals for ``tick``."""
    if tick is None:
        return None
    return lambda elapsed, n: tick(label, phase, before_s + elapsed, target_s, before_n + n)


def _run_block(step: Step, *, seconds: float, iterations: int, streams: int,
               tick: Callable[[float, int], None] | None = None, interval_s: float = 0.1) -> tuple[list[tuple[float, Any]], float]:
    """Run ``step`` for at least ``seconds`` and ``iterations`` (over all streams); return samples and walltime."""
    if seconds <= 0 and iterations <= 0:
        return [], 0.0
    if streams == 1:
        samples: list[tuple[float, Any]] = []
        clock = time.perf_counter
        start = clock()
        next_tick = start if tick is not None else float("inf")
        while True:
            samples.append(step())
            now = clock()
            if now >= next_tick:
                tick(now - start, len(samples))  # type: ignore[misc]
                next_tick = now + interval_s
            if len(samples) >= iterations and now - start >= seconds:
                return samples, now - start
    return _run_threads(step, seconds=seconds, iterations=iterations, streams=streams, tick=tick, interval_s=interval_s)


def _run_threads(step: Step, *, seconds: float, iterations: int, streams: int,
                 tick: Callable[[float, int], None] | None = None, interval_s: float = 0.1) -> tuple[list[tuple[float, Any]], float]:
    """``streams`` host threads call ``step`` concurrently (trtexec's --infStreams; the backend must be thread-safe)."""
    samples: list[tuple[float, Any]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    stop = threading.Event()
    start = time.perf_counter()

    def worker() -> None:
        try:
            while not stop.is_set():
                sample = step()
                with lock:
                    samples.append(sample)
                    if len(samples) >= iterations and time.perf_counter() - start >= seconds:
                        stop.set()
        except BaseException as exc:  # re-raised in the caller's thread below
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=worker, name=f"trtkit-bench-{i}", daemon=True) for i in range(streams)]
    for t in threads:
        t.start()
    try:
        while tick is not None and not stop.wait(interval_s):  # the main thread reports while the workers run
            tick(time.perf_counter() - start, len(samples))
        for t in threads:
            t.join()
    finally:  # Ctrl-C lands here in the main thread: let the workers finish their call before backends close
        stop.set()
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
    return samples, time.perf_counter() - start
