"""GPU IO benchmark: trtkit's buffer manager vs raw ONNX Runtime on the CUDA EP (run on a GPU machine).

Prints, from one run, side by side:
1. per model (YOLOv8n bs32 640, EfficientNet-Lite0 bs32): ms per batch for raw ORT numpy
   ``session.run``, raw ORT IO binding with device-resident input/output (the ceiling),
   trtkit ``infer`` (numpy in/out) and trtkit ``infer_many`` (numpy in/out, pipelined),
   and trtkit throughput as a fraction of the device-resident ceiling (target >= 0.90);
2. host->device copy bandwidth: pageable cudaMemcpy, pinned cudaMemcpyAsync (the limit),
   and the buffer manager's numpy upload (parallel staging into pinned + async copy);
3. per-call host overhead of ``infer`` vs the raw session call, in microseconds (small input).

Usage: PYTHONPATH=src python benchmarks/gpu_io.py [--models DIR] [--iters N] [--profile]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np


def _ms_per_call(fn, iters: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def _raw_sessions(ort, path: Path):
    providers = [("CUDAExecutionProvider", {"device_id": "0"}), "CPUExecutionProvider"]
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=providers)


def bench_model(ort, trtkit, path: Path, shape: tuple[int, ...], iters: int) -> None:
    from trtkit.spec import RuntimeConfig

    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    sess = _raw_sessions(ort, path)
    name = sess.get_inputs()[0].name
    raw_numpy = _ms_per_call(lambda: sess.run(None, {name: x}), iters)

    binding = sess.io_binding()
    x_dev = ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0)
    binding.bind_ortvalue_input(name, x_dev)
    for out in sess.get_outputs():
        binding.bind_output(out.name, "cuda", 0)
    sess.run_with_iobinding(binding)
    raw_device = _ms_per_call(lambda: sess.run_with_iobinding(binding), iters)
    concurrent = _two_thread_ms(ort, sess, name, x_dev, iters)

    batches = [x.copy() for _ in range(4)]  # distinct arrays, as a real input stream has
    with trtkit.load(path, config=RuntimeConfig(device="cuda", contexts=3)) as backend:
        kit_infer = _ms_per_call(lambda: backend.infer(x), iters)
        n = max(iters, 12)
        for _ in backend.infer_many(batches[:2]):
            pass
        runs = []
        for _ in range(3):  # three runs: the spread shows how noisy the host is
            t0 = time.perf_counter()
            for _ in backend.infer_many(batches[i % 4] for i in range(n)):
                pass
            runs.append((time.perf_counter() - t0) / n * 1e3)
        kit_many = statistics.median(runs)
        stages = backend.timed_infer(x)
    print(
        f"{path.name} {list(shape)}: raw numpy {raw_numpy:.2f} ms | raw device-resident IO binding {raw_device:.2f} ms | "
        f"trtkit infer {kit_infer:.2f} ms | trtkit infer_many {kit_many:.2f} ms/batch"
    )
    print(
        f"  ratios: trtkit infer_many throughput / device-resident = {raw_device / kit_many:.2f} "
        f"(runs: {', '.join(f'{raw_device / r:.2f}' for r in runs)}; target >= 0.90); "
        f"trtkit infer speed-up over raw numpy = {raw_numpy / kit_infer:.2f}x; "
        f"stages h2d {stages.h2d_ms:.2f} compute {stages.compute_ms:.2f} d2h {stages.d2h_ms:.2f} enqueue {stages.enqueue_ms:.2f} ms"
    )
    print(
        f"  raw ORT, device-resident, two threads on one session: {concurrent:.2f} ms/batch "
        f"(one thread {raw_device:.2f}; lower = ONNX Runtime overlaps one run's enqueue with another's compute)"
    )


def _two_thread_ms(ort, sess, name: str, x_dev, iters: int) -> float:
    """ms per batch when two threads run the same session concurrently (each with its own binding):
    shows whether ONNX Runtime overlaps concurrent runs of one session on the CUDA EP."""
    from concurrent.futures import ThreadPoolExecutor

    bindings = []
    for _ in range(2):
        b = sess.io_binding()
        b.bind_ortvalue_input(name, x_dev)
        for out in sess.get_outputs():
            b.bind_output(out.name, "cuda", 0)
        sess.run_with_iobinding(b)
        bindings.append(b)

    def loop(b) -> None:
        for _ in range(iters):
            sess.run_with_iobinding(b)

    with ThreadPoolExecutor(2) as pool:
        t0 = time.perf_counter()
        list(pool.map(loop, bindings))
        return (time.perf_counter() - t0) / (2 * iters) * 1e3


def bench_copies(iters: int) -> None:
    from trtkit.backends import cuda
    from trtkit.backends._device_io import IoSlot

    rt = cuda.runtime()
    x = np.random.default_rng(0).random((32, 3, 640, 640), dtype=np.float32)
    nbytes = x.nbytes
    slot = IoSlot(device_id=0)
    with cuda.DeviceBuffer(nbytes) as dev, cuda.PinnedBuffer(nbytes) as pinned:

        def pageable() -> None:
            cuda.check(rt.cudaMemcpy(dev.ptr, x.ctypes.data, nbytes, 1), "cudaMemcpy")

        def pinned_copy() -> None:
            cuda.copy_htod_async(dev.ptr, pinned.ptr, nbytes, slot.stream)
            slot.stream.synchronize()

        def managed() -> None:
            slot.upload("x", x)
            slot.stream.synchronize()

        user_pinned = pinned.view(x.dtype, x.shape)
        user_pinned[...] = x

        def managed_pinned() -> None:  # caller preprocesses straight into page-locked memory
            slot.upload("x", user_pinned)
            slot.stream.synchronize()

        from trtkit.backends import _device_io

        staging = {}
        default_threads = _device_io._COPY_THREADS
        for threads in (4, 8, 16):
            _device_io._COPY_THREADS, _device_io._copy_pool = threads, None
            staging[threads] = nbytes / (_ms_per_call(lambda: _device_io.stage_copy(slot.host.get("in/x", nbytes).view(x.dtype, x.shape), x), iters) * 1e-3) / 1e9
        _device_io._COPY_THREADS, _device_io._copy_pool = default_threads, None
        cases = (("pageable", pageable), ("pinned", pinned_copy), ("upload", managed), ("upload pinned", managed_pinned))
        gbs = {k: nbytes / (_ms_per_call(f, iters) * 1e-3) / 1e9 for k, f in cases}
    slot.close()
    print(
        f"H2D {nbytes / 1e6:.0f} MB: pageable cudaMemcpy {gbs['pageable']:.1f} GB/s | pinned cudaMemcpyAsync (limit) {gbs['pinned']:.1f} GB/s | "
        f"trtkit upload of a pageable numpy array {gbs['upload']:.1f} GB/s = {gbs['upload'] / gbs['pinned']:.2f} of pinned | "
        f"trtkit upload of a pinned numpy array {gbs['upload pinned']:.1f} GB/s = {gbs['upload pinned'] / gbs['pinned']:.2f} of pinned (target >= 0.90)"
    )
    print("  staging copy numpy->pinned (CPU): " + ", ".join(f"{t} threads {v:.1f} GB/s" for t, v in staging.items()))


def bench_overhead(ort, trtkit, path: Path, *, profile: bool) -> None:
    from trtkit.spec import RuntimeConfig

    x = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
    sess = _raw_sessions(ort, path)
    name = sess.get_inputs()[0].name
    with trtkit.load(path, config=RuntimeConfig(device="cuda")) as backend:
        raws, kits = [], []
        for _ in range(3):  # alternate, so drift on the host hits both alike
            raws.append(_ms_per_call(lambda: sess.run(None, {name: x}), 300, warmup=20))
            kits.append(_ms_per_call(lambda: backend.infer(x), 300, warmup=20))
        raw, kit = statistics.median(raws), statistics.median(kits)
        enqueue = statistics.median(backend.timed_infer(x).enqueue_ms for _ in range(50))
        if profile:
            _profile_infer(backend, x)
    print(
        f"per-call host overhead ({path.name} bs1): raw session.run {raw * 1e3:.0f} us, trtkit infer {kit * 1e3:.0f} us "
        f"(difference {(kit - raw) * 1e3:+.0f} us; per run: {', '.join(f'{(k - r) * 1e3:+.0f}' for r, k in zip(raws, kits))}); "
        f"trtkit enqueue time {enqueue * 1e3:.0f} us"
    )


def _profile_infer(backend, x: np.ndarray) -> None:
    """Where the host time of ``infer`` goes (cProfile, own time per function)."""
    import cProfile
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    for _ in range(300):
        backend.infer(x)
    prof.disable()
    print("cProfile of 300 trtkit infer calls (EfficientNet bs1), top functions by own time:")
    pstats.Stats(prof).sort_stats("tottime").print_stats(14)


def main() -> None:
    here = Path(__file__).resolve().parents[1]
    default = Path(os.environ.get("TRTKIT_SHARED", here.parent / "shared")) / "assets" / "models"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=default)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--profile", action="store_true", help="also print a cProfile of trtkit infer (bs1)")
    args = parser.parse_args()

    import onnxruntime as ort

    import trtkit

    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()
    bench_copies(args.iters)
    bench_model(ort, trtkit, args.models / "yolov8n_nudenet_320.onnx", (32, 3, 640, 640), args.iters)
    bench_model(ort, trtkit, args.models / "efficientnet_lite0.onnx", (32, 3, 224, 224), args.iters)
    bench_overhead(ort, trtkit, args.models / "efficientnet_lite0.onnx", profile=args.profile)


if __name__ == "__main__":
    main()
