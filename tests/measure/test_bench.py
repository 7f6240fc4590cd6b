"""trtkit bench on the CPU with real ONNX Runtime: measurement, trtexec's statistics, sweeps, comparisons,
reports, and clean errors for bad options."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import trtkit
from trtkit.measure.bench import BenchConfig, BenchResult, Stats, benchmark, benchmark_many
from trtkit.measure.report import SCHEMA, format_text, report_json
from trtkit.measure.inputs import generate_inputs
from trtkit.errors import BenchError, ShapeError
from trtkit.spec import RuntimeConfig

from tests.conftest import assert_clean_error
from tests.data import tiny_onnx

QUICK = dict(warmup_ms=5.0, duration_s=0.05)  # enough for >= 10 iterations of the tiny models


def mlp(path: Path, *, width: int = 512, layers: int = 8) -> Path:
    """x [batch, width] -> (MatMul, Relu) x layers -> y: a few ms per call at batch 32, on one thread."""
    rng = np.random.default_rng(0)
    nodes, weights, prev = [], [], "x"
    for i in range(layers):
        weights.append(numpy_helper.from_array((rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32), f"w{i}"))
        out = "y" if i == layers - 1 else f"r{i}"
        nodes += [helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]), helper.make_node("Relu", [f"m{i}"], [out])]
        prev = out
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        initializer=weights,
    )
    return tiny_onnx.save_graph(graph, path)


def image_relu(path: Path) -> Path:
    """images [batch, 3, height, width] -> Relu: dynamic dims besides the batch."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["images"], ["out"])], "image_relu",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
    )
    return tiny_onnx.save_graph(graph, path)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bench")
    return {
        "mlp": mlp(root / "mlp.onnx"),
        "small": mlp(root / "small.onnx", width=16, layers=2),
        "image": image_relu(root / "image.onnx"),
        "static": tiny_onnx.single(root / "static.onnx"),  # x [2,3]: static batch 2
        "affine": tiny_onnx.affine(root / "affine.onnx"),  # x [batch,4] and s [1]
    }


@pytest.fixture(scope="module")
def mlp_backend(models):
    with trtkit.load(models["mlp"], config=RuntimeConfig(threads=1)) as backend:
        yield backend


# ------------------------------------------------------- measurement vs a plain loop

class PlainLoop:
    """What a user writes without trtkit: ``session.run`` timed with perf_counter around each call.

    It wraps the *same* ONNX Runtime session as the backend under test, so bench's
    figures and the loop's own figures cover the very same iterations.
    """

    name = "plain-loop"

    def __init__(self, backend) -> None:
        self.inputs, self.outputs = backend.inputs, backend.outputs
        self._run, self._names = backend.session.run, [o.name for o in backend.outputs]
        self.times_ms: list[float] = []

    def infer(self, feeds):
        t0 = time.perf_counter()
        out = self._run(self._names, feeds)
        self.times_ms.append((time.perf_counter() - t0) * 1e3)
        return out


def test_bench_figures_match_the_plain_loop_over_the_same_iterations(mlp_backend):
    loop = PlainLoop(mlp_backend)
    config = BenchConfig(shapes={"x": (32, 512)}, warmup_ms=200, duration_s=0.5, keep_raw=True)
    r = benchmark(loop, config=config).results[0]
    timed = loop.times_ms[-r.iterations:]  # the loop also saw the warm-up calls; bench must not count them
    assert len(loop.times_ms) == r.warmup_iterations + r.iterations
    assert r.iterations >= 10 and r.walltime_s >= 0.5
    # Same iterations, so machine noise cancels: bench adds only its own clock reads around each call.
    assert abs(r.latency.mean / statistics.fmean(timed) - 1) < 0.03
    assert abs(r.latency.median / statistics.median(timed) - 1) < 0.03
    assert all(inner <= outer for outer, inner in zip(r.raw_latency_ms, timed))  # bench's clock encloses the loop's
    # One stream: the walltime is the sum of the latencies plus loop overhead, and excludes the 0.2 s warm-up.
    busy_s = sum(r.raw_latency_ms) / 1e3
    assert busy_s <= r.walltime_s < busy_s * 1.2 + 0.02
    assert r.throughput_qps == pytest.approx(r.iterations / r.walltime_s)
    assert r.items_per_s == pytest.approx(32 * r.throughput_qps)


def test_bench_mean_agrees_with_a_separate_plain_loop(mlp_backend):
    """The real backend against a plain session.run loop, interleaved in short A-B-B-A blocks and compared by
    the median of the block ratios, so a burst of load on a busy machine hits both.

    Batch 128 makes a call take ~10 ms, so the backend's input validation (~0.1 ms on a loaded 2-core
    machine) is well inside the 3 % and what is compared is the measurement itself.
    """
    names = [o.name for o in mlp_backend.outputs]
    feeds = generate_inputs(mlp_backend.inputs, shapes={"x": (128, 512)}, seed=0)
    config = BenchConfig(shapes={"x": (128, 512)}, warmup_ms=10, duration_s=0.001)

    def plain(n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            mlp_backend.session.run(names, feeds)
        return (time.perf_counter() - t0) * 1e3 / n

    medians = []
    for _attempt in range(3):  # a systematic error fails all three; noise rarely does
        ratios = []
        for _ in range(10):
            a = benchmark(mlp_backend, config=config).results[0]
            b1, b2 = plain(a.iterations), plain(a.iterations)
            a2 = benchmark(mlp_backend, config=config).results[0]
            ratios += [a.latency.mean / b1, a2.latency.mean / b2]
        medians.append(statistics.median(ratios))
        if abs(medians[-1] - 1) < 0.03:
            break
    assert abs(medians[-1] - 1) < 0.03, f"bench/plain mean latency ratios (median per attempt): {medians}"


def test_runs_at_least_the_iterations_and_at_least_the_duration(models):
    with trtkit.load(models["small"]) as backend:
        many = benchmark(backend, config=BenchConfig(warmup_ms=0, duration_s=0.01, iterations=500)).results[0]
        long = benchmark(backend, config=BenchConfig(warmup_ms=50, duration_s=0.3)).results[0]
    assert many.iterations >= 500 and many.warmup_iterations == 0
    assert long.walltime_s >= 0.3 and long.iterations > 10
    assert long.warmup_s >= 0.05 and long.warmup_iterations >= 1


def test_streams_run_concurrently(mlp_backend):
    config = BenchConfig(shapes={"x": (32, 512)}, streams=2, warmup_ms=10, duration_s=0.3, keep_raw=True)
    r = benchmark(mlp_backend, config=config).results[0]
    assert len(r.raw_latency_ms) == r.iterations >= 10
    # two threads always inside infer(): their latencies cover the walltime about twice
    assert sum(r.raw_latency_ms) / 1e3 > 1.5 * r.walltime_s
    assert "2 concurrent streams" in format_text([benchmark(mlp_backend, config=config)])


# --------------------------------------------------------------- statistics

def test_stats_follow_trtexecs_definitions():
    s = Stats.of(list(range(200, 0, -1)), what="t")  # 1..200 ms, unsorted
    # trtexec's findPercentile drops int((1 - p/100) * n) samples from the top
    assert (s.p90, s.p95, s.p99) == (180.0, 190.0, 198.0)
    assert (s.min, s.max, s.median, s.mean) == (1.0, 200.0, 100.5, 100.5)
    small = Stats.of([5.0] * 9 + [50.0], what="t")
    assert small.p99 == small.max == 50.0  # fewer than 100 samples: p99 is the max


def test_too_few_samples_or_broken_times_are_refused():
    with pytest.raises(BenchError, match="only 9 timed iterations ran, fewer than 10"):
        Stats.of([1.0] * 9, what="m")
    with pytest.raises(BenchError, match="negative or non-finite"):
        Stats.of([1.0] * 9 + [float("nan")], what="m")
    with pytest.raises(BenchError, match="negative or non-finite"):
        Stats.of([1.0] * 9 + [-0.5], what="m")


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        (dict(duration_s=0), "duration_s must be a finite number > 0, got 0"),
        (dict(duration_s=-1.0), "duration_s must be a finite number > 0"),
        (dict(duration_s=float("inf")), "duration_s must be a finite number"),
        (dict(warmup_ms=-5), "warmup_ms must be a finite number >= 0"),
        (dict(iterations=5), "iterations must be an integer >= 10, got 5"),
        (dict(streams=0), "streams must be an integer >= 1"),
        (dict(batches=(1, 0)), "batch sizes must be integers >= 1, got 0"),
        (dict(batches=(8, 8)), "repeat [8]"),
    ],
)
def test_config_rejects_bad_values(kwargs, needle):
    with pytest.raises(BenchError) as info:
        BenchConfig(**kwargs)
    assert needle in str(info.value)


# ---------------------------------------------------------- sweeps and shapes

def test_batch_sweep_sets_axis_0(models):
    with trtkit.load(models["small"]) as backend:
        result = benchmark(backend, config=BenchConfig(batches=(1, 4, 16), **QUICK))
    assert [r.batch for r in result.results] == [1, 4, 16]
    assert [r.shapes["x"] for r in result.results] == [(1, 16), (4, 16), (16, 16)]
    for r in result.results:
        assert r.items_per_s == pytest.approx(r.batch * r.throughput_qps)
    table = format_text([result])
    assert "items/s" in table and "\n16 " in table


def test_sweep_takes_the_other_dims_from_shapes_without_the_batch_axis(models):
    with trtkit.load(models["image"]) as backend:
        result = benchmark(backend, config=BenchConfig(batches=(1, 2), shapes={"images": (3, 32, 48)}, **QUICK))
        assert [r.shapes["images"] for r in result.results] == [(1, 3, 32, 48), (2, 3, 32, 48)]
        with pytest.raises(BenchError, match=r"full shape 1x3x32x48, which sets the batch that --batch also sets"):
            benchmark(backend, config=BenchConfig(batches=(1, 2), shapes={"images": (1, 3, 32, 48)}, **QUICK))
        with pytest.raises(ShapeError, match=r"dynamic dims besides the batch axis.*--shapes images:3x640x640"):
            benchmark(backend, config=BenchConfig(batches=(1, 2), **QUICK))


def test_sweep_refuses_a_static_batch_axis(models):
    with trtkit.load(models["static"]) as backend:
        with pytest.raises(ShapeError, match=r"input 'x' has static shape \[2,3\], so its batch axis is fixed at 2"):
            benchmark(backend, config=BenchConfig(batches=(2, 8), **QUICK))
        # the static batch itself is fine, and counts as the batch
        assert benchmark(backend, config=BenchConfig(batches=(2,), **QUICK)).results[0].items_per_s is not None


def test_without_a_sweep_the_batch_is_axis_0_when_inputs_agree(models):
    with trtkit.load(models["static"]) as static, trtkit.load(models["affine"]) as affine:
        assert benchmark(static, config=BenchConfig(**QUICK)).results[0].batch == 2
        both = benchmark(affine, config=BenchConfig(shapes={"x": (3, 4)}, **QUICK)).results[0]
        assert both.batch is None and both.items_per_s is None  # x says 3, s says 1: no batch to count


def test_no_data_transfers_needs_a_gpu_backend(models):
    with trtkit.load(models["small"]) as backend:
        with pytest.raises(BenchError, match="--no-data-transfers needs a GPU backend"):
            benchmark(backend, config=BenchConfig(transfers=False, **QUICK))


# ---------------------------------------------------------------- comparison

def test_interleaved_comparison_reports_ratios_to_the_first(models):
    with trtkit.load(models["small"]) as a, trtkit.load(models["mlp"], config=RuntimeConfig(threads=1)) as b:
        config = BenchConfig(batches=(4,), warmup_ms=5, duration_s=0.2)
        fast, slow = benchmark_many({"small": a, "mlp": b}, config=config)
    assert (fast.label, slow.label) == ("small", "mlp")
    # interleaved blocks: each run still gets its full duration and iterations
    for run in (fast, slow):
        assert run.results[0].walltime_s >= 0.2 and run.results[0].iterations >= 10
    doc = report_json([fast, slow])
    assert doc["config"]["interleaved"] is True
    first, second = (run["results"][0] for run in doc["runs"])
    assert first["vs_first"] is None
    assert second["vs_first"]["latency_mean"] == pytest.approx(slow.results[0].latency.mean / fast.results[0].latency.mean)
    assert second["vs_first"]["latency_mean"] > 1  # 8 layers of 512x512 take longer than 2 of 16x16
    text = format_text([fast, slow])
    assert "latency x" in text and "throughput x" in text


# ------------------------------------------------------------------- reports

def test_json_report_schema(models):
    with trtkit.load(models["small"]) as backend:
        result = benchmark(backend, config=BenchConfig(batches=(1, 2), keep_raw=True, **QUICK))
    assert isinstance(result, BenchResult)
    doc = json.loads(json.dumps(report_json([result])))  # plain JSON types only
    assert doc["schema"] == SCHEMA == "trtkit-bench/1"
    assert doc["environment"]["trtkit_version"] == trtkit.__version__
    assert doc["environment"]["cpu_count"] >= 1
    backend_info = doc["runs"][0]["backend"]
    import onnxruntime

    assert backend_info == {"name": "onnxruntime", "version": onnxruntime.__version__, "device": backend_info["device"]}
    assert backend_info["device"].startswith("cpu")
    assert doc["config"]["batches"] == [1, 2] and doc["config"]["interleaved"] is False
    for r, res in zip(doc["runs"][0]["results"], result.results):
        assert r["timing"] == "host" and r["h2d_ms"] is None and r["compute_ms"] is None
        assert set(r["latency_ms"]) == {"mean", "median", "p90", "p95", "p99", "min", "max", "std"}
        assert r["latency_ms"]["p99"] == res.latency.p99
        assert len(r["raw_latency_ms"]) == r["iterations"] == res.iterations


# ----------------------------------------------------------------------- CLI

def test_cli_prints_trtexec_style_summary_and_writes_json_and_plot(cli, models, tmp_path):
    out_json, out_png = tmp_path / "bench.json", tmp_path / "bench.png"
    result = cli("bench", models["small"], "--batch", "1,4", "--duration", "0.05", "--warmup-ms", "5",
                 "--json", out_json, "--plot", out_png)
    assert result.code == 0, result
    assert "items/s" in result.out and "p99" in result.out
    doc = json.loads(out_json.read_text())
    assert [r["batch"] for r in doc["runs"][0]["results"]] == [1, 4]
    assert "raw_latency_ms" not in doc["runs"][0]["results"][0]
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*.tmp"))


def test_cli_compare_same_model_on_two_backend_spellings(cli, models):
    result = cli("bench", "--compare", f"{models['small']}@ort-cpu", f"{models['small']}@onnxruntime",
                 "--duration", "0.05", "--warmup-ms", "5")
    assert result.code == 0, result
    assert "small.onnx@ort-cpu" in result.out and "small.onnx@onnxruntime" in result.out
    assert "latency x" in result.out


def test_cli_repeated_backend_runs_each_model_on_each(cli, models):
    result = cli("bench", models["small"], "--backend", "ort-cpu", "--backend", "onnxruntime",
                 "--duration", "0.05", "--warmup-ms", "5")
    assert result.code == 0, result
    assert "small.onnx@ort-cpu" in result.out and "small.onnx@onnxruntime" in result.out


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--duration", "0"], ["--duration must be a finite number > 0, got 0"]),
        (["--duration", "-2"], ["--duration must be", "e.g. --duration 3"]),
        (["--warmup-ms", "-1"], ["--warmup-ms must be"]),
        (["--iterations", "3"], ["--iterations must be an integer >= 10"]),
        (["--batch", ""], ["--batch '' has an empty item"]),
        (["--batch", "1,,8"], ["--batch '1,,8' has an empty item"]),
        (["--batch", "1,x"], ["'x' is not an integer"]),
        (["--batch", "0"], ["batch sizes must be integers >= 1, got 0"]),
        (["--raw"], ["--raw adds per-iteration latencies to the --json report"]),
        (["--no-data-transfers"], ["--no-data-transfers needs a GPU backend"]),
        (["--cuda-graph"], ["does not support --cuda-graph", "--backend tensorrt"]),
        (["--shapes", "x:1x16", "--batch", "1,2"], ["full shape 1x16", "e.g. x:16"]),
    ],
)
def test_cli_bad_options_are_clean_errors(cli, models, args, needles):
    assert_clean_error(cli("bench", models["small"], *args), *needles)


def test_cli_batch_on_a_static_model_lists_the_static_shape(cli, models):
    assert_clean_error(cli("bench", models["static"], "--batch", "8"), "static shape [2,3]", "--batch 8", "reshape --dynamic x:0")


def test_cli_unknown_backend_after_at(cli, models):
    assert_clean_error(cli("bench", f"{models['small']}@openvino"), "unknown backend 'openvino'", "ort-cuda")


def test_cli_no_model(cli):
    assert_clean_error(cli("bench"), "no model given")


@pytest.mark.parametrize("flag", ["--json", "--plot"])
def test_cli_unwritable_output_fails_before_benchmarking(cli, models, tmp_path, flag):
    missing = tmp_path / "no-such-dir" / "out.file"
    started = time.perf_counter()
    result = cli("bench", models["small"], "--duration", "60", flag, missing)  # a 60 s run if it were not checked first
    assert time.perf_counter() - started < 30
    assert_clean_error(result, flag, "does not exist")
    assert not missing.parent.exists()
    assert_clean_error(cli("bench", models["small"], "--duration", "60", flag, tmp_path), "is a directory")


def test_shapes_above_every_engine_profile_are_refused_with_the_profiles(tmp_path):
    # No engine can be deserialized without a GPU, so this checks bench's planning against exactly what
    # TensorRTBackend exposes (inputs, profiles), read from the sidecar of a real TensorRT-RTX build.
    pytest.importorskip("tensorrt_rtx")
    from types import SimpleNamespace

    from trtkit.measure.timing import plan_shapes
    from trtkit.engine.build import build
    from trtkit.engine.info import read_sidecar
    from trtkit.errors import ProfileError
    from trtkit.graph.onnx_io import io_specs, load_onnx
    from trtkit.spec import BuildConfig, ShapeProfile

    model = tiny_onnx.affine(tmp_path / "affine.onnx")  # x [batch,4], s [1]
    profile = ShapeProfile.from_shapes(min={"x": (1, 4)}, opt={"x": (2, 4)}, max={"x": (4, 4)})
    build(model, tmp_path / "affine.plan", config=BuildConfig(profiles=(profile,), backend="tensorrt-rtx"))
    sidecar = read_sidecar(tmp_path / "affine.plan")
    profiles = tuple(
        ShapeProfile.from_shapes(**{k: {n: tuple(r[k]) for n, r in p.items()} for k in ("min", "opt", "max")})
        for p in sidecar["profiles"]
    )
    engine = SimpleNamespace(inputs=io_specs(load_onnx(model))[0], profiles=profiles)
    [(_, shapes)] = plan_shapes(engine, config=BenchConfig(shapes={"x": (4, 4), "s": (1,)}), label="affine.plan")
    assert shapes == {"x": (4, 4), "s": (1,)}
    with pytest.raises(ProfileError, match=r"x:8x4.*fit no optimization profile.*profile 0: x: min 1x4 opt 2x4 max 4x4"):
        plan_shapes(engine, config=BenchConfig(shapes={"x": (8, 4), "s": (1,)}), label="affine.plan")
