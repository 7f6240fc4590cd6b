"""The value objects of ``trtkit bench``: its config, the statistics, the per-batch and per-model results.

Their own module so the timing loop (``timing``), the report (``report``) and the driver (``bench``)
all import them without importing each other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

from ..errors import BenchError, Spelling, TrtkitError
from ..spec import RuntimeConfig, Shape

__all__ = [
    "BenchConfig",
    "BenchTarget",
    "BenchResult",
    "BatchResult",
    "Stats",
    "Environment",
    "MIN_ITERATIONS",
    "BenchProgress",
    "BenchHooks",
    "BenchInterrupted",
]

@dataclass(frozen=True)
class Environment:
    """Where a benchmark ran: enough to tell two reports apart."""

    trtkit_version: str
    backend: str
    backend_version: str | None
    device: str
    cpu_count: int | None
    python: str
    platform: str



MIN_ITERATIONS = 10  # fewer samples make percentiles meaningless; trtexec's default --iterations
ENQUEUE_BOUND_RATIO = 0.8  # trtexec warns when median enqueue > 0.8 x median GPU compute
GPU_COV_LIMIT = 0.01  # trtexec: "GPU compute time is unstable" above 1 % coefficient of variation
HOST_OUTLIER_RATIO = 1.2  # host timing: OS scheduling hiccups are rare but long, so the CoV is not a fair test;
# warn when they drag the mean this far above the median


@dataclass(frozen=True)
class BenchConfig:
    """How to benchmark. Values are checked here, so a bad one fails before any work.

    ``shapes`` gives concrete input shapes. With ``batches`` (a sweep) it gives
    the shapes *without* the batch axis (``images: (3, 640, 640)``), because
    the sweep sets axis 0; a full-rank shape there would set the batch twice.
    """

    shapes: Mapping[str, Shape] | None = None
    batches: tuple[int, ...] = ()
    warmup_ms: float = 200.0
    duration_s: float = 3.0
    iterations: int = MIN_ITERATIONS
    streams: int = 1
    transfers: bool = True  # False = trtexec --noDataTransfers (GPU backends only)
    seed: int = 0
    keep_raw: bool = False  # keep per-iteration latencies in the result (and the JSON)

    def __post_init__(self) -> None:
        _check_number(Spelling("warmup_ms", "--warmup-ms"), value=self.warmup_ms, low=0.0, inclusive=True, example="200")
        _check_number(Spelling("duration_s", "--duration"), value=self.duration_s, low=0.0, inclusive=False, example="3")
        if not isinstance(self.iterations, int) or self.iterations < MIN_ITERATIONS:
            raise BenchError(
                f"{{iterations}} must be an integer >= {MIN_ITERATIONS}, got {self.iterations!r}: percentiles from "
                f"fewer than {MIN_ITERATIONS} samples are not meaningful; use {MIN_ITERATIONS} or more",
                spellings={"iterations": Spelling(python="iterations", cli="--iterations")},
            )
        if not isinstance(self.streams, int) or self.streams < 1:
            raise BenchError(f"{{streams}} must be an integer >= 1, got {self.streams!r}; use 1 or more",
                             spellings={"streams": Spelling(python="streams", cli="--streams")})
        object.__setattr__(self, "batches", tuple(self.batches))
        for b in self.batches:
            if not isinstance(b, (int, np.integer)) or isinstance(b, bool) or b < 1:
                raise BenchError(f"batch sizes must be integers >= 1, got {b!r} in {list(self.batches)}; e.g. {{batches}}",
                                 spellings={"batches": Spelling(python="batches=(1, 8, 32)", cli="--batch 1,8,32")})
        dupes = sorted({b for b in self.batches if self.batches.count(b) > 1})
        if dupes:
            raise BenchError(f"batch sizes {list(self.batches)} repeat {dupes}; give each batch size once")


def _check_number(option: Spelling, *, value: object, low: float, inclusive: bool, example: str) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value >= low if inclusive else value > low)  # type: ignore[operator]
    if not ok:
        need = f">= {low:g}" if inclusive else f"> {low:g}"
        raise BenchError(f"{{option}} must be a finite number {need}, got {value!r}; e.g. {{example}}",
                         spellings={"option": option,
                                    "example": Spelling(f"{option.python}={example}", f"{option.cli} {example}")})


@dataclass(frozen=True)
class Stats:
    """Summary of one metric, in milliseconds, computed as trtexec does."""

    count: int
    mean: float
    median: float
    p90: float
    p95: float
    p99: float
    min: float
    max: float
    std: float

    @classmethod
    def of(cls, samples_ms: Sequence[float], *, what: str) -> "Stats":
        values = np.sort(np.asarray(samples_ms, dtype=np.float64))
        n = int(values.size)
        if n < MIN_ITERATIONS:
            raise BenchError(
                f"{what}: only {n} timed iterations ran, fewer than {MIN_ITERATIONS}; refusing to report "
                f"percentiles from so few samples. Raise --duration or --iterations"
            )
        if not np.all(np.isfinite(values)) or values[0] < 0:
            raise BenchError(
                f"{what}: the backend reported a negative or non-finite time ({values[0]!r} .. {values[-1]!r} ms); "
                "these figures are wrong, so none are reported. Re-run; if it persists, report a bug"
            )
        return cls(
            count=n,
            mean=float(values.mean()),
            median=float(np.median(values)),
            p90=_percentile(values, p=90),
            p95=_percentile(values, p=95),
            p99=_percentile(values, p=99),
            min=float(values[0]),
            max=float(values[-1]),
            std=float(values.std()),
        )

    @property
    def cov(self) -> float:
        """Coefficient of variation (std / mean); 0 when the mean is 0."""
        return self.std / self.mean if self.mean > 0 else 0.0


def _percentile(sorted_values: np.ndarray, *, p: int) -> float:
    """trtexec's findPercentile: drop floor((1 - p/100) * n) samples from the top, take the largest left.

    Computed in integers: trtexec's float arithmetic can round 20 down to 19.99 and keep one sample too many.
    """
    n = int(sorted_values.size)
    exclude = (100 - p) * n // 100
    return float(sorted_values[max(n - 1 - exclude, 0)])


@dataclass(frozen=True)
class BatchResult:
    """The figures of one model at one set of input shapes."""

    batch: int | None  # the swept batch, or axis 0 when every input agrees on it; None otherwise
    shapes: Mapping[str, Shape]
    iterations: int
    warmup_iterations: int
    warmup_s: float
    walltime_s: float  # total host walltime of the timed iterations
    latency: Stats
    timing: str  # "cuda-events" (GPU stage times) or "host" (wall time around infer)
    host_latency: Stats | None = None  # cuda-events timing: host wall time around each timed_infer call
    enqueue: Stats | None = None
    h2d: Stats | None = None
    compute: Stats | None = None
    d2h: Stats | None = None
    warnings: tuple[str, ...] = ()
    raw_latency_ms: tuple[float, ...] = ()

    @property
    def throughput_qps(self) -> float:
        return self.iterations / self.walltime_s

    @property
    def items_per_s(self) -> float | None:
        return self.throughput_qps * self.batch if self.batch else None


@dataclass(frozen=True)
class BenchResult:
    """One model on one backend: a BatchResult per batch size (one when not sweeping)."""

    label: str
    config: BenchConfig
    environment: Environment
    results: tuple[BatchResult, ...]
    model: str | None = None

    @property
    def warnings(self) -> tuple[str, ...]:
        return tuple(w for r in self.results for w in r.warnings)


@dataclass(frozen=True)
class BenchTarget:
    """A model file and how to run it, for :func:`benchmark_models`."""

    model: str
    backend: str = "auto"  # registry name: auto | onnxruntime | tensorrt
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    label: str | None = None


# ------------------------------------------------------------ while it runs

@dataclass(frozen=True)
class BenchProgress:
    """Where a running benchmark is: sent to :attr:`BenchHooks.progress` a few times a second."""

    point: int  # sweep point being measured, 0-based
    points: int  # sweep points in all
    batch: int | None  # its batch size (None when not sweeping)
    label: str  # the run being timed now
    phase: str  # "warm-up" or "measure"
    elapsed_s: float  # of this phase, for this run
    target_s: float  # the phase's minimum time (warm-up ms, or --duration)
    iterations: int  # timed so far in this phase, for this run


@dataclass(frozen=True)
class BenchHooks:
    """Callbacks of :func:`trtkit.measure.bench.benchmark_models` / ``benchmark_many``; each is optional.

    ``started(runs)``: every run is open; ``runs`` carry their environment and no results yet.
    ``batch_done(runs)``: a sweep point finished for every run; ``runs[i].results`` hold the points so far.
    ``progress(p)``: a :class:`BenchProgress`, at most every ``progress_interval_s``.
    ``skipped(label, error)``: with it, a target that cannot start (not installed, no GPU, bad file)
    is reported here and the others run; without it, the error is raised.
    """

    started: Callable[[Sequence["BenchResult"]], None] | None = None
    batch_done: Callable[[Sequence["BenchResult"]], None] | None = None
    progress: Callable[[BenchProgress], None] | None = None
    skipped: Callable[[str, TrtkitError], None] | None = None
    progress_interval_s: float = 0.1


class BenchInterrupted(KeyboardInterrupt):
    """Ctrl-C during a benchmark. ``results`` hold every run with the sweep points that finished before it.

    A KeyboardInterrupt, so callers that do not look for it stop as they would anyway.
    """

    def __init__(self, results: Sequence["BenchResult"]) -> None:
        super().__init__(f"benchmark interrupted after {len(results[0].results) if results else 0} finished sweep point(s)")
        self.results = tuple(results)
