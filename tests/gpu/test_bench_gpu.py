"""trtkit bench on a real GPU: CUDA-event stage times (trtexec's H2D / GPU compute / D2H / enqueue),
--no-data-transfers, and engine profiles. Run through the device tool (see tests/README.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import trtkit
from trtkit.measure.bench import BenchConfig, benchmark
from trtkit.errors import EngineError
from trtkit.spec import RuntimeConfig
from tests.gpu._engines import build_relu_engine
from tests.conftest import asset_model, assert_clean_error

pytestmark = pytest.mark.gpu

# Batch 32 of EfficientNet-Lite0: a few ms of GPU compute and ~19 MB of input, so the host-side
# overhead outside the CUDA events (validation, result copy) is small next to the timed stages.
BATCH = 32


def _cuda_ep_or_skip() -> None:
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu (CUDA EP) is not installed")


@pytest.fixture(scope="module")
def ort_cuda():
    _cuda_ep_or_skip()
    with trtkit.load(asset_model("efficientnet_lite0"), config=RuntimeConfig(device="cuda")) as backend:
        yield backend


def test_ort_cuda_stage_times_add_up_to_the_latency_the_host_sees(ort_cuda):
    r = benchmark(ort_cuda, config=BenchConfig(batches=(BATCH,), warmup_ms=200, duration_s=1.0)).results[0]
    assert r.timing == "cuda-events"
    assert r.h2d and r.compute and r.d2h and r.enqueue and r.host_latency
    assert r.h2d.mean > 0 and r.compute.mean > 0 and r.d2h.mean > 0
    stages = r.h2d.mean + r.compute.mean + r.d2h.mean
    assert stages == pytest.approx(r.latency.mean, rel=1e-6)  # trtexec's Latency = H2D + compute + D2H
    # The CUDA events must account for what the host waited for, within 10 %.
    assert abs(stages / r.host_latency.mean - 1) < 0.10, (stages, r.host_latency.mean)
    # One stream, synchronous calls: throughput is the inverse of the host latency.
    assert abs(r.throughput_qps * r.host_latency.mean / 1e3 - 1) < 0.10
    assert r.items_per_s == pytest.approx(BATCH * r.throughput_qps)


def test_no_data_transfers_removes_the_copies(ort_cuda):
    config = BenchConfig(batches=(BATCH,), warmup_ms=200, duration_s=1.0)
    with_copies = benchmark(ort_cuda, config=config).results[0]
    without = benchmark(ort_cuda, config=BenchConfig(batches=(BATCH,), warmup_ms=200, duration_s=1.0, transfers=False)).results[0]
    assert without.h2d is not None and without.d2h is not None and without.compute is not None
    assert without.h2d.max == 0 and without.d2h.max == 0
    assert with_copies.h2d is not None and with_copies.h2d.mean > 0
    assert without.latency.mean < with_copies.latency.mean
    assert without.latency.mean == pytest.approx(without.compute.mean)


def test_cli_ort_cuda_sweep_json_has_stage_times(cli, tmp_path):
    _cuda_ep_or_skip()
    out = tmp_path / "bench.json"
    result = cli("bench", asset_model("efficientnet_lite0"), "--backend", "ort-cuda", "--batch", "1,8",
                 "--duration", "0.5", "--json", out)
    assert result.code == 0, result
    assert "h2d" in result.out and "compute" in result.out
    run = json.loads(out.read_text())["runs"][0]
    assert run["backend"]["name"] == "onnxruntime-cuda" and run["backend"]["device"].startswith("cuda:0")
    for r in run["results"]:
        assert r["timing"] == "cuda-events"
        for key in ("h2d_ms", "compute_ms", "d2h_ms", "enqueue_ms", "host_latency_ms"):
            assert r[key]["mean"] >= 0, key
        assert r["compute_total_s"] > 0


def test_compare_ort_cpu_and_cuda_in_one_process(cli):
    _cuda_ep_or_skip()
    model = asset_model("efficientnet_lite0")
    result = cli("bench", model, "--backend", "ort-cpu", "--backend", "ort-cuda", "--batch", "8", "--duration", "1")
    assert result.code == 0, result
    assert "efficientnet_lite0.onnx@ort-cpu" in result.out and "efficientnet_lite0.onnx@ort-cuda" in result.out


def test_streams_run_concurrently_on_ort_cuda(cli):
    _cuda_ep_or_skip()
    result = cli("bench", asset_model("efficientnet_lite0"), "--backend", "ort-cuda", "--streams", "2", "--duration", "0.5")
    assert result.code == 0, result


# ---------------------------------------------------------------- TensorRT engines

def _relu_engine(path: Path, *, max_batch: int) -> Path:
    """The shared test engine, built with full TensorRT when installed (it can run on Hopper), else TensorRT-RTX."""
    try:
        import tensorrt as trt
    except ImportError:
        trt = pytest.importorskip("tensorrt_rtx")
    return build_relu_engine(path, max_batch=max_batch, trt=trt)


@pytest.fixture(scope="module")
def relu_engine(tmp_path_factory) -> Path:
    path = _relu_engine(tmp_path_factory.mktemp("bench_trt") / "relu.engine", max_batch=4)
    try:
        trtkit.load(path).close()
    except EngineError as exc:  # e.g. TensorRT-RTX on a Hopper GPU
        pytest.skip(f"this GPU cannot run the test engine: {exc}")
    return path


def test_engine_batch_above_the_profile_is_refused_listing_the_profile(cli, relu_engine):
    result = cli("bench", relu_engine, "--batch", "2,8", "--duration", "0.2")
    assert_clean_error(result, "fit no optimization profile", "max 4x3x8", "--maxShapes")


def test_tiny_engine_is_enqueue_bound_and_says_so(relu_engine):
    with trtkit.load(relu_engine) as backend:
        r = benchmark(backend, config=BenchConfig(batches=(4,), warmup_ms=100, duration_s=0.5)).results[0]
    assert r.timing == "cuda-events" and r.enqueue and r.compute
    # a ReLU over 96 floats: launching it costs more host time than the GPU needs to run it
    assert r.enqueue.median > r.compute.median
    assert any("bound by enqueue time" in w and "--cuda-graph" in w for w in r.warnings)


def test_engine_with_cuda_graph_and_streams(cli, relu_engine, tmp_path):
    out = tmp_path / "b.json"
    result = cli("bench", relu_engine, "--batch", "1,4", "--cuda-graph", "--streams", "2", "--duration", "0.3", "--json", out)
    from trtkit.engine.flavor import trt_flavor

    if trt_flavor("auto").profile_sharing != "always":  # TensorRT 8.5: one profile cannot serve two contexts
        assert result.code == 1 and "each concurrent context needs a profile of its own" in result.err, result
        assert "--infStreams=1" in result.err
        return
    assert result.code == 0, result
    doc = json.loads(out.read_text())
    assert doc["config"]["streams"] == 2
    assert [r["batch"] for r in doc["runs"][0]["results"]] == [1, 4]
