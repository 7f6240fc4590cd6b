"""TensorRT engines (FP32, FP16) against ONNX Runtime's CUDA EP, side by side in one run (GPU machine).

For YOLOv8n (320), EfficientNet-Lite0 and SCRFD (made dynamic-batch with trtkit reshape) at batch 1 and 32:

- compute: GPU time of one inference with inputs/outputs already on the device (trtkit timed_infer with
  transfers off, CUDA events), as items/s;
- latency: H2D + compute + D2H of one numpy inference (trtexec's "Latency"), ms;
- numpy: items/s of ``infer_many`` over numpy batches (numpy in, numpy out): trtkit's staged pipeline
  (host staging and H2D of the next batches on free IO slots while the engine computes), with one
  context, and with ``--contexts`` N contexts when N > 1;
- ratio: numpy items/s / compute items/s (target >= 0.85 at batch 32);
- pinned: the same stream with the input in page-locked memory (uploaded without staging) and the outputs
  written by ``submit(into=)`` into page-locked arrays (no staging copy, no new array): what a caller that
  keeps its buffers page-locked gets, where the host copies of pageable numpy arrays are the limit;
- ORT-CUDA: device-resident IO binding and numpy ``session.run`` items/s, when onnxruntime-gpu is installed.

Engines are built with trtkit build (profile 1:8:32; with --contexts N > 1, N identical profiles where the
TensorRT version cannot share a profile between contexts, e.g. 8.5). With the H200 kit (TensorRT 8.5) the cuBLAS/cuDNN tactic sources are off.

Usage: PYTHONPATH=src python benchmarks/trt_vs_ort.py [--assets DIR] [--out DIR] [--contexts 1] [--seconds 2]
"""

from __future__ import annotations

import argparse
import os
import time
from collections import deque
from pathlib import Path

import numpy as np

MODELS = {  # name: (asset path, input name, per-item shape)
    "yolov8n": ("models/yolov8n_nudenet_320.onnx", "images", (3, 320, 320)),
    "efficientnet_lite0": ("models/efficientnet_lite0.onnx", "input", (3, 224, 224)),
    "scrfd": ("models/scrfd_2.5g_kps.onnx", "input.1", (3, 640, 640)),
}
BATCHES = (1, 32)


def _dynamic(src: Path, out: Path) -> Path:
    """SCRFD's ONNX is static [1,3,640,640]: free its batch axis (trtkit reshape checks the result with ORT)."""
    from trtkit.graph.reshape import ReshapeConfig, reshape

    if not out.exists():
        reshape(src, out, config=ReshapeConfig(dynamic_batch=True))
    return out


def _engine(src: Path, out: Path, name: str, shape: tuple[int, ...], precision: str, contexts: int) -> Path:
    from trtkit import BuildConfig, ShapeProfile
    from trtkit.engine.build import build
    from trtkit.engine.flavor import trt_flavor

    flavor = trt_flavor("tensorrt")
    tactics = "-CUBLAS,-CUBLAS_LT,-CUDNN" if {"CUBLAS", "CUDNN"} <= set(flavor.tactic_sources) else None
    prof = ShapeProfile.from_shapes(min={name: (1, *shape)}, opt={name: (8, *shape)}, max={name: (32, *shape)})
    copies = 1 if flavor.profile_sharing == "always" else contexts
    t0 = time.perf_counter()
    report = build(src, out, config=BuildConfig(backend="tensorrt", precision=precision, tactic_sources=tactics,
                                                profiles=(prof,) * copies))
    print(f"  built {out.name} ({precision}, {copies} profile(s)) in {time.perf_counter() - t0:.0f} s"
          f"{' (cached)' if report.cached else ''}", flush=True)
    return out


def _median(values: list[float]) -> float:
    return float(np.median(np.asarray(values)))


def _compute_ms(engine, feeds, seconds: float) -> tuple[float, float]:
    """(median compute ms with IO on the device, median numpy latency ms = h2d + compute + d2h)."""
    for _ in range(5):
        engine.timed_infer(feeds, transfers=False)
    compute, latency = [], []
    end = time.perf_counter() + seconds / 2
    while time.perf_counter() < end or len(compute) < 20:
        compute.append(engine.timed_infer(feeds, transfers=False).compute_ms)
    end = time.perf_counter() + seconds / 2
    while time.perf_counter() < end or len(latency) < 20:
        latency.append(engine.timed_infer(feeds).latency_ms)
    return _median(compute), _median(latency)


def _numpy_items_per_s(engine, feeds, batch: int, seconds: float) -> float:
    """One ``infer_many`` over a stream of numpy batches lasting ``seconds`` (the pipeline fills once and
    drains once, as in a serving loop; repeated short calls would measure the fill/drain instead)."""
    list(engine.infer_many([feeds] * 8))  # warm every slot and context
    t0 = time.perf_counter()

    def batches():
        while time.perf_counter() - t0 < seconds:
            yield feeds

    count = sum(1 for _ in engine.infer_many(batches()))
    return count * batch / (time.perf_counter() - t0)


def _pinned_items_per_s(engine, name: str, x: np.ndarray, seconds: float, *, depth: int = 8) -> float:
    """Like :func:`_numpy_items_per_s`, the input page-locked and ``depth`` sets of page-locked output arrays
    taken round the ring by ``submit(into=)`` (a set is reused only once its call is done)."""
    from trtkit.backends import cuda

    held: list = []

    def pinned_copy(a: np.ndarray) -> np.ndarray:
        buf = cuda.PinnedBuffer(a.nbytes)
        held.append(buf)
        view = buf.view(a.dtype, a.shape)
        view[...] = a
        return view

    try:
        feeds = {name: pinned_copy(x)}
        ring = [{k: pinned_copy(v) for k, v in engine.infer(feeds).items()} for _ in range(depth)]
        pending: deque = deque()
        for i in range(2 * depth):  # warm every slot
            pending.append(engine.submit(feeds, into=ring[i % depth]))
            if len(pending) >= depth:
                pending.popleft().result()
        while pending:
            pending.popleft().result()
        count, i, t0 = 0, 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            pending.append(engine.submit(feeds, into=ring[i % depth]))
            i += 1
            if len(pending) >= depth:
                pending.popleft().result()
                count += 1
        while pending:
            pending.popleft().result()
            count += 1
        return count * x.shape[0] / (time.perf_counter() - t0)
    finally:
        for buf in held:
            buf.close()


def _ort_cuda(path: Path, name: str, x: np.ndarray, seconds: float) -> tuple[float, float] | None:
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return None
    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CUDAExecutionProvider"])
    binding = sess.io_binding()
    binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))
    for out in sess.get_outputs():
        binding.bind_output(out.name, "cuda", 0)

    def rate(fn) -> float:
        for _ in range(5):
            fn()
        count, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 2:
            fn()
            count += 1
        return count * x.shape[0] / (time.perf_counter() - t0)

    return rate(lambda: sess.run_with_iobinding(binding)), rate(lambda: sess.run(None, {name: x}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--assets", default=os.environ.get("TRTKIT_ASSETS", "../shared/assets"))
    ap.add_argument("--out", default=os.environ.get("TRTKIT_GPU_ENGINES", "/tmp/trtkit-bench-engines"))
    ap.add_argument("--contexts", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args()

    import trtkit
    from trtkit import RuntimeConfig
    from trtkit.backends.cuda import runtime
    from trtkit.engine.flavor import trt_flavor
    from trtkit.engine.info import detect_gpu

    flavor = trt_flavor("tensorrt")
    gpu, _ = detect_gpu(0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"{flavor.pretty} on {gpu['name'] if gpu else '?'}; cuda-python {runtime().__name__}; contexts for infer_many: {args.contexts}")
    rows = []
    for key in args.models.split(","):
        rel, name, shape = MODELS[key]
        src = Path(args.assets) / rel
        if key == "scrfd":
            src = _dynamic(src, out / "scrfd_dynamic.onnx")
        for precision in ("fp32", "fp16"):
            plan = _engine(src, out / f"{key}-{precision}-bench.plan", name, shape, precision, args.contexts)
            with trtkit.load(plan, config=RuntimeConfig(device="cuda")) as one, \
                    trtkit.load(plan, config=RuntimeConfig(device="cuda", contexts=args.contexts)) as many:
                for batch in BATCHES:
                    x = np.random.default_rng(batch).random((batch, *shape), dtype=np.float32)
                    feeds = {name: x}
                    compute_ms, latency_ms = _compute_ms(one, feeds, args.seconds)
                    np1 = _numpy_items_per_s(one, feeds, batch, args.seconds)
                    npn = _numpy_items_per_s(many, feeds, batch, args.seconds) if args.contexts > 1 else np1
                    pin = _pinned_items_per_s(one, name, x, args.seconds)
                    ort = _ort_cuda(src, name, x, args.seconds) if precision == "fp32" else None
                    rows.append((key, precision, batch, compute_ms, latency_ms, batch / compute_ms * 1e3, np1, npn, pin, ort))
                    print(f"  {key} {precision} bs{batch}: compute {compute_ms:.3f} ms, latency {latency_ms:.3f} ms, "
                          f"numpy x1 {np1:,.0f}/s, x{args.contexts} {npn:,.0f}/s, pinned {pin:,.0f}/s", flush=True)
    head = (f"{'model':<19}{'prec':<6}{'bs':>3}{'compute ms':>11}{'latency ms':>11}{'compute/s':>11}"
            f"{'numpy x1/s':>12}{'numpy xN/s':>12}{'ratio xN':>9}{'pinned/s':>10}{'ratio':>6}{'ORT-CUDA dev/s':>15}{'ORT-CUDA np/s':>14}")
    print("\n" + head)
    for key, precision, batch, c_ms, l_ms, c_rate, np1, npn, pin, ort in rows:
        ort_txt = (f"{ort[0]:>15,.0f}{ort[1]:>14,.0f}" if ort else f"{'not run':>15}{'not run':>14}")
        print(f"{key:<19}{precision:<6}{batch:>3}{c_ms:>11.3f}{l_ms:>11.3f}{c_rate:>11,.0f}{np1:>12,.0f}{npn:>12,.0f}"
              f"{npn / c_rate:>9.2f}{pin:>10,.0f}{pin / c_rate:>6.2f}{ort_txt}")
    print(f"\nratio = numpy infer_many items/s with {args.contexts} context(s) / compute-only items/s; target >= 0.85 at bs32."
          "\npinned = page-locked input, outputs into page-locked arrays (submit(into=)), one context."
          "\nORT-CUDA 'not run' = onnxruntime-gpu not installed in this run.")


if __name__ == "__main__":
    main()
