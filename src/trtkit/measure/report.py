"""Reporting for :mod:`trtkit.measure.bench`: the environment, the ``trtkit-bench/1`` JSON, text tables and the plot.

The JSON schema is documented in docs/bench.md; change it only by bumping
``SCHEMA`` (consumers key on it).
"""

from __future__ import annotations

import json
import os
import platform
import sys
from typing import TYPE_CHECKING, Any, Sequence

from ..atomic import atomic_output, write_text_atomic
from ..spec import format_shapes

if TYPE_CHECKING:
    from .bench_types import BatchResult, BenchConfig, BenchResult, Stats

from .bench_types import Environment

__all__ = ["SCHEMA", "describe_environment", "report_json", "format_text", "format_head", "format_batch", "format_tail",
           "write_json", "write_plot", "plot_figure"]

SCHEMA = "trtkit-bench/1"

# backend name -> modules whose __version__ is the backend's version (first one imported wins)
_VERSION_MODULES = {
    "onnxruntime": ("onnxruntime",),
    "onnxruntime-cuda": ("onnxruntime",),
    "tensorrt": ("tensorrt", "tensorrt_rtx"),
    "tensorrt-rtx": ("tensorrt_rtx",),
}


def describe_environment(backend: Any) -> Environment:
    from .. import __version__

    return Environment(
        trtkit_version=__version__,
        backend=str(getattr(getattr(backend, "flavor", None), "backend", None) or backend.name),
        backend_version=_backend_version(backend),
        device=_device_name(backend),
        cpu_count=os.cpu_count(),
        python=platform.python_version(),
        platform=platform.platform(),
    )


def _backend_version(backend: Any) -> str | None:
    """The backend's own ``version``, else its module's, looked up only if already imported (no new imports)."""
    for candidate in (getattr(backend, "version", None), getattr(getattr(backend, "flavor", None), "version", None)):
        if isinstance(candidate, str):
            return candidate
    for module in _VERSION_MODULES.get(str(backend.name), ()):
        mod = sys.modules.get(module)
        if mod is not None and hasattr(mod, "__version__"):
            return str(mod.__version__)
    return None


def _device_name(backend: Any) -> str:
    name = getattr(backend, "device_name", None)
    if isinstance(name, str) and name:
        return name
    config = getattr(backend, "config", None)
    device = getattr(backend, "device", None) or getattr(config, "device", "cpu")
    if device == "cuda" or hasattr(backend, "timed_infer"):  # TensorRT runs on the GPU whatever config.device says
        return _cuda_device_name(int(getattr(config, "device_id", 0)))
    return f"cpu ({_cpu_name()})"


def _cuda_device_name(device_id: int) -> str:
    runtime = sys.modules.get("cuda.bindings.runtime")  # loaded by the GPU backend already; never import it here
    if runtime is None:
        return f"cuda:{device_id}"
    err, props = runtime.cudaGetDeviceProperties(device_id)
    if int(err) != 0:
        return f"cuda:{device_id}"
    raw = props.name
    text = raw.decode(errors="replace") if isinstance(raw, (bytes, bytearray)) else str(raw)
    return f"cuda:{device_id} ({text.rstrip(chr(0)).strip()})"


def _cpu_name() -> str:
    fallback = platform.processor() or platform.machine() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:  # not Linux: platform's answer is the best there is
        return fallback
    return names[0] if names else fallback


# ----------------------------------------------------------------- JSON

_STAT_KEYS = ("mean", "median", "p90", "p95", "p99", "min", "max", "std")


def _stats_json(stats: "Stats | None") -> dict[str, float] | None:
    return None if stats is None else {k: getattr(stats, k) for k in _STAT_KEYS}


def _config_json(config: "BenchConfig", *, interleaved: bool) -> dict[str, Any]:
    return {
        "shapes": {n: list(s) for n, s in (config.shapes or {}).items()} or None,
        "batches": list(config.batches) or None,
        "warmup_ms": config.warmup_ms,
        "duration_s": config.duration_s,
        "iterations": config.iterations,
        "streams": config.streams,
        "data_transfers": config.transfers,
        "seed": config.seed,
        "interleaved": interleaved,
    }


def _ratios(result: "BatchResult", *, base: "BatchResult | None") -> dict[str, float] | None:
    if base is None:
        return None
    return {
        "latency_mean": result.latency.mean / base.latency.mean,
        "latency_median": result.latency.median / base.latency.median,
        "throughput": throughput_ratio(result, base=base),
    }


def throughput_ratio(result: "BatchResult", *, base: "BatchResult") -> float:
    """items/s ratio when both batches are known (fair across batch sizes), else queries/s."""
    if result.items_per_s and base.items_per_s:
        return result.items_per_s / base.items_per_s
    return result.throughput_qps / base.throughput_qps


def _result_json(r: "BatchResult", *, base: "BatchResult | None") -> dict[str, Any]:
    out: dict[str, Any] = {
        "batch": r.batch,
        "shapes": {n: list(s) for n, s in r.shapes.items()},
        "timing": r.timing,
        "iterations": r.iterations,
        "warmup_iterations": r.warmup_iterations,
        "warmup_s": r.warmup_s,
        "walltime_s": r.walltime_s,
        "throughput_qps": r.throughput_qps,
        "items_per_s": r.items_per_s,
        "latency_ms": _stats_json(r.latency),
        "host_latency_ms": _stats_json(r.host_latency),
        "enqueue_ms": _stats_json(r.enqueue),
        "h2d_ms": _stats_json(r.h2d),
        "compute_ms": _stats_json(r.compute),
        "d2h_ms": _stats_json(r.d2h),
        "compute_total_s": r.compute.mean * r.iterations / 1e3 if r.compute else None,
        "vs_first": _ratios(r, base=base),
        "warnings": list(r.warnings),
    }
    if r.raw_latency_ms:
        out["raw_latency_ms"] = list(r.raw_latency_ms)
    return out


def report_json(runs: Sequence["BenchResult"]) -> dict[str, Any]:
    """One ``trtkit-bench/1`` document for one run or an interleaved comparison (first run = baseline)."""
    first = runs[0]
    env = first.environment
    return {
        "schema": SCHEMA,
        "config": _config_json(first.config, interleaved=len(runs) > 1),
        "environment": {
            "trtkit_version": env.trtkit_version,
            "python": env.python,
            "platform": env.platform,
            "cpu_count": env.cpu_count,
        },
        "runs": [
            {
                "label": run.label,
                "model": run.model,
                "backend": {
                    "name": run.environment.backend,
                    "version": run.environment.backend_version,
                    "device": run.environment.device,
                },
                "results": [
                    _result_json(r, base=first.results[k] if len(runs) > 1 and run is not first else None)
                    for k, r in enumerate(run.results)
                ],
            }
            for run in runs
        ],
    }


def write_json(runs: Sequence["BenchResult"], *, path: str | os.PathLike[str]) -> None:
    write_text_atomic(path, json.dumps(report_json(runs), indent=2) + "\n", what="--json")


# ----------------------------------------------------------------- text

def _num(x: float | None) -> str:
    """About four significant digits without switching to exponents."""
    if x is None:
        return "-"
    a = abs(x)
    digits = 0 if a >= 1000 else 1 if a >= 100 else 2 if a >= 10 else 3 if a >= 1 else 4
    return f"{x:.{digits}f}"


def _table(header: Sequence[str], *, rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    fmt = lambda cells: "  ".join(  # noqa: E731 - first column left-aligned, numbers right-aligned
        str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
    )
    return [fmt(header), *(fmt(r) for r in rows)]


def _describe_run(run: "BenchResult") -> str:
    env = run.environment
    version = f" {env.backend_version}" if env.backend_version else ""
    return f"{run.label}: {env.backend}{version} on {env.device}, {env.cpu_count} CPUs, python {env.python}"


def _detail(r: "BatchResult") -> list[str]:
    """trtexec's performance summary for one result."""
    items = f", {_num(r.items_per_s)} items/s" if r.items_per_s else ""
    timing = "CUDA events (H2D + GPU compute + D2H)" if r.timing == "cuda-events" else "host wall time around infer()"
    rows = [
        (name, *(_num(getattr(s, k)) for k in ("mean", "median", "p90", "p95", "p99", "min", "max")))
        for name, s in (("Latency", r.latency), ("H2D", r.h2d), ("GPU compute", r.compute), ("D2H", r.d2h),
                        ("Enqueue", r.enqueue), ("Host wall", r.host_latency))
        if s is not None
    ]
    lines = [
        f"shapes {format_shapes(r.shapes)}; latency from {timing}",
        f"warm-up {r.warmup_iterations} iterations in {r.warmup_s:.3f} s; timed {r.iterations} iterations in {r.walltime_s:.3f} s",
        "",
        f"Throughput: {_num(r.throughput_qps)} qps{items}",
        *_table(("(ms)", "mean", "median", "p90", "p95", "p99", "min", "max"), rows=rows),
        f"Total host walltime: {r.walltime_s:.3f} s"
        + (f"; total GPU compute time: {r.compute.mean * r.iterations / 1e3:.3f} s" if r.compute else ""),
    ]
    return lines


_SWEEP_KEYS = ("mean", "median", "p90", "p95", "p99", "min", "max")
_SWEEP_WIDTH = 9  # fixed column width: sweep rows are printed one by one as each batch finishes


def _gpu(run: "BenchResult") -> bool:
    """Stage columns: from the results when there are some, else from the device (GPU backends time stages)."""
    if run.results:
        return any(r.compute is not None for r in run.results)
    return run.environment.device.startswith("cuda")


def _sweep_header(gpu: bool) -> list[str]:
    header = ["batch", "iters", *_SWEEP_KEYS, "qps", "items/s"] + (["h2d", "compute", "d2h", "enqueue"] if gpu else [])
    return ["latency in ms" + ("; stage columns are means" if gpu else ""),
            "  ".join(h.ljust(6) if i == 0 else h.rjust(_SWEEP_WIDTH) for i, h in enumerate(header))]


def _sweep_row(r: "BatchResult", *, gpu: bool) -> str:
    s = r.latency
    row = [str(r.batch), str(r.iterations), *(_num(getattr(s, k)) for k in _SWEEP_KEYS), _num(r.throughput_qps), _num(r.items_per_s)]
    if gpu:
        row += [_num(x.mean if x else None) for x in (r.h2d, r.compute, r.d2h, r.enqueue)]
    return "  ".join(c.ljust(6) if i == 0 else c.rjust(_SWEEP_WIDTH) for i, c in enumerate(row))


def _comparison_block(runs: Sequence["BenchResult"], k: int) -> list[str]:
    header = ("run", "batch", "iters", "mean", "median", "p90", "p99", "qps", "items/s", "latency x", "throughput x")
    base = runs[0].results[k]
    rows = []
    for run in runs:
        r = run.results[k]
        rows.append((run.label, str(r.batch or "-"), str(r.iterations),
                     *(_num(getattr(r.latency, f)) for f in ("mean", "median", "p90", "p99")),
                     _num(r.throughput_qps), _num(r.items_per_s),
                     f"{r.latency.mean / base.latency.mean:.3g}", f"{throughput_ratio(r, base=base):.3g}"))
    title = f"batch {base.batch}" if runs[0].config.batches else "each run at its own input shapes"
    return ["", f"{title} (latency in ms; x = ratio to {runs[0].label}'s mean latency and items/s)", *_table(header, rows=rows)]


def _is_sweep(runs: Sequence["BenchResult"]) -> bool:
    return len(runs) == 1 and len(runs[0].config.batches) > 1


def format_head(runs: Sequence["BenchResult"]) -> str:
    """The lines before any figures: where each run runs (and a sweep's table header)."""
    lines = [_describe_run(run) for run in runs]
    streams = runs[0].config.streams
    if streams > 1:
        lines.append(f"{streams} concurrent streams: latency is per inference, throughput counts all streams")
    if _is_sweep(runs):
        lines += _sweep_header(_gpu(runs[0]))
    return "\n".join(lines)


def format_batch(runs: Sequence["BenchResult"], k: int) -> str:
    """The figures of sweep point ``k`` (every run has finished it): a sweep row, a comparison block or the summary."""
    if len(runs) > 1:
        return "\n".join(_comparison_block(runs, k))
    if _is_sweep(runs):
        return _sweep_row(runs[0].results[k], gpu=_gpu(runs[0]))
    return "\n".join(_detail(runs[0].results[k]))


def format_tail(runs: Sequence["BenchResult"]) -> str:
    """The warnings of every finished result."""
    lines = []
    for run in runs:
        for r in run.results:
            where = f"{run.label}" + (f", batch {r.batch}" if len(run.config.batches) > 1 else "")
            lines += [f"warning: [{where}] {w}" for w in r.warnings]
    return "\n".join(lines)


def format_text(runs: Sequence["BenchResult"]) -> str:
    """The human report: a trtexec-style summary, a sweep table, or a side-by-side comparison.

    It is :func:`format_head`, :func:`format_batch` for each sweep point, then :func:`format_tail`,
    which is how ``trtkit bench`` prints it while it runs.
    """
    parts = [format_head(runs), *(format_batch(runs, k) for k in range(len(runs[0].results))), format_tail(runs)]
    return "\n".join(p for p in parts if p)


# ----------------------------------------------------------------- plot

_PERCENTILE_STYLES: tuple[tuple[str, Any], ...] = (("median", "-"), ("p90", "--"), ("p95", "-."), ("p99", ":"))


def write_plot(runs: Sequence["BenchResult"], *, path: str | os.PathLike[str]) -> None:
    """PNG of latency percentiles and throughput: vs batch size when sweeping (one colour per run),
    else as bars (one group per run), since a line through one point shows nothing."""
    fig = plot_figure(runs)
    with atomic_output(path, what="--plot") as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def plot_figure(runs: Sequence["BenchResult"]) -> Any:
    """The matplotlib Figure that :func:`write_plot` saves."""
    from .._optional import require

    require("matplotlib", purpose="bench --plot")
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend (renders with Agg)

    fig = Figure(figsize=(12, 4.8), layout="constrained")
    lat_ax, thr_ax = fig.subplots(1, 2)
    if len(runs[0].results) > 1:
        _plot_sweep(runs, lat_ax, thr_ax)
    else:
        _plot_bars(runs, lat_ax, thr_ax)
    devices = ", ".join(dict.fromkeys(r.environment.device for r in runs))
    fig.suptitle(f"trtkit bench: {', '.join(r.label for r in runs)} on {devices}", fontsize="medium")
    return fig


def _plot_bars(runs: Sequence["BenchResult"], lat_ax: Any, thr_ax: Any) -> None:
    """One sweep point: grouped bars of the latency percentiles per run, and a throughput bar per run."""
    keys = [k for k, _ in _PERCENTILE_STYLES]
    width = 0.8 / len(runs)
    for i, run in enumerate(runs):
        r = run.results[0]
        xs = [j + (i - (len(runs) - 1) / 2) * width for j in range(len(keys))]
        bars = lat_ax.bar(xs, [getattr(r.latency, k) for k in keys], width, color=f"C{i % 10}", label=run.label)
        lat_ax.bar_label(bars, fmt="%.3g", fontsize="x-small", padding=2)
    lat_ax.set_xticks(range(len(keys)), keys)
    lat_ax.set_ylabel("latency (ms)")
    lat_ax.set_title("Latency percentiles")
    labels = [run.label for run in runs]
    values = [run.results[0].items_per_s or run.results[0].throughput_qps for run in runs]
    bars = thr_ax.bar(range(len(runs)), values, 0.6, color=[f"C{i % 10}" for i in range(len(runs))])
    thr_ax.bar_label(bars, fmt="%.4g", fontsize="small", padding=2)
    thr_ax.set_xticks(range(len(runs)), labels, rotation=15 if len(runs) > 2 else 0, ha="right" if len(runs) > 2 else "center")
    batch = runs[0].results[0].batch
    thr_ax.set_ylabel("throughput (items/s)" if all(run.results[0].items_per_s for run in runs) else "throughput (qps)")
    thr_ax.set_title("Throughput" + (f" at batch {batch}" if batch else ""))
    for ax in (lat_ax, thr_ax):
        ax.grid(True, axis="y", alpha=0.3)
        ax.set_axisbelow(True)
        ax.margins(y=0.15)
    lat_ax.set_ylim(bottom=0)
    thr_ax.set_ylim(bottom=0)
    if len(runs) > 1:
        lat_ax.legend(loc="upper left", fontsize="small")


def _plot_sweep(runs: Sequence["BenchResult"], lat_ax: Any, thr_ax: Any) -> None:
    from matplotlib.lines import Line2D

    colors = [f"C{i % 10}" for i in range(len(runs))]
    xs_all: set[int] = set()
    tops = {lat_ax: 0.0, thr_ax: 0.0}
    for run, color in zip(runs, colors):
        xs = [r.batch or 1 for r in run.results]
        xs_all.update(xs)
        for key, style in _PERCENTILE_STYLES:
            ys = [getattr(r.latency, key) for r in run.results]
            lat_ax.plot(xs, ys, style, color=color, marker="o", markersize=4)
            tops[lat_ax] = max(tops[lat_ax], *ys)
        thr = [r.items_per_s or r.throughput_qps for r in run.results]
        thr_ax.plot(xs, thr, "-", color=color, marker="o", label=run.label)
        tops[thr_ax] = max(tops[thr_ax], *thr)
    for ax, top in tops.items():
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(xs_all), [str(x) for x in sorted(xs_all)])
        ax.minorticks_off()
        ax.set_xlabel("batch size")
        ax.grid(True, alpha=0.3)
        ax.set_ylim(0, top * 1.12 or 1.0)  # from zero, so ratios read true; headroom so no point sits on the frame
    lat_ax.set_ylabel("latency (ms)")
    lat_ax.set_title("Latency percentiles")
    lat_ax.legend(
        [Line2D([], [], color="0.3", linestyle=s) for _, s in _PERCENTILE_STYLES],
        [k for k, _ in _PERCENTILE_STYLES], loc="upper left", fontsize="small",
    )
    thr_ax.set_ylabel("throughput (items/s)")
    thr_ax.set_title("Throughput")
    thr_ax.legend(loc="best", fontsize="small")
