"""trtkit bench: latency and throughput with trtexec's definitions, batch sweeps and fair comparisons.

Runs to compare come from MODEL, --compare MODEL[@BACKEND] ... and repeated
--backend: every model without @BACKEND runs on every --backend given
(default: auto). The first run that starts is the baseline of ratios; a run
that cannot start on this machine (backend not installed, no usable GPU, an
engine built elsewhere) is skipped with its reason and the others still run.

Each batch size prints as soon as it is measured; on a terminal a progress
line shows the warm-up and the measurement. Ctrl-C stops, keeps the rows
already printed, and exits 130 (no --json or --plot is written then).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ..atomic import check_output_path
from ..backends import backend_choices
from ..errors import BenchError, TrtkitError
from ._args import OnceAction, add_fuse_arg, runtime_from_args, shapes_from_args

if TYPE_CHECKING:
    from ..measure.bench import BenchProgress, BenchResult, BenchTarget



def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "bench",
        help="measure latency and throughput (trtexec's metrics), sweep batch sizes, compare runtimes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", nargs="?", help="model to benchmark (.onnx or a TensorRT engine); MODEL@BACKEND picks its backend")
    p.add_argument("--compare", nargs="+", default=[], metavar="MODEL[@BACKEND]",
                   help="benchmark several runs interleaved and print ratios to the first, e.g. "
                        "--compare m.onnx@ort-cpu m.onnx@ort-cuda m.engine")
    p.add_argument("--backend", action="append", default=[], choices=backend_choices(),
                   help="runtime (repeatable: each model without @BACKEND runs on each one); default auto")
    p.add_argument("--shapes", action=OnceAction, metavar="SPEC", help="input shapes, trtexec syntax (with --batch: without the batch axis, "
                                                     "e.g. images:3x640x640)")
    p.add_argument("--batch", metavar="LIST", help="sweep axis 0 of every input over these sizes, e.g. 1,8,32")
    p.add_argument("--warmup-ms", type=float, default=200.0, help="warm-up time in ms (default 200)")
    p.add_argument("--duration", type=float, default=3.0, help="minimum timed seconds per run and batch (default 3)")
    p.add_argument("--iterations", type=int, default=10, help="minimum timed iterations (default 10, the least allowed)")
    p.add_argument("--streams", type=int, default=1, help="concurrent inferences (host threads; TensorRT contexts)")
    p.add_argument("--cuda-graph", action="store_true", help="capture and replay CUDA graphs (GPU backends)")
    p.add_argument("--no-data-transfers", action="store_true", help="keep inputs/outputs on the GPU: time compute alone")
    p.add_argument("--threads", type=int, default=None, help="intra-op CPU threads (ONNX Runtime)")
    add_fuse_arg(p)
    p.add_argument("--plugins", action="append", default=[], metavar="LIB.so", help="TensorRT plugin library (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    p.add_argument("--json", metavar="OUT.json", help="write the trtkit-bench/1 JSON report (see docs/bench.md)")
    p.add_argument("--raw", action="store_true", help="include per-iteration latencies in --json")
    p.add_argument("--plot", metavar="OUT.png", help="write a PNG of latency percentiles and throughput vs batch (needs matplotlib)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..measure.bench import BenchConfig, BenchHooks, BenchInterrupted, benchmark_models
    from ..measure.report import write_json, write_plot

    config = BenchConfig(
        shapes=shapes_from_args(args),
        batches=parse_batches(args.batch) if args.batch is not None else (),
        warmup_ms=args.warmup_ms,
        duration_s=args.duration,
        iterations=args.iterations,
        streams=args.streams,
        transfers=not args.no_data_transfers,
        seed=args.seed,
        keep_raw=args.raw,
    )
    if args.raw and not args.json:
        raise BenchError("--raw adds per-iteration latencies to the --json report, but no --json was given; add --json OUT.json")
    for path, flag in ((args.json, "--json"), (args.plot, "--plot")):
        if path:
            check_output_path(path, what=flag)  # fail now, not after minutes of benchmarking
    if args.plot:
        from .._optional import require

        require("matplotlib", purpose="bench --plot")
    printer = _Printer(progress=sys.stderr.isatty())
    hooks = BenchHooks(started=printer.started, batch_done=printer.batch_done, progress=printer.progress,
                       skipped=printer.skipped)
    try:
        results = benchmark_models(targets_from_args(args), config=config, hooks=hooks)
    except BenchInterrupted as stop:
        printer.interrupted(stop.results, wanted=max(len(config.batches), 1))
        return 130
    finally:
        printer.clear()
    printer.finished(results)
    if args.json:
        write_json(results, path=args.json)
        print(f"wrote {args.json}")
    if args.plot:
        write_plot(results, path=args.plot)
        print(f"wrote {args.plot}")
    return 0


class _Printer:
    """Prints the report as the benchmark runs: the head once the runs are open, each sweep point as it
    finishes, and (on a terminal) a progress line on stderr that each printed line replaces."""

    def __init__(self, *, progress: bool) -> None:
        self.show_progress = progress
        self.line_shown = False
        self.skips: list[str] = []

    def clear(self) -> None:
        if self.line_shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
            self.line_shown = False

    def emit(self, text: str) -> None:
        self.clear()
        if text:
            print(text, flush=True)

    def skipped(self, label: str, error: TrtkitError) -> None:
        self.clear()
        message = f"skipped {label}: {error.render('cli')}"
        self.skips.append(message)
        print(f"warning: {message}", file=sys.stderr, flush=True)

    def started(self, runs: Sequence[BenchResult]) -> None:
        from ..measure.report import format_head

        if self.skips:
            rest = f"ratios are to {runs[0].label}" if len(runs) > 1 else f"only {runs[0].label} runs"
            print(f"note: {len(self.skips)} run(s) skipped (see the warnings above); {rest}", file=sys.stderr)
        self.emit(format_head(runs))

    def batch_done(self, runs: Sequence[BenchResult]) -> None:
        from ..measure.report import format_batch

        self.emit(format_batch(runs, len(runs[0].results) - 1))

    def progress(self, p: BenchProgress) -> None:
        if not self.show_progress:
            return
        where = f"batch {p.batch} ({p.point + 1}/{p.points})" if p.batch is not None and p.points > 1 else ""
        what = (f"warm-up {p.elapsed_s:.1f}/{p.target_s:.1f} s" if p.phase == "warm-up"
                else f"measuring {p.elapsed_s:.1f}/{p.target_s:.1f} s, {p.iterations} iterations")
        text = " ".join(x for x in ("bench:", where, p.label, what) if x)
        sys.stderr.write("\r\033[K" + text[: shutil.get_terminal_size().columns - 1])
        sys.stderr.flush()
        self.line_shown = True

    def finished(self, runs: Sequence[BenchResult]) -> None:
        from ..measure.report import format_tail

        self.emit(format_tail(runs))
        for message in self.skips:  # repeated at the end, where the figures are read
            print(f"warning: {message}", file=sys.stderr)

    def interrupted(self, runs: Sequence[BenchResult], *, wanted: int) -> None:
        from ..measure.report import format_tail

        done = len(runs[0].results) if runs else 0
        self.emit(format_tail(runs) if done else "")
        print(f"error: interrupted; kept the {done} of {wanted} batch size(s) that finished (printed above); "
              "no --json or --plot was written", file=sys.stderr)


def parse_batches(text: str) -> tuple[int, ...]:
    """``1,8,32`` -> (1, 8, 32); BenchConfig checks the values."""
    items = [t.strip() for t in text.split(",")]
    if not text.strip() or any(not t for t in items):
        raise BenchError(f"--batch {text!r} has an empty item; give comma-separated batch sizes, e.g. --batch 1,8,32")
    bad = [t for t in items if not t.lstrip("-").isdigit()]
    if bad:
        raise BenchError(f"--batch {text!r}: {', '.join(map(repr, bad))} is not an integer; e.g. --batch 1,8,32")
    return tuple(int(t) for t in items)


def split_backend(item: str) -> tuple[str, str | None]:
    """``model.onnx@ort-cuda`` -> (model.onnx, ort-cuda). A path that exists as given is never split."""
    path, sep, backend = item.rpartition("@")
    if not sep or os.path.exists(item) or "/" in backend or os.sep in backend:  # an '@' inside a directory name
        return item, None
    if backend not in backend_choices():
        raise BenchError(
            f"{item!r}: unknown backend {backend!r} after '@'; choose one of {', '.join(backend_choices())} "
            "(e.g. model.onnx@ort-cuda)"
        )
    return path, backend


def targets_from_args(args: argparse.Namespace) -> list[BenchTarget]:
    from ..measure.bench import BenchTarget

    items = ([args.model] if args.model else []) + list(args.compare)
    if not items:
        raise BenchError("no model given; usage: trtkit bench MODEL, or trtkit bench --compare A B ...")
    backends = args.backend or ["auto"]
    runs: list[tuple[str, str]] = []
    for item in items:
        path, backend = split_backend(item)
        runs += [(path, backend)] if backend else [(path, b) for b in backends]
    names = [Path(p).name for p, _ in runs]
    targets = []
    for path, choice in runs:
        name, runtime = runtime_from_args(argparse.Namespace(backend=choice, threads=args.threads, plugins=args.plugins, fuse=args.fuse))
        shown = Path(path).name if names.count(Path(path).name) == sum(1 for p, _ in runs if p == path) else path
        label = shown if choice == "auto" else f"{shown}@{choice}"
        targets.append(BenchTarget(model=path, backend=name, runtime=replace(runtime, cuda_graph=args.cuda_graph), label=label))
    return targets
