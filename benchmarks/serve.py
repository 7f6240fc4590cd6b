"""Triton serving a model through trtkit: throughput and latency at concurrency 1, 8 and 32,
dynamic batching on and off, side by side in one run, on a real tritonserver (loopback only).

The load generator is written on ``tritonclient`` (perf_analyzer does not run here): each of
C threads has its own HTTP client and sends one request at a time, so C requests are in flight.
Every level is bounded in requests and in seconds. Errors must be 0; the server's resident
memory (tritonserver + its Python-backend stubs) is reported before and after the load.

Target (issue #15): with dynamic batching at concurrency 32, throughput >= 3x that of
concurrency 1, at a p99 latency <= 2x the concurrency-1 p99.

Run: python benchmarks/serve.py [--model M.onnx | --model mlp] [--requests 400] [--seconds 20] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import tritonclient.http as httpclient

from trtkit.serve.config import TritonOptions
from trtkit.serve.repository import write_repository
from trtkit.serve.server import ServerConfig, TritonServer

SHARED = Path(os.environ.get("TRTKIT_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "assets" / "models"
LEVELS = (1, 8, 32)


def _mlp(path: Path) -> Path:
    """A small MLP (x [batch,256] -> 3 x Gemm 256 -> [batch,16]): per-request overhead dominates its cost,
    which is where dynamic batching pays; efficientnet on 2 CPU cores is compute-bound instead."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "x"
    for i, width in enumerate((256, 256, 16)):
        inits += [numpy_helper.from_array(rng.standard_normal((256, width)).astype(np.float32) / 16, f"w{i}"),
                  numpy_helper.from_array(np.zeros(width, np.float32), f"b{i}")]
        nodes.append(helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [f"h{i}"]))
        prev = f"h{i}"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 256])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, ["batch", 16])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _feeds(model: Path) -> dict[str, tuple[np.ndarray, str]]:
    """One batch-1 request per input (random data at the model's static dims; dynamic ones at 1 / 224)."""
    import trtkit
    from trtkit.serve.config import TRITON_DTYPES

    rng = np.random.default_rng(0)
    feeds = {}
    with trtkit.load(model) as backend:
        for spec in backend.inputs:
            shape = [d if isinstance(d, int) else (1 if i == 0 else 224) for i, d in enumerate(spec.shape)]
            feeds[spec.name] = (rng.random(shape).astype(spec.dtype), TRITON_DTYPES[spec.dtype][5:])
    return feeds


def _level(url: str, model: str, feeds, *, concurrency: int, requests: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    issued = [0]
    deadline = time.perf_counter() + seconds

    def worker() -> None:
        client = httpclient.InferenceServerClient(url, connection_timeout=60, network_timeout=60)
        inputs = []
        for name, (value, dtype) in feeds.items():
            item = httpclient.InferInput(name, list(value.shape), dtype)
            item.set_data_from_numpy(value)
            inputs.append(item)
        while True:
            with lock:
                if issued[0] >= requests or time.perf_counter() > deadline:
                    return
                issued[0] += 1
            start = time.perf_counter()
            try:
                client.infer(model, inputs)
                elapsed = time.perf_counter() - start
                with lock:
                    latencies.append(elapsed)
            except Exception as exc:  # the figure to report is the error count, with one example
                with lock:
                    errors.append(str(exc)[:200])

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = np.array(latencies) * 1000
    return {
        "requests": len(latencies), "errors": len(errors), "error": errors[0] if errors else "",
        "throughput": len(latencies) / wall if wall else 0.0,
        "p50": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
        "p99": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(SHARED / "efficientnet_lite0.onnx"), help="an .onnx model, or 'mlp'")
    parser.add_argument("--requests", type=int, default=400, help="requests per level at most")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds per level at most")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-queue-delay-us", type=int, default=2000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="trtkit-bench-serve-") as tmp:
        model = _mlp(Path(tmp) / "mlp.onnx") if args.model == "mlp" else Path(args.model)
        feeds = _feeds(model)
        repo = Path(tmp) / "repo"
        common = dict(backend="python", device=args.device, max_batch=args.max_batch, warmup=True)
        write_repository([model], repo, options=TritonOptions(name="dyn", max_queue_delay_us=args.max_queue_delay_us,
                                                              preferred_batch=(8, 16, 32), **common))
        write_repository([model], repo, options=TritonOptions(name="nodyn", dynamic_batching=False, **common))
        with TritonServer(repo, config=ServerConfig(http_port=0, grpc_port=0, metrics_port=0), log=lambda _: None) as server:
            url = server.endpoints()["http"].removeprefix("http://")
            for name in ("dyn", "nodyn"):  # warm both models (first ORT runs allocate)
                _level(url, name, feeds, concurrency=2, requests=10, seconds=30)
            mem_before = server.memory_bytes()
            rows = []
            for mode in ("dyn", "nodyn"):
                for c in LEVELS:
                    rows.append((mode, c, _level(url, mode, feeds, concurrency=c, requests=args.requests, seconds=args.seconds)))
            mem_after = server.memory_bytes()
            stats = httpclient.InferenceServerClient(url).get_inference_statistics("dyn")["model_stats"][0]

    print(f"Triton {model.name}: trtkit in the Python backend, ORT {args.device.upper()}, {os.cpu_count()} cores, "
          f"max_batch_size {args.max_batch}, loopback HTTP; <= {args.requests} requests / {args.seconds:.0f} s per level")
    print(f"{'dynamic batching':<17}{'conc.':>6}{'requests':>10}{'errors':>8}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}")
    for mode, c, r in rows:
        label = "on" if mode == "dyn" else "off"
        print(f"{label:<17}{c:>6}{r['requests']:>10}{r['errors']:>8}{r['throughput']:>9.1f}{r['p50']:>9.1f}{r['p99']:>9.1f}")
    print(f"dynamic batching on: {stats['inference_count']} inferences in {stats['execution_count']} executions "
          f"(mean batch {stats['inference_count'] / max(stats['execution_count'], 1):.1f})")
    print(f"server memory (tritonserver + stubs, RSS): {mem_before / 2**20:.0f} MiB before the load, "
          f"{mem_after / 2**20:.0f} MiB after")
    base = next(r for m, c, r in rows if m == "dyn" and c == 1)
    top = next(r for m, c, r in rows if m == "dyn" and c == 32)
    speedup, p99_ratio = top["throughput"] / base["throughput"], top["p99"] / base["p99"]
    met = speedup >= 3 and p99_ratio <= 2
    print(f"target (dyn, c=32 vs c=1): throughput x{speedup:.2f} (>= 3), p99 x{p99_ratio:.2f} (<= 2): "
          f"{'met' if met else 'NOT met'}")
    errors = [r for _, _, r in rows if r["errors"]]
    for r in errors:
        print(f"error example: {r['error']}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
