"""Host overhead of trtkit's OnnxRuntimeBackend.infer against raw InferenceSession.run (batch 1, CPU).

Both paths use the SAME InferenceSession (so the same model, SessionOptions,
thread pools and memory arena); the only difference is trtkit's feed
validation and result dict. Timings are interleaved: blocks of raw and trtkit
calls alternate (and alternate which goes first), so drift in machine load hits
both sides alike. Prints the median ms of each, their ratio (target <= 1.03),
the median of per-block ratios (robust to slow drift), and the difference of
the medians in microseconds.

A tiny Add model is timed too: there the runtime is nearly zero, so it shows
trtkit's absolute per-call cost rather than a ratio.

    python benchmarks/ort_overhead.py [--blocks 20] [--per-block 10] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from trtkit.backends.onnxruntime import OnnxRuntimeBackend
from trtkit.measure.inputs import generate_inputs
from trtkit.spec import RuntimeConfig

ROOT = Path(__file__).resolve().parents[1]
MODELS = Path(os.environ.get("TRTKIT_SHARED", ROOT.parent / "shared")) / "assets" / "models"
CASES = {"EfficientNet-Lite0": "efficientnet_lite0.onnx", "SCRFD-2.5G": "scrfd_2.5g_kps.onnx"}


def tiny_model(directory: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "x"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])],
    )
    path = directory / "tiny_add.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by older ONNX Runtime builds too
    onnx.save(model, str(path))
    return path


def time_block(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def measure(path: Path, *, blocks: int, per_block: int, threads: int | None) -> tuple[float, float, float, float]:
    """(median raw ms, median trtkit ms, median of per-block ratios, median difference in us)."""
    backend = OnnxRuntimeBackend(path, config=RuntimeConfig(threads=threads))
    feeds = generate_inputs(backend.inputs)  # a dynamic batch axis becomes 1
    session, names = backend.session, [s.name for s in backend.outputs]
    raw_fn = lambda: session.run(names, feeds)  # noqa: E731
    kit_fn = lambda: backend.infer(feeds)  # noqa: E731
    for _ in range(max(3, per_block)):  # warm-up: arena allocation, first-run kernels
        raw_fn(), kit_fn()
    raw: list[float] = []
    kit: list[float] = []
    ratios: list[float] = []
    for block in range(blocks):
        first, second = (raw_fn, kit_fn) if block % 2 == 0 else (kit_fn, raw_fn)  # alternate who goes first
        times = {first: time_block(first, per_block)}
        times[second] = time_block(second, per_block)
        raw += times[raw_fn]
        kit += times[kit_fn]
        ratios.append(statistics.median(times[kit_fn]) / statistics.median(times[raw_fn]))
    backend.close()
    med_raw, med_kit = statistics.median(raw), statistics.median(kit)
    return med_raw * 1e3, med_kit * 1e3, statistics.median(ratios), (med_kit - med_raw) * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=20)
    parser.add_argument("--per-block", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: ONNX Runtime's)")
    args = parser.parse_args(argv)
    import onnxruntime

    print(f"onnxruntime {onnxruntime.__version__}, CPU, {os.cpu_count()} cores, threads={args.threads or 'default'}, "
          f"{args.blocks} blocks x {args.per_block} calls per side, interleaved")
    print(f"{'model':<20} {'raw run ms':>11} {'trtkit ms':>10} {'ratio':>7} {'block ratio':>12} {'diff us':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        cases = {name: MODELS / file for name, file in CASES.items()}
        cases["tiny Add [1,16]"] = tiny_model(Path(tmp))
        for name, path in cases.items():
            if not path.exists():
                print(f"{name:<20} skipped: {path} not found (clone ../shared beside the repo or set TRTKIT_SHARED)")
                continue
            raw, kit, block_ratio, diff = measure(path, blocks=args.blocks, per_block=args.per_block, threads=args.threads)
            print(f"{name:<20} {raw:>11.3f} {kit:>10.3f} {kit / raw:>7.3f} {block_ratio:>12.3f} {diff:>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
