"""Triton serving a model through trtkit: throughput and latency at concurrency 1, 8 and 32,
dynamic batching on and off, side by side in one run, on a real tritonserver (loopback only).

The load generator is a separate process (``--client``) running ``tritonclient``'s asyncio
client (gRPC by default, ``--protocol http`` for aiohttp) with C requests in flight on one
event loop: no GIL contention with a server-side Python, no thread per request. Every level
is bounded in requests and in seconds; errors must be 0; the server's resident memory
(tritonserver + its Python-backend stubs) is reported before and after the load.

Where the time goes, per level: the client's own CPU per request (measured in the client
process), the server's CPU per request (tritonserver + stubs, from /proc), and Triton's own
statistics for the model (mean batch, queue time and compute time per request). On a machine
with few cores, client CPU + server CPU per request bounds the throughput, and the rest of
the latency is queueing.

Target (issue #15): with dynamic batching at concurrency 32, throughput >= 3x that of
concurrency 1, at a p99 latency <= 2x the concurrency-1 p99.

Run: python benchmarks/serve.py [--model mlp|wide|M.onnx] [--requests 2000] [--seconds 15]
     [--protocol grpc|http] [--max-queue-delay-us 100] [--preferred-batch 8,16,32] [--threads 1]
     [--instances 1] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHARED = Path(os.environ.get("TRTKIT_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "assets" / "models"
LEVELS = (1, 8, 32)
# Synthetic MLPs, x [batch, width] -> Gemm layers -> [batch, 16]:
#   mlp:  3 layers of 256 (0.8 MB of weights): per-request overhead dominates its cost;
#   wide: 4 layers of 2048 (64 MB of weights, beyond the CPU caches): a batch-1 run is bound by
#         reading the weights from memory, so a batch of 32 costs little more than one request --
#         the case dynamic batching exists for (efficientnet on 2 CPU cores is compute-bound instead).
MLPS = {"mlp": (256, 3), "wide": (2048, 4)}


def _mlp(path: Path, width: int, layers: int) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "x"
    widths = [width] * (layers - 1) + [16]
    for i, out in enumerate(widths):
        inits += [numpy_helper.from_array((rng.standard_normal((width, out)) / np.sqrt(width)).astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(np.zeros(out, np.float32), f"b{i}")]
        nodes.append(helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [f"h{i}"]))
        prev = f"h{i}"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, ["batch", 16])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _feeds(model: Path, out: Path) -> Path:
    """One batch-1 request per input (random data at the model's static dims; dynamic ones at 1 / 224), saved for the client."""
    import trtkit

    rng = np.random.default_rng(0)
    feeds = {}
    with trtkit.load(model) as backend:
        for spec in backend.inputs:
            shape = [d if isinstance(d, int) else (1 if i == 0 else 224) for i, d in enumerate(spec.shape)]
            feeds[spec.name] = rng.random(shape).astype(spec.dtype)
    np.savez(out, **feeds)
    return out


# ---------------------------------------------------------------- the client process


async def _load(url: str, model: str, feeds: dict[str, np.ndarray], *, protocol: str, concurrency: int,
                requests: int, seconds: float) -> dict:
    from tritonclient.utils import InferenceServerException, np_to_triton_dtype

    if protocol == "grpc":
        import tritonclient.grpc.aio as aio
    else:
        import tritonclient.http.aio as aio
    client = aio.InferenceServerClient(url)
    inputs = []
    for name, value in feeds.items():
        item = aio.InferInput(name, list(value.shape), np_to_triton_dtype(value.dtype))
        item.set_data_from_numpy(value)
        inputs.append(item)
    latencies: list[float] = []
    errors: list[str] = []
    issued = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal issued
        while issued < requests and time.perf_counter() < deadline:
            issued += 1
            start = time.perf_counter()
            try:
                await client.infer(model, inputs)
            except InferenceServerException as exc:  # the figure to report is the error count, with one example
                errors.append(str(exc)[:200])
                continue
            latencies.append(time.perf_counter() - start)

    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    await client.close()
    lat = np.array(latencies) * 1000
    return {
        "requests": len(latencies), "errors": len(errors), "error": errors[0] if errors else "", "wall": wall,
        "throughput": len(latencies) / wall if wall else 0.0, "client_cpu_ms": 1000 * cpu / max(len(latencies), 1),
        "mean": float(lat.mean()) if len(lat) else float("nan"),
        "p50": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
        "p99": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
    }


def client_main(args: argparse.Namespace) -> int:
    with np.load(args.feeds) as data:
        feeds = {k: data[k] for k in data.files}
    result = asyncio.run(_load(args.url, args.name, feeds, protocol=args.protocol, concurrency=args.concurrency,
                               requests=args.requests, seconds=args.seconds))
    print(json.dumps(result))
    return 0


# ---------------------------------------------------------------- the server side


def _stats(server, name: str) -> dict:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(server.endpoints()["http"].removeprefix("http://"))
    stats = client.get_inference_statistics(name)["model_stats"][0]
    s = stats["inference_stats"]
    return {"inferences": int(stats["inference_count"]), "executions": int(stats["execution_count"]),
            "queue_ns": int(s["queue"]["ns"]), "compute_ns": sum(int(s[k]["ns"]) for k in ("compute_input", "compute_infer", "compute_output")),
            "success": int(s["success"]["count"]), "success_ns": int(s["success"]["ns"])}


def _level(server, args: argparse.Namespace, name: str, feeds: Path, *, concurrency: int, requests: int, seconds: float) -> dict:
    grpc = args.protocol == "grpc"
    url = server.endpoints()["grpc" if grpc else "http"].removeprefix("http://")
    before, cpu0 = _stats(server, name), server.cpu_seconds()
    done = subprocess.run(
        [sys.executable, __file__, "--client", "--url", url, "--name", name, "--feeds", str(feeds),
         "--protocol", args.protocol, "--concurrency", str(concurrency), "--requests", str(requests),
         "--seconds", str(seconds)],
        capture_output=True, text=True, timeout=seconds + 120,
    )
    if done.returncode:
        raise SystemExit(f"the load client failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    after, cpu1 = _stats(server, name), server.cpu_seconds()
    n = max(after["success"] - before["success"], 1)
    row.update(
        server_cpu_ms=1000 * (cpu1 - cpu0) / max(row["requests"], 1),
        batch=(after["inferences"] - before["inferences"]) / max(after["executions"] - before["executions"], 1),
        queue_ms=(after["queue_ns"] - before["queue_ns"]) / n / 1e6,
        compute_ms=(after["compute_ns"] - before["compute_ns"]) / n / 1e6,
        triton_ms=(after["success_ns"] - before["success_ns"]) / n / 1e6,
    )
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mlp", help="mlp, wide (synthetic MLPs, see MLPS), or an .onnx path "
                        f"(e.g. {SHARED / 'efficientnet_lite0.onnx'})")
    parser.add_argument("--requests", type=int, default=2000, help="requests per level at most")
    parser.add_argument("--seconds", type=float, default=15.0, help="seconds per level at most")
    parser.add_argument("--protocol", default="grpc", choices=("grpc", "http"))
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-queue-delay-us", type=int, default=100, help="dynamic batching delay (trtkit triton's default)")
    parser.add_argument("--preferred-batch", default="", help="comma-separated preferred batch sizes (default none)")
    parser.add_argument("--instances", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads per instance "
                        "(1: ORT's default pool spins and takes the cores Triton and the client need; 0 = ORT's default)")
    # the client process
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    parser.add_argument("--feeds", help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        return client_main(args)

    from trtkit.serve.config import TritonOptions
    from trtkit.serve.repository import write_repository
    from trtkit.serve.server import ServerConfig, TritonServer

    preferred = tuple(int(v) for v in args.preferred_batch.split(",") if v)
    with tempfile.TemporaryDirectory(prefix="trtkit-bench-serve-") as tmp:
        if args.model in MLPS:
            model = _mlp(Path(tmp) / f"{args.model}.onnx", *MLPS[args.model])
        else:
            model = Path(args.model)
        feeds = _feeds(model, Path(tmp) / "feeds.npz")
        repo = Path(tmp) / "repo"
        common = dict(backend="python", device=args.device, max_batch=args.max_batch, warmup=True, instances=args.instances,
                      threads=args.threads or None)
        write_repository([model], repo, options=TritonOptions(name="dyn", max_queue_delay_us=args.max_queue_delay_us,
                                                              preferred_batch=preferred, **common))
        write_repository([model], repo, options=TritonOptions(name="nodyn", dynamic_batching=False, **common))
        with TritonServer(repo, config=ServerConfig(http_port=0, grpc_port=0, metrics_port=0), log=lambda _: None) as server:
            for name in ("dyn", "nodyn"):  # warm both models (first ORT runs allocate)
                _level(server, args, name, feeds, concurrency=4, requests=50, seconds=30)
            mem_before = server.memory_bytes()
            rows = []
            for mode in ("dyn", "nodyn"):
                for c in LEVELS:
                    rows.append((mode, c, _level(server, args, mode, feeds, concurrency=c, requests=args.requests,
                                                 seconds=args.seconds)))
            mem_after = server.memory_bytes()

    print(f"Triton {model.name}: trtkit in the Python backend, ORT {args.device.upper()}, {os.cpu_count()} cores, "
          f"max_batch_size {args.max_batch}, instances {args.instances}, ORT threads {args.threads or 'default'}, queue delay {args.max_queue_delay_us} us, "
          f"preferred {','.join(map(str, preferred)) or 'none'}; client: {args.protocol} asyncio in its own process; "
          f"<= {args.requests} requests / {args.seconds:.0f} s per level")
    print(f"{'dyn.batch':<10}{'conc.':>6}{'requests':>9}{'errors':>7}{'req/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'mean':>8}"
          f"{'in Triton':>10}{'queue':>8}{'exec':>8}{'batch':>7}{'client cpu':>11}{'server cpu':>11}")
    for mode, c, r in rows:
        label = "on" if mode == "dyn" else "off"
        print(f"{label:<10}{c:>6}{r['requests']:>9}{r['errors']:>7}{r['throughput']:>9.1f}{r['p50']:>8.2f}{r['p99']:>8.2f}"
              f"{r['mean']:>8.2f}{r['triton_ms']:>10.2f}{r['queue_ms']:>8.2f}{r['compute_ms']:>8.2f}{r['batch']:>7.1f}"
              f"{r['client_cpu_ms']:>9.2f}ms{r['server_cpu_ms']:>9.2f}ms")
    print("mean: client-side mean latency (ms); in Triton: mean time from Triton receiving a request to its response "
          "(queue + exec + Triton's own handling), the rest of the mean is the client and the gRPC/HTTP transport; "
          "queue/exec: Triton's per-request figures for the model; batch: mean requests per model execution; "
          "client/server cpu: CPU time per request of the load client / of tritonserver + its stubs")
    print(f"server memory (tritonserver + stubs, RSS): {mem_before / 2**20:.0f} MiB before the load, "
          f"{mem_after / 2**20:.0f} MiB after")
    base = next(r for m, c, r in rows if m == "dyn" and c == 1)
    top = next(r for m, c, r in rows if m == "dyn" and c == 32)
    speedup, p99_ratio = top["throughput"] / base["throughput"], top["p99"] / base["p99"]
    met = speedup >= 3 and p99_ratio <= 2
    print(f"target (dyn, c=32 vs c=1): throughput x{speedup:.2f} (>= 3), p99 x{p99_ratio:.2f} (<= 2): "
          f"{'met' if met else 'NOT met'}")
    # Why, in numbers (Little's law: C requests in flight = throughput x mean latency)
    cores = os.cpu_count() or 1
    cpu = top["client_cpu_ms"] + top["server_cpu_ms"]
    need = 32 / (2 * base["p99"] / 1000)
    print(f"why: at c=32 a request costs {top['client_cpu_ms']:.2f} ms of client CPU + {top['server_cpu_ms']:.2f} ms of "
          f"server CPU; {cores} cores serve at most {1000 * cores / cpu:.0f} req/s, so the mean latency is at least "
          f"{32 * cpu / cores:.1f} ms. A p99 within 2x the c=1 p99 ({2 * base['p99']:.1f} ms) needs >= {need:.0f} req/s, "
          f"i.e. <= {1000 * cores / need:.2f} ms of CPU per request (client and server together). This run had "
          f"{cpu * top['throughput'] / 1000:.2f} of the {cores} cores at c=32 (other processes took the rest)")
    errors = [r for _, _, r in rows if r["errors"]]
    for r in errors:
        print(f"error example: {r['error']}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
