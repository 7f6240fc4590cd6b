"""Build the engines the GPU suite and the GPU benchmarks use, in the background, before they run.

TensorRT 8.5 on the H200 takes 15 s to 6 min per engine (tactic timing), so they outrun a device call; started
in its own process session, this builds while later calls upload other things. One build at a time by default:
8 in parallel on the one GPU were slower (EfficientNet-Lite0 took 332 s instead of about 15 s), since tactic
timing needs the GPU to itself. Each job here calls the very function the test or benchmark calls, with the same arguments;
trtkit build's cache (the sidecar's ``cache_key``) then makes the test or benchmark reuse the engine. A job
that does not finish within ``--budget`` seconds is stopped (builds write atomically: no partial engine), and
its test builds it itself.

    python -m tests.gpu.prebuild [--jobs 1] [--budget 540] [--only suite,bench,nms,pipelines]

Run it on the device machine after ``source .trt/py/setup.sh`` (see tests/README.md).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def engines_dir() -> Path:
    return Path(os.environ.get("TRTKIT_GPU_ENGINES", "/tmp/trtkit-gpu-engines"))


def _suite(name: str) -> str:
    from tests.gpu import test_tensorrt_gpu as suite

    if name == "ppocr_rec" and suite.REC_NEEDS_CUBLAS:  # its tests skip: no 13-minute build that fails
        return "nothing (PP-OCRv4 rec needs cuBLAS-LT on TensorRT 8.x, off here: see REC_NEEDS_CUBLAS)"
    return str(suite._Engines()[name])


def _suite_variant(variant: str) -> str:
    from tests.conftest import asset_model
    from tests.gpu import test_tensorrt_gpu as suite

    prof = suite.MODELS["efficientnet_lite0"][0]
    src = asset_model("efficientnet_lite0")
    kw = {"fp16": dict(precision="fp16", profiles=(prof,)), "3profiles": dict(profiles=(prof, prof, prof))}[variant]
    return str(suite.build_engine(src, f"efficientnet_lite0-{variant}", **kw))


def _bench(key: str, precision: str, contexts: int = 1) -> str:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import trt_vs_ort as bench

    from tests.conftest import ASSETS

    rel, name, shape = bench.MODELS[key]
    out = engines_dir()
    src = ASSETS / rel
    if key == "scrfd":
        src = bench._dynamic(src, out / "scrfd_dynamic.onnx")
    return str(bench._engine(src, out / f"{key}-{precision}-bench.plan", name, shape, precision, contexts))


def _pipeline(name: str) -> str:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import pipelines

    return str(pipelines.build_pipeline_engine(name, engines_dir()))


def _nms(which: str) -> str:
    from tests.conftest import asset_model
    from tests.gpu.test_tensorrt_gpu import build_engine
    from trtkit.graph.nms import AddNmsConfig, add_nms

    with tempfile.TemporaryDirectory() as tmp:  # the test writes the same bytes elsewhere: the cache key is the sha256
        if which == "yolov8n":
            src = add_nms(asset_model("yolov8n"), Path(tmp) / "y8_nms.onnx",
                          config=AddNmsConfig(conf=0.25, iou=0.45, max_det=100, target="tensorrt"))
            from tests.gpu.test_nms_engine_gpu import YOLO_320

            return str(build_engine(src, "yolov8n-nms", profiles=(YOLO_320,)))
        src = add_nms(asset_model("scrfd"), Path(tmp) / "scrfd_nms.onnx",
                      config=AddNmsConfig(task="face", conf=0.5, iou=0.4, target="tensorrt"))
        return str(build_engine(src, "scrfd-nms"))


# Longest first (measured on the H200 with TensorRT 8.5): the long poles start at once.
JOBS = {
    "suite": [(_suite, ("ppocr_det",)), (_suite, ("ppocr_rec",)), (_suite, ("yolov8n",)), (_suite, ("ppocr_cls",)),
              (_suite, ("scrfd",)), (_suite, ("efficientnet_lite0",)), (_suite_variant, ("fp16",)),
              (_suite_variant, ("3profiles",))],
    "bench": [(_bench, ("yolov8n", "fp32")), (_bench, ("yolov8n", "fp16")), (_bench, ("scrfd", "fp32")),
              (_bench, ("scrfd", "fp16")), (_bench, ("efficientnet_lite0", "fp32")), (_bench, ("efficientnet_lite0", "fp16"))],
    "pipelines": [(_pipeline, ("detect640",))],
    "nms": [(_nms, ("yolov8n",)), (_nms, ("scrfd",))],
    "ocr": [(_suite, ("ppocr_det",)), (_suite, ("ppocr_rec",)), (_suite, ("ppocr_cls",))],
    # YOLOv8n alone: the suite's FP32-vs-ORT engine, the pipeline benchmark's detect640 and trt_vs_ort's rows
    "yolo": [(_suite, ("yolov8n",)), (_pipeline, ("detect640",)), (_bench, ("yolov8n", "fp32")), (_bench, ("yolov8n", "fp16"))],
}


def _run(fn, args):  # in the worker process
    t0 = time.perf_counter()
    path = fn(*args)
    return path, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=1, help="builds at once (more than 1 slows each down a lot)")
    ap.add_argument("--budget", type=float, default=540.0, help="seconds; unfinished builds are stopped")
    ap.add_argument("--only", default=",".join(JOBS))
    args = ap.parse_args()
    todo = list(dict.fromkeys(job for group in args.only.split(",") for job in JOBS[group]))  # groups may share jobs
    # Long poles first across groups: the suite's OCR and YOLO builds, then the rest in listed order.
    todo.sort(key=lambda job: 0 if job[1][0] in ("ppocr_det", "ppocr_rec", "yolov8n") else 1)
    engines_dir().mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    pool = ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn"))
    futures = {pool.submit(_run, fn, a): f"{fn.__name__}{a}" for fn, a in todo}
    pending = set(futures)
    failed = 0
    while pending:
        left = args.budget - (time.perf_counter() - start)
        if left <= 0:
            break
        done, pending = wait(pending, timeout=left, return_when=FIRST_COMPLETED)
        for fut in done:
            try:
                path, seconds = fut.result()
                print(f"[{time.perf_counter() - start:5.0f} s] built {futures[fut]} -> {Path(path).name} in {seconds:.0f} s", flush=True)
            except Exception as exc:  # reported, and the test that needs it builds it again and fails clearly
                failed += 1
                print(f"[{time.perf_counter() - start:5.0f} s] FAILED {futures[fut]}: {exc}", flush=True)
    for fut in pending:
        print(f"not finished within {args.budget:.0f} s: {futures[fut]}", flush=True)
    for proc in list(getattr(pool, "_processes", {}).values()):  # stop builds still running (atomic writes: no partial files)
        proc.terminate()
    pool.shutdown(wait=False, cancel_futures=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
