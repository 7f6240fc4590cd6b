"""trtkit bench while it runs: rows as each batch finishes, the progress line on a real terminal (a pty),
Ctrl-C keeping the finished rows, runs that cannot start, and the one-batch plot."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import trtkit
from trtkit.measure.bench import BenchConfig, BenchHooks, BenchInterrupted, BenchTarget, benchmark, benchmark_models
from trtkit.measure.report import format_text, plot_figure

from tests.conftest import HAS_GPU
from tests.measure.test_bench import QUICK, mlp

ROOT = Path(__file__).resolve().parents[2]
ROW1 = "\x1b[K1 "  # batch 1's sweep row, written over the cleared progress line


def _rows(text: str) -> list[str]:
    """The batch column of the sweep rows in a terminal transcript."""
    return [line.split()[0] for line in text.replace("\r\x1b[K", "\n").splitlines() if line[:1].isdigit()]


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return mlp(tmp_path_factory.mktemp("progress") / "small.onnx", width=16, layers=2)


class Terminal:
    """``python -m trtkit ARGS`` with stdout and stderr on a pseudo-terminal, read as it writes."""

    def __init__(self, *args: str) -> None:
        master, slave = pty.openpty()
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
               "COLUMNS": "200"}
        self.proc = subprocess.Popen([sys.executable, "-m", "trtkit", *args], stdin=slave, stdout=slave, stderr=slave,
                                     env=env, close_fds=True)
        os.close(slave)
        self.master, self.text = master, ""

    def read_until(self, needle: str, *, timeout: float = 120) -> bool:
        end = time.monotonic() + timeout
        while needle not in self.text and time.monotonic() < end:
            if not self._read(0.2) and self.proc.poll() is not None:
                break
        return needle in self.text

    def _read(self, wait: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], wait)
        if not ready:
            return False
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: the child closed the terminal
            return False
        self.text += chunk.decode(errors="replace")
        return bool(chunk)

    def finish(self, *, timeout: float = 120) -> int:
        end = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < end:
            self._read(0.2)
        while self._read(0.05):
            pass
        os.close(self.master)
        return self.proc.wait(timeout=5)


def test_progress_line_on_a_terminal_and_rows_as_each_batch_finishes(small):
    term = Terminal("bench", str(small), "--batch", "1,2", "--duration", "0.6", "--warmup-ms", "300")
    assert term.read_until(ROW1, timeout=120), term.text  # batch 1's row replaces the progress line...
    assert term.finish() == 0, term.text
    text = term.text
    assert "\r\x1b[Kbench: batch 1 (1/2) small.onnx warm-up" in text
    assert "\r\x1b[Kbench: batch 1 (1/2) small.onnx measuring" in text
    assert "bench: batch 2 (2/2) small.onnx measuring" in text
    # ...before batch 2 is measured (checked by order: one read may hold both, so not by absence above)
    assert text.index(ROW1) < text.index("bench: batch 2 (2/2)") < text.index("\x1b[K2 ")
    assert _rows(text) == ["1", "2"]
    assert "bench:" not in text.rstrip().splitlines()[-1]  # the progress line is cleared, not left behind


def test_no_progress_line_when_not_a_terminal(cli, small):
    result = cli("bench", small, "--batch", "1,2", "--duration", "0.05", "--warmup-ms", "5")
    assert result.code == 0, result
    assert "bench:" not in result.err and "\r" not in result.err
    rows = [line.split()[0] for line in result.out.splitlines() if line[:1].isdigit()]
    assert rows == ["1", "2"]


def test_ctrl_c_keeps_the_finished_rows_and_exits_130(small, tmp_path):
    out_json = tmp_path / "b.json"
    term = Terminal("bench", str(small), "--batch", "1,2,4", "--duration", "3", "--warmup-ms", "5", "--json", str(out_json))
    assert term.read_until(ROW1, timeout=120), term.text
    assert term.read_until("bench: batch 2 (2/3)", timeout=30), term.text  # measuring batch 2 now
    term.proc.send_signal(signal.SIGINT)
    code = term.finish()
    assert code == 130, term.text
    assert "error: interrupted; kept the 1 of 3 batch size(s) that finished (printed above)" in term.text
    assert "Traceback" not in term.text
    assert _rows(term.text) == ["1"], term.text
    assert not out_json.exists() and not list(tmp_path.iterdir())  # Ctrl-C leaves nothing behind


def test_hooks_hear_each_batch_and_an_interrupt_keeps_the_finished_ones(small):
    """The API under the CLI: batch_done after each point; a KeyboardInterrupt mid-sweep (raised from the
    progress hook, as a real SIGINT would arrive) becomes BenchInterrupted with the finished points."""
    seen: list[int] = []

    def progress(p):
        if p.point == 1 and p.phase == "measure":
            raise KeyboardInterrupt

    hooks = BenchHooks(batch_done=lambda runs: seen.append(len(runs[0].results)), progress=progress,
                       progress_interval_s=0.0)
    with trtkit.load(small) as backend:
        with pytest.raises(BenchInterrupted) as info:
            benchmark(backend, config=BenchConfig(batches=(1, 2, 4), **QUICK), hooks=hooks)
    assert seen == [1]
    [run] = info.value.results
    assert [r.batch for r in run.results] == [1]
    assert "\n1 " in format_text(info.value.results)
    assert isinstance(info.value, KeyboardInterrupt)


@pytest.mark.skipif(HAS_GPU, reason="needs a machine where the CUDA backends cannot start")
def test_compare_skips_a_run_that_cannot_start_and_runs_the_others(cli, small):
    result = cli("bench", "--compare", f"{small}@ort-cuda", f"{small}@ort-cpu", "--duration", "0.05", "--warmup-ms", "5")
    assert result.code == 0, result
    assert "warning: skipped small.onnx@ort-cuda: CUDA is not usable here" in result.err
    assert "--backend onnxruntime" in result.err and "device='cpu'" not in result.err
    assert "note: 1 run(s) skipped" in result.err and "only small.onnx@ort-cpu runs" in result.err
    assert "small.onnx@ort-cpu: onnxruntime" in result.out and "Throughput:" in result.out


@pytest.mark.skipif(HAS_GPU, reason="needs a machine where the CUDA backends cannot start")
def test_api_skips_only_with_a_skipped_hook(small):
    targets = [BenchTarget(str(small), backend="ort-cuda", label="gpu"), BenchTarget(str(small), label="cpu")]
    config = BenchConfig(**QUICK)
    with pytest.raises(trtkit.errors.BackendUnavailable):
        benchmark_models(targets, config=config)
    skipped: list[tuple[str, str]] = []
    [run] = benchmark_models(targets, config=config, hooks=BenchHooks(skipped=lambda label, exc: skipped.append((label, str(exc)))))
    assert run.label == "cpu" and [label for label, _ in skipped] == ["gpu"]
    assert "device='cpu'" in skipped[0][1]  # the Python spelling for Python callers


def test_request_mistakes_still_abort_a_comparison(cli, small, tmp_path):
    result = cli("bench", "--compare", str(small), str(tmp_path / "missing.onnx"), "--duration", "0.05")
    assert result.code == 1 and "missing.onnx" in result.err and "does not exist" in result.err
    assert "Throughput" not in result.out


def test_one_batch_size_is_plotted_as_bars_and_a_sweep_as_lines(small):
    from matplotlib.container import BarContainer

    with trtkit.load(small) as backend:
        one = benchmark(backend, config=BenchConfig(**QUICK), label="one")
        sweep = benchmark(backend, config=BenchConfig(batches=(1, 2), **QUICK), label="sweep")
    lat, thr = plot_figure([one]).axes
    assert [len(c) for c in lat.containers if isinstance(c, BarContainer)] == [4]  # median, p90, p95, p99
    assert [t.get_text() for t in lat.get_xticklabels()] == ["median", "p90", "p95", "p99"]
    assert len(thr.patches) == 1 and not thr.lines
    heights = [p.get_height() for p in lat.containers[0]]
    assert heights == [one.results[0].latency.median, one.results[0].latency.p90, one.results[0].latency.p95,
                       one.results[0].latency.p99]
    lat, thr = plot_figure([sweep]).axes
    assert not lat.patches and len(lat.lines) == 4 and len(thr.lines) == 1


def test_help_has_no_rst_markup(cli):
    result = cli("bench", "--help")
    assert result.code == 0
    assert "``" not in result.out and ":func:" not in result.out
    assert "--compare MODEL[@BACKEND]" in result.out
