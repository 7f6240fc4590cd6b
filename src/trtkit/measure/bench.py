"""Latency and throughput measurement with trtexec's definitions.

What is measured, and why it matches trtexec (TensorRT's ``sampleReporting``):

- Warm-up runs for ``warmup_ms``; then timing runs for at least ``duration_s``
  AND at least ``iterations`` (trtexec's ``--warmUp``/``--duration``/``--iterations``).
- Backends with ``timed_infer`` (the GPU backends) report each inference's
  H2D, GPU compute and D2H times from CUDA events and the host enqueue time;
  Latency = H2D + compute + D2H, as trtexec's "Latency". Other backends are
  timed on the host around ``infer`` (what a caller sees).
- Throughput = queries / total host walltime (first timed query start to last
  end); items/s = throughput x batch.
- Percentiles use trtexec's rule (sorted, drop ``int((1 - p/100) * n)`` from
  the top), so p99 of fewer than 100 samples is the max, and we say so.

Several models are measured interleaved in round-robin blocks
(:func:`benchmark_many`) so that ratios between them are fair on a noisy
machine: a burst of background load hits all of them alike.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Any, Mapping, Sequence


from .bench_types import (
    ENQUEUE_BOUND_RATIO,
    GPU_COV_LIMIT,
    HOST_OUTLIER_RATIO,
    MIN_ITERATIONS,
    BatchResult,
    BenchConfig,
    BenchHooks,
    BenchInterrupted,
    BenchProgress,
    BenchResult,
    BenchTarget,
    Stats,
)
from .report import describe_environment
from .timing import Run, axis0, check_transfers, make_feeds, make_step, measure_interleaved, plan_shapes
from ..errors import BackendUnavailable, BenchError, CudaError, EngineError
from ..spec import RuntimeConfig, Shape, format_shapes

__all__ = [
    "BenchConfig",
    "BenchTarget",
    "BenchResult",
    "BatchResult",
    "Stats",
    "BenchHooks",
    "BenchProgress",
    "BenchInterrupted",
    "benchmark",
    "benchmark_many",
    "benchmark_models",
    "MIN_ITERATIONS",
]

def benchmark(backend: Any, *, config: BenchConfig = BenchConfig(), label: str | None = None,
              hooks: BenchHooks = BenchHooks()) -> BenchResult:
    """Benchmark an open backend (from :func:`trtkit.load`)."""
    return benchmark_many({label or backend.name: backend}, config=config, hooks=hooks)[0]


def benchmark_models(targets: Sequence[BenchTarget], *, config: BenchConfig = BenchConfig(),
                     hooks: BenchHooks = BenchHooks()) -> tuple[BenchResult, ...]:
    """Open every target, benchmark them interleaved, close them. The first run is the baseline of ratios.

    With ``hooks.skipped``, a target that cannot start on this machine (its backend is not installed, no
    usable GPU, an engine built for another GPU or TensorRT) is reported there and the others run; the first
    that starts is the baseline. Mistakes in the request (a missing file, shapes a model does not take,
    options a backend does not support) still raise before anything is measured.
    """
    from ..backends import load

    if not targets:
        raise BenchError("no model to benchmark; give a model path (or several with --compare)")
    labels = _unique_labels(targets)
    with contextlib.ExitStack() as stack:
        backends: dict[str, Any] = {}
        paths: dict[str, str] = {}
        for label, target in zip(labels, targets):
            try:
                backend = stack.enter_context(load(target.model, backend=target.backend, config=_runtime_for(target, config)))
            except _CANNOT_START as exc:
                if hooks.skipped is None or len(targets) == 1:
                    raise
                hooks.skipped(label, exc)
                continue
            backends[label], paths[label] = backend, str(target.model)
        if not backends:
            raise BenchError(f"none of the {len(targets)} runs could start (each was reported as it was skipped); nothing was measured")
        results = benchmark_many(backends, config=config, hooks=hooks)
    return tuple(replace(r, model=paths[r.label]) for r in results)


_CANNOT_START = (BackendUnavailable, CudaError, EngineError)  # the machine, not the request: skippable in a comparison


def benchmark_many(backends: Mapping[str, Any], *, config: BenchConfig = BenchConfig(),
                   hooks: BenchHooks = BenchHooks()) -> tuple[BenchResult, ...]:
    """Benchmark several open backends in one process, interleaved in round-robin blocks.

    All shapes are checked against every backend before anything runs. Each
    batch size is measured for all backends before moving to the next. Ctrl-C
    raises :class:`BenchInterrupted` holding the sweep points already finished.
    """
    if not backends:
        raise BenchError("benchmark_many() got no backends; pass {label: backend}")
    labels = list(backends)
    plans = {label: plan_shapes(be, config=config, label=label) for label, be in backends.items()}
    for label, be in backends.items():
        check_transfers(be, config=config, label=label)
    environments = {label: describe_environment(backends[label]) for label in labels}
    per_batch: dict[str, list[BatchResult]] = {label: [] for label in labels}

    def results() -> tuple[BenchResult, ...]:
        return tuple(
            BenchResult(label=label, config=config, environment=environments[label], results=tuple(per_batch[label]),
                        model=_model_path(backends[label]))
            for label in labels
        )

    if hooks.started is not None:
        hooks.started(results())
    points = len(plans[labels[0]])
    try:
        for k in range(points):
            feeds = {label: make_feeds(backends[label], shapes=plans[label][k][1], config=config) for label in labels}
            steps = {label: make_step(backends[label], feeds=feeds[label], config=config) for label in labels}
            measured = measure_interleaved(steps, config=config, tick=_progress_tick(hooks, k, points, plans[labels[0]][k][0]),
                                           interval_s=hooks.progress_interval_s)
            for label in labels:
                batch, shapes = plans[label][k]
                actual = {n: tuple(int(d) for d in a.shape) for n, a in feeds[label].items()}
                per_batch[label].append(_summarize(measured[label], batch=batch or axis0(actual), shapes=actual, config=config, label=label))
            if hooks.batch_done is not None:
                hooks.batch_done(results())
    except KeyboardInterrupt:
        finished = min(len(v) for v in per_batch.values())
        for label in labels:
            del per_batch[label][finished:]  # a point counts only when every run finished it
        raise BenchInterrupted(results()) from None
    return results()


def _progress_tick(hooks: BenchHooks, point: int, points: int, batch: int | None) -> Any:
    if hooks.progress is None:
        return None
    report = hooks.progress

    def tick(label: str, phase: str, elapsed: float, target: float, iterations: int) -> None:
        report(BenchProgress(point=point, points=points, batch=batch, label=label, phase=phase,
                             elapsed_s=elapsed, target_s=target, iterations=iterations))

    return tick


def _runtime_for(target: BenchTarget, config: BenchConfig) -> RuntimeConfig:
    """GPU backends run ``--streams`` concurrent inferences on as many contexts (TensorRT) or IO slots (ORT CUDA);
    ONNX Runtime on the CPU shares one session (its ``run`` is thread-safe), so its config is left as given."""
    from ..backends import ENGINE_SUFFIXES

    engine = target.backend == "tensorrt" or (target.backend == "auto" and str(target.model).lower().endswith(ENGINE_SUFFIXES))
    if (engine or target.runtime.device == "cuda") and config.streams > target.runtime.contexts:
        return replace(target.runtime, contexts=config.streams)
    return target.runtime


def _model_path(backend: Any) -> str | None:
    path = getattr(backend, "path", None)
    return str(path) if path is not None else None


def _unique_labels(targets: Sequence[BenchTarget]) -> list[str]:
    labels = [t.label or f"{_basename(t.model)}@{t.backend}{'' if t.runtime.device == 'cpu' else ':' + t.runtime.device}" for t in targets]
    dupes = sorted({label for label in labels if labels.count(label) > 1})
    if dupes:
        raise BenchError(f"the compared runs {dupes} are identical; compare different models or backends (MODEL@BACKEND)")
    return labels


def _basename(path: str) -> str:
    return str(path).replace("\\", "/").rsplit("/", 1)[-1]


# ------------------------------------------------------------ summary

def _summarize(run: Run, *, batch: int | None, shapes: dict[str, Shape], config: BenchConfig, label: str) -> BatchResult:
    what = f"{label} at {format_shapes(shapes)}"
    host = [wall for wall, _ in run.samples]
    stages = [st for _, st in run.samples if st is not None]
    if stages and len(stages) != len(host):
        raise BenchError(f"{what}: the backend returned stage times for only some iterations; no figures reported (a bug)")
    latencies = [st.latency_ms for st in stages] if stages else host
    result = BatchResult(
        batch=batch,
        shapes=shapes,
        iterations=len(run.samples),
        warmup_iterations=run.warmup_iterations,
        warmup_s=run.warmup_s,
        walltime_s=run.walltime_s,
        latency=Stats.of(latencies, what=what),
        timing="cuda-events" if stages else "host",
        raw_latency_ms=tuple(latencies) if config.keep_raw else (),
    )
    if stages:
        result = replace(
            result,
            host_latency=Stats.of(host, what=what),
            enqueue=Stats.of([s.enqueue_ms for s in stages], what=what),
            h2d=Stats.of([s.h2d_ms for s in stages], what=what),
            compute=Stats.of([s.compute_ms for s in stages], what=what),
            d2h=Stats.of([s.d2h_ms for s in stages], what=what),
        )
    if result.walltime_s <= 0:
        raise BenchError(f"{what}: the measured walltime is {result.walltime_s} s; the clock is broken, no figures reported")
    return replace(result, warnings=_warnings(result, config))


def _warnings(r: BatchResult, config: BenchConfig) -> tuple[str, ...]:
    """trtexec's bottleneck and stability warnings, plus ours about coarse percentiles."""
    out = []
    if r.enqueue and r.compute and r.enqueue.median > ENQUEUE_BOUND_RATIO * r.compute.median:
        out.append(
            f"throughput may be bound by enqueue time (median {r.enqueue.median:.4g} ms vs GPU compute "
            f"{r.compute.median:.4g} ms); try --cuda-graph or more --streams"
        )
    if r.h2d and r.compute and config.transfers and r.h2d.median >= r.compute.median:
        out.append(f"throughput may be bound by host-to-device copies of the inputs (median {r.h2d.median:.4g} ms); "
                   "--no-data-transfers shows the compute alone")
    if r.d2h and r.compute and config.transfers and r.d2h.median >= r.compute.median:
        out.append(f"throughput may be bound by device-to-host copies of the outputs (median {r.d2h.median:.4g} ms); "
                   "--no-data-transfers shows the compute alone")
    if r.compute and r.compute.cov > GPU_COV_LIMIT:
        out.append(f"GPU compute time is unstable (coefficient of variation {r.compute.cov:.1%}); "
                   "locking the GPU clocks may make it stable")
    lat = r.latency
    if r.compute is None and lat.mean > HOST_OUTLIER_RATIO * lat.median:
        out.append(f"outliers pull the mean latency ({lat.mean:.4g} ms) {lat.mean / lat.median - 1:.0%} above the median "
                   f"({lat.median:.4g} ms; max {lat.max:.4g} ms); other programs may be competing for the CPU: "
                   "compare medians, close them, or set --threads")
    if r.iterations < 100:
        out.append(f"p99 of {r.iterations} iterations is the maximum; run 100 or more (--iterations 100) for a real p99")
    return tuple(out)
