"""Task pipelines end to end vs the model alone, streaming vs sequential ``predict_batch``.

For each task (classify, detect at 640 and at 320, face, OCR), side by side in one run:

* ``predict_batch``: today's sequential pipeline (read, preprocess, infer, postprocess, one
  stage after another) -- the baseline;
* ``stream``: ``task.stream(..., pool="threads")`` (:mod:`trtkit.tasks.streaming`: decoding/
  preprocessing in worker threads, batched inference overlapped, postprocessing in the workers);
* ``stream/proc``: ``task.stream(..., pool="processes")``: decoding/preprocessing in worker
  processes writing into shared (page-locked on a GPU) batch buffers (:mod:`trtkit.tasks.stream_workers`);
* ``model alone``: the backend on inputs prepared in advance at the same batch size -- on a GPU
  backend device-resident (``timed_infer(transfers=False)``: compute only), on the CPU
  ``infer`` on preallocated arrays. For OCR (det -> crops -> rec, shapes depend on the
  image) the exact det/rec/cls inputs one pass produced are replayed.
* ``ratio`` = stream / model alone; ``speed-up`` = stream / predict_batch (the median of the
  per-round ratios: each compares two runs made one after the other); the same two for
  ``stream/proc``. Its worker processes are started once per task, before the timed rounds
  (``task.close()`` stops them); the start is printed apart.

Each is measured on in-memory RGB frames and on JPEG files (decoding included), the
contenders interleaved round by round (the machine's load drifts hit all alike); medians of
the rounds are printed. The first line checks that preprocessing scales on threads
(cv2 and NumPy release the GIL): the same images preprocessed on 1 thread and on N.

CPU (this is what README reports)::

    python benchmarks/pipelines.py

GPU (the H200 device machine; ORT-CUDA, then TensorRT engines built from the same ONNX)::

    python benchmarks/pipelines.py --backend ort-cuda --images 256 --batch 32 --workers 16
    python benchmarks/pipelines.py --backend tensorrt --images 256 --batch 32 --workers 16 \\
        --engine detect640=yolov8n_640.plan --engine detect320=yolov8n_320.plan ...

``--graph-preprocess`` adds a ``stream+graph`` column for detect/face: the letterbox and
normalisation run inside the model (:mod:`trtkit.tasks.graph_preprocess`), the workers only
decode, and uint8 pixels are uploaded. ``--graph-preprocess host``: the workers letterbox with
cv2 and the model normalises (fixed-size uint8 batches: worker processes where ``auto`` picks them).

``--long N`` adds, per task and input, streams of N items (the frames or files cycled, given as an
unsized iterator, as a video or a directory walk would be): ``--images`` of 256 are 8 batches of
32, and filling and draining the pipeline weighs on them; a long input shows the steady state.
Threads and processes, interleaved; ``predict_batch`` is left out there (it would take minutes)::

    python benchmarks/pipelines.py --backend ort-cuda --tasks detect640 --images 256 --batch 32 --workers 16 \
        --frame-size 400:600 --long 10240 --rounds 2
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np

from trtkit.spec import RuntimeConfig
from trtkit.tasks._image import read_image

ROOT = Path(__file__).resolve().parents[1]
ASSETS = Path(os.environ.get("TRTKIT_SHARED", ROOT.parent / "shared")) / "assets"
MODELS = ASSETS / "models"

TASKS = {  # name -> (task key, model file(s), config overrides)
    "classify": ("classify", "efficientnet_lite0.onnx", {}),
    "detect640": ("detect", "yolov8n_nudenet_320.onnx", {"input_size": (640, 640)}),
    "detect320": ("detect", "yolov8n_nudenet_320.onnx", {}),
    "face": ("face", "scrfd_2.5g_kps.onnx", {}),
    "ocr": ("ocr", ("ppocr/ch_PP-OCRv4_det_infer.onnx", "ppocr/ch_PP-OCRv4_rec_infer.onnx"), {}),
}


def open_task(name: str, *, backend: str, runtime: RuntimeConfig, engines: dict[str, str]) -> Any:
    import dataclasses

    from trtkit.tasks import task_class

    key, model, overrides = TASKS[name]
    cls = task_class(key)
    if key == "ocr":
        det, rec = (engines.get(f"{name}-det"), engines.get(f"{name}-rec"))
        return cls.from_paths(det or MODELS / model[0], rec or MODELS / model[1], runtime=runtime, backend=backend)
    path = engines.get(name) or MODELS / model
    config = dataclasses.replace(cls.config_type(), **overrides) if overrides else None
    if path != MODELS / model and "input_size" in overrides:
        config = None  # an engine's static input size is its own
    return cls.from_path(path, runtime=runtime, config=config, backend=backend)


def frames(count: int, *, long_side: tuple[int, int] | None = None) -> list[np.ndarray]:
    """``count`` RGB frames: the asset images (300 px .. 3000 px), cycled; with ``long_side`` (lo, hi) each
    is resized so its long side is lo, lo+50, ... hi px in turn (camera-sized frames, as the issue measured)."""
    images = [read_image(p) for p in sorted((ASSETS / "images").iterdir())]
    out = [images[i % len(images)] for i in range(count)]
    if long_side is None:
        return out
    import cv2

    lo, hi = long_side
    sides = list(range(lo, hi + 1, 50)) or [lo]
    resized = []
    for i, img in enumerate(out):
        f = sides[i % len(sides)] / max(img.shape[:2])
        resized.append(cv2.resize(img, (max(1, round(img.shape[1] * f)), max(1, round(img.shape[0] * f))), interpolation=cv2.INTER_AREA))
    return resized


# Engines for --backend tensorrt that no other script builds: (asset model, input name, per-item shape).
PIPELINE_ENGINES = {"detect640": ("models/yolov8n_nudenet_320.onnx", "images", (3, 640, 640))}


def build_pipeline_engine(name: str, folder: Path) -> Path:
    """FP16 engine with a 1:8:32 batch profile, built like benchmarks/trt_vs_ort.py builds its own."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from trt_vs_ort import _engine

    rel, input_name, shape = PIPELINE_ENGINES[name]
    return _engine(ASSETS / rel, folder / f"{name}-fp16-pipe.plan", input_name, shape, "fp16", 1)


def write_jpegs(images: list[np.ndarray], folder: Path) -> list[str]:
    import cv2

    paths = []
    for i, img in enumerate(images):
        path = folder / f"frame_{i:05d}.jpg"
        cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(str(path))
    return paths


# ---------------------------------------------------------------- measurements

def rate(fn: Callable[[], int]) -> float:
    t0 = time.perf_counter()
    n = fn()
    return n / (time.perf_counter() - t0)


def interleaved(contenders: dict[str, Callable[[], int]], rounds: int) -> dict[str, list[float]]:
    """images/s per contender and round, the order alternating each round."""
    got: dict[str, list[float]] = {k: [] for k in contenders}
    for r in range(rounds):
        for name in (list(contenders) if r % 2 == 0 else list(reversed(contenders))):
            got[name].append(rate(contenders[name]))
    return got


def median_ratio(a: list[float], b: list[float]) -> float:
    """Median over rounds of a/b: each ratio compares runs made next to each other."""
    return statistics.median(x / y for x, y in zip(a, b))


def model_alone(task: Any, images: list[np.ndarray], batch: int, *, rounds: int) -> float:
    """images/s of the backend alone on inputs prepared beforehand (device-resident on a GPU)."""
    from trtkit.tasks.streaming import BatchStages

    if not callable(getattr(task, "preprocess", None)):
        return ocr_alone(task, images, rounds=rounds)
    bs = batch if task.dynamic_batch else 1
    prepared = [task.preprocess(img)[0] for img in images[:bs]]
    feeds = {k: np.ascontiguousarray(np.concatenate([p[k] for p in prepared])) for k in prepared[0]}
    backend = task.backend
    gpu = BatchStages(task, depth=1)._submit is not None
    reps = max(3, 64 // bs)
    samples = []
    for _ in range(rounds):
        if gpu:  # compute only, inputs and outputs stay on the device
            times = [backend.timed_infer(feeds, transfers=False).compute_ms for _ in range(reps)]
            samples.append(bs / (statistics.median(times) / 1e3))
        else:
            backend.infer(feeds)
            t0 = time.perf_counter()
            for _ in range(reps):
                backend.infer(feeds)
            samples.append(bs * reps / (time.perf_counter() - t0))
    return statistics.median(samples)


def ocr_alone(pipeline: Any, images: list[np.ndarray], *, rounds: int) -> float:
    """OCR: replay exactly the det/cls/rec inputs one pass over ``images`` produced."""
    recorded: list[tuple[Any, dict[str, np.ndarray]]] = []
    stages = [pipeline.detector, pipeline.recognizer] + ([pipeline.classifier] if pipeline.classifier else [])
    originals = {}
    for stage in stages:
        backend = stage.backend
        originals[id(backend)] = backend.infer

        def recording(feeds: Any, _b: Any = backend) -> Any:
            recorded.append((_b, {k: np.array(v) for k, v in feeds.items()}))
            return originals[id(_b)](feeds)

        backend.infer = recording  # benchmark-only instrumentation of the real backends
    try:
        for img in images:
            pipeline(img)
    finally:
        for stage in stages:
            del stage.backend.infer
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for backend, feeds in recorded:
            backend.infer(feeds)
        samples.append(len(images) / (time.perf_counter() - t0))
    return statistics.median(samples)


def preprocess_scaling(task: Any, images: list[np.ndarray], workers: int) -> tuple[float, float]:
    """Preprocessing images/s on one thread and on ``workers`` threads (same images)."""
    def one(img: np.ndarray) -> None:
        task.preprocess(img)

    def serial() -> int:
        for img in images:
            one(img)
        return len(images)

    pool = ThreadPoolExecutor(workers)

    def threaded() -> int:
        list(pool.map(one, images))
        return len(images)

    got = interleaved({"1": serial, "n": threaded}, rounds=3)
    pool.shutdown()
    return statistics.median(got["1"]), statistics.median(got["n"])


# ---------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="onnxruntime", help="onnxruntime (CPU), ort-cuda or tensorrt")
    ap.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated subset of {','.join(TASKS)}")
    ap.add_argument("--images", type=int, default=48, help="frames per run (the asset images, cycled)")
    ap.add_argument("--ocr-images", type=int, default=12, help="frames per OCR run (OCR is slow on a CPU)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (default: its own)")
    ap.add_argument("--engine", action="append", default=[], metavar="TASK=PATH",
                    help="use an engine for a task (tensorrt): detect640=..., ocr-det=..., ocr-rec=...")
    ap.add_argument("--graph-preprocess", nargs="?", const="graph", choices=("graph", "host"),
                    help="also stream detect/face with preprocessing in the graph: all of it (graph, the default; threads) "
                    "or the normalisation after a cv2 letterbox in the workers (host; worker processes where auto picks them)")
    ap.add_argument("--frame-size", metavar="LO:HI", help="resize the frames so their long side is LO..HI px (e.g. 400:600)")
    ap.add_argument("--no-processes", action="store_true", help="leave out the stream/proc column (worker processes)")
    ap.add_argument("--long", type=int, metavar="N", help="also stream N items (the inputs cycled, unsized): the steady state")
    args = ap.parse_args(argv)
    engines = dict(e.split("=", 1) for e in args.engine)
    device = "cpu" if args.backend in ("onnxruntime", "ort-cpu") else "cuda"
    runtime = RuntimeConfig(device=device, threads=args.threads)
    names = [n for n in args.tasks.split(",") if n]
    print(f"backend {args.backend}, batch {args.batch}, workers {args.workers}, {os.cpu_count()} CPU cores, "
          f"{args.rounds} interleaved rounds (median images/s), frames {args.frame_size or 'as stored (300-3000 px)'}")
    with tempfile.TemporaryDirectory() as tmp:
        long_side = tuple(int(v) for v in args.frame_size.split(":")) if args.frame_size else None
        all_frames = frames(max(args.images, args.ocr_images), long_side=long_side)  # type: ignore[arg-type]
        all_files = write_jpegs(all_frames, Path(tmp))
        header = (f"{'task':<10} {'input':<7} {'predict_batch':>13} {'stream':>8} {'speed-up':>8} {'model alone':>11} {'ratio':>6}"
                  + ("" if args.no_processes else f" {'stream/proc':>11} {'speed-up':>8} {'ratio':>6}"))
        rows: list[str] = []
        for name in names:
            task = open_task(name, backend=args.backend, runtime=runtime, engines=engines)
            count = args.ocr_images if name == "ocr" else args.images
            imgs, files = all_frames[:count], all_files[:count]
            with task:
                if name == "detect640":
                    one, many = preprocess_scaling(task, imgs, args.workers)
                    print(f"preprocess on {args.workers} threads (detect640 letterbox+normalize): {one:.0f} -> {many:.0f} img/s "
                          f"({many / one:.2f}x; threads scale when cv2/NumPy release the GIL)")
                alone = model_alone(task, imgs, args.batch, rounds=args.rounds)
                graph = _graph_stages(task, name, args, runtime) if args.graph_preprocess else None
                procs = procs_wanted(args, name)
                if procs:  # the task's worker pool starts here (stream+graph with resize=host then shares it)
                    t0 = time.perf_counter()
                    n = sum(1 for _ in task.stream(imgs[: args.batch], batch_size=args.batch, workers=args.workers, pool="processes"))
                    print(f"{name}: {args.workers} worker processes started and ran {n} images in {time.perf_counter() - t0:.2f} s")
                graph_pool = "processes" if graph is not None and graph.resize == "host" and procs else "threads"
                for label, items in (("frames", imgs), ("jpeg", files)):
                    contenders: dict[str, Callable[[], int]] = {
                        "seq": lambda items=items: len(task.predict_batch(items, batch_size=args.batch)),
                        "stream": lambda items=items: sum(1 for _ in task.stream(items, batch_size=args.batch, workers=args.workers, pool="threads")),
                    }
                    if procs:
                        contenders["proc"] = lambda items=items: sum(
                            1 for _ in task.stream(items, batch_size=args.batch, workers=args.workers, pool="processes")
                        )
                    if graph is not None:
                        contenders["graph"] = lambda items=items: sum(
                            1 for _ in graph.stream(items, batch_size=args.batch, workers=args.workers, pool=graph_pool))
                    runs = interleaved(contenders, args.rounds)
                    got = {k: statistics.median(v) for k, v in runs.items()}
                    extra = (f"  stream+graph ({graph.resize}, {graph_pool}) {got['graph']:.1f} ({got['graph'] / alone:.3f})"
                             if "graph" in got else "")
                    proc = (f" {got['proc']:>11.1f} {median_ratio(runs['proc'], runs['seq']):>7.2f}x {got['proc'] / alone:>6.3f}"
                            if "proc" in got else f" {'-':>11} {'-':>8} {'-':>6}" if not args.no_processes else "")
                    row = (f"{name:<10} {label:<7} {got['seq']:>13.1f} {got['stream']:>8.1f} "
                           f"{median_ratio(runs['stream'], runs['seq']):>7.2f}x {alone:>11.1f} {got['stream'] / alone:>6.3f}{proc}{extra}")
                    rows.append(row)
                    print(row if len(rows) > 1 else header + "\n" + row, flush=True)
                    if args.long and name != "ocr":
                        print(_long_row(task, name, label, items, alone, args, procs=procs, graph=graph), flush=True)
                if graph is not None:
                    graph.close()
    return 0


def procs_wanted(args: argparse.Namespace, name: str) -> bool:
    return not args.no_processes and name != "ocr"  # OCR runs whole images per worker: threads only


def _long_row(task: Any, name: str, label: str, items: list[Any], alone: float, args: argparse.Namespace, *,
              procs: bool, graph: Any) -> str:
    """Threads (and processes, and the graph front end) streaming ``--long`` items cycled from ``items``:
    images/s and / model alone."""
    def run(runner: Any, pool: str) -> Callable[[], int]:
        return lambda: sum(1 for _ in runner.stream(itertools.islice(itertools.cycle(items), args.long),
                                                    batch_size=args.batch, workers=args.workers, pool=pool))

    contenders = {"threads": run(task, "threads"), **({"processes": run(task, "processes")} if procs else {})}
    if graph is not None:
        contenders[f"graph ({graph.resize})"] = run(graph, "processes" if graph.resize == "host" and procs else "threads")
    got = {k: statistics.median(v) for k, v in interleaved(contenders, args.rounds).items()}
    cells = "  ".join(f"{pool} {v:.1f} img/s ({v / alone:.3f} of the model alone)" for pool, v in got.items())
    return f"{name:<10} {label:<7} {args.long} items: {cells}"


def _graph_stages(task: Any, name: str, args: argparse.Namespace, runtime: RuntimeConfig) -> Any:
    from trtkit.tasks.graph_preprocess import GraphPreprocessed

    if name not in ("detect640", "detect320", "face"):
        return None
    return GraphPreprocessed.open(task, runtime=runtime, backend=args.backend, resize=args.graph_preprocess)


if __name__ == "__main__":
    sys.exit(main())
