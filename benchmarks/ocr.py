"""OCR pipeline: trtkit's OcrPipeline vs RapidOCR 1.4.4, same PP-OCRv4 ONNX models, same ORT threads.

Prints median/min/p90 latency of the whole pipeline (image array in, lines
out; decoding the file is not timed), measured interleaved (A B, B A, ...) so
machine noise hits both alike, the per-stage split, and the character error
rate (CER) of each against the reference lines in truth.json. trtkit runs once
per recognition strategy (``STRATEGIES``, on shared sessions); the reference
lines are RapidOCR 1.4.4's own output, so a CER above 0 there means "differs
from RapidOCR", and the listed differences say where (check them against the
image: "single" reads two spaces RapidOCR's padded batches miss). The "unfused" row is trtkit's
default on its own sessions opened with ``RuntimeConfig(fuse=False)``: the same files as ONNX Runtime
sees them without trtkit's graph fusions (trtkit.graph.fusion), to show what the fusions contribute.

    python benchmarks/ocr.py                     # assets from ../shared/assets
    python benchmarks/ocr.py --runs 20 --threads 2 --profile
    python benchmarks/ocr.py --models DIR --assets DIR   # e.g. RapidOCR's bundled (identical) models

RapidOCR is optional (``pip install rapidocr-onnxruntime==1.4.4``; it is a
benchmark-only comparison, not a trtkit dependency).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ASSETS = Path(os.environ.get("TRTKIT_SHARED", ROOT.parent / "shared")) / "assets"
DET, REC, CLS = "ch_PP-OCRv4_det_infer.onnx", "ch_PP-OCRv4_rec_infer.onnx", "ch_ppocr_mobile_v2.0_cls_infer.onnx"
IMAGE = "imageTextN_rgb.png"


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


# trtkit recognition strategies (OcrConfig fields): the default reproduces RapidOCR's text; the others pad less
STRATEGIES: dict[str, dict[str, Any]] = {
    "trtkit": {},
    "  padded batched": {"rec_infer_batch": 6},  # RapidOCR's way: one call per padded batch of 6
    "  single": {"rec_batching": "single"},
    "  buckets 15%": {"rec_batching": "buckets", "rec_max_padding": 0.15},
}


def make_trtkit(models: Path, threads: int, use_cls: bool) -> tuple[dict[str, Callable[[np.ndarray], list[str]]], list[Any]]:
    """One pipeline per strategy, all on the same three ORT sessions, plus the default without graph
    fusion (its own sessions); returns them and the pipelines to close (the default first)."""
    import trtkit
    from trtkit.tasks.ocr.pipeline import OcrConfig, OcrPipeline

    def open_pipeline(fuse: bool) -> Any:
        return OcrPipeline.from_paths(
            models / DET, models / REC, models / CLS if use_cls else None,
            runtime=trtkit.RuntimeConfig(threads=threads, fuse=fuse),
        )

    default, unfused = open_pipeline(True), open_pipeline(False)
    backends = (default.detector.backend, default.recognizer.backend, default.classifier.backend if use_cls else None)
    runs = {}
    for name, fields in STRATEGIES.items():
        pipeline = default if not fields else OcrPipeline(*backends, config=OcrConfig(**fields))
        runs[name] = (lambda p: lambda rgb: [line.text for line in p(rgb).lines])(pipeline)
    runs["  unfused"] = lambda rgb: [line.text for line in unfused(rgb).lines]
    return runs, [default, unfused]


def character_diffs(lines: list[str], truth: list[str]) -> list[str]:
    """'ref -> read' for each differing span of each line (same line count assumed; else the whole text)."""
    import difflib

    if len(lines) != len(truth):
        return [f"{len(truth)} reference lines, {len(lines)} read"]
    out = []
    for got, ref in zip(lines, truth):
        ops = difflib.SequenceMatcher(None, ref, got, autojunk=False).get_opcodes()
        for tag, i1, i2, j1, j2 in ops:
            if tag != "equal":
                out.append(f"{ref[max(0, i1 - 8):i2 + 8]!r} -> {got[max(0, j1 - 8):j2 + 8]!r}")
    return out


def make_rapidocr(models: Path, threads: int, use_cls: bool) -> Callable[[np.ndarray], list[str]]:
    from rapidocr_onnxruntime import RapidOCR

    engine = RapidOCR(
        det_model_path=str(models / DET),
        rec_model_path=str(models / REC),
        cls_model_path=str(models / CLS),
        intra_op_num_threads=threads,
        inter_op_num_threads=1,
    )

    def run(rgb: np.ndarray) -> list[str]:
        result, _ = engine(np.ascontiguousarray(rgb[:, :, ::-1]), use_cls=use_cls)  # RapidOCR takes BGR arrays
        return [r[1] for r in result or []]

    run.engine = engine  # type: ignore[attr-defined]
    return run


def trtkit_stages(pipeline: Any, rgb: np.ndarray, runs: int) -> dict[str, float]:
    """Median ms of each stage, calling the stage objects the pipeline is made of."""
    from trtkit.tasks.ocr.det import crop_line

    times: dict[str, list[float]] = {"det": [], "crop": [], "cls": [], "rec": []}
    for _ in range(runs):
        t0 = time.perf_counter()
        boxes = pipeline.detector(rgb)
        t1 = time.perf_counter()
        crops = [crop_line(rgb, b) for b in boxes]
        t2 = time.perf_counter()
        if pipeline.classifier is not None:
            crops, _ = pipeline.classifier.orient(crops)
        t3 = time.perf_counter()
        pipeline.recognizer.recognize(crops)
        t4 = time.perf_counter()
        for key, a, b in (("det", t0, t1), ("crop", t1, t2), ("cls", t2, t3), ("rec", t3, t4)):
            times[key].append((b - a) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def rapidocr_stages(run: Any, rgb: np.ndarray, runs: int, use_cls: bool) -> dict[str, float]:
    """RapidOCR's own per-stage elapsed times (det, cls, rec), median ms."""
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    rows = [run.engine(bgr, use_cls=use_cls)[1] for _ in range(runs)]
    return {k: statistics.median(r[i] for r in rows) * 1e3 for i, k in enumerate(("det", "cls", "rec"))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--assets", type=Path, default=DEFAULT_ASSETS, help="folder with truth.json and images/")
    ap.add_argument("--models", type=Path, default=None, help="folder with the three PP-OCR models (default: ASSETS/models/ppocr)")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads, the same for both")
    ap.add_argument("--no-cls", action="store_true", help="skip the direction classifier in both pipelines")
    ap.add_argument("--profile", action="store_true", help="print trtkit's cProfile top functions")
    args = ap.parse_args(argv)

    from trtkit.tasks._image import read_image
    from trtkit.tasks.ocr.pipeline import character_error_rate

    models = args.models or args.assets / "models" / "ppocr"
    truth = json.loads((args.assets / "truth.json").read_text())["ocr"]["images"][IMAGE]["lines"]
    rgb = read_image(args.assets / "images" / IMAGE)
    use_cls = not args.no_cls

    import onnxruntime

    print(f"# OCR pipeline on {IMAGE} ({rgb.shape[1]}x{rgb.shape[0]}), cls={'on' if use_cls else 'off'}, "
          f"ORT {onnxruntime.__version__} CPU, intra-op threads={args.threads}, {os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.machine()}, runs={args.runs} interleaved")

    ours, opened = make_trtkit(models, args.threads, use_cls)
    pipeline = opened[0]
    pipelines: dict[str, Callable[[np.ndarray], list[str]]] = dict(ours)
    try:
        pipelines["rapidocr 1.4.4"] = make_rapidocr(models, args.threads, use_cls)
    except ImportError as exc:
        print(f"(RapidOCR not installed: {exc}; pip install rapidocr-onnxruntime==1.4.4 to compare)")

    texts = {name: fn(rgb) for name, fn in pipelines.items()}
    for _ in range(args.warmup):
        for fn in pipelines.values():
            fn(rgb)
    times: dict[str, list[float]] = {name: [] for name in pipelines}
    names = list(pipelines)
    for i in range(args.runs):
        # rotate and alternate the order so drifting machine load hits every pipeline alike
        order = names[i % len(names):] + names[: i % len(names)]
        for name in order if i % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            pipelines[name](rgb)
            times[name].append((time.perf_counter() - t0) * 1e3)

    stages = {"trtkit": trtkit_stages(pipeline, rgb, max(3, args.runs // 2))}
    rapid = "rapidocr 1.4.4" if "rapidocr 1.4.4" in pipelines else None
    if rapid:
        stages[rapid] = rapidocr_stages(pipelines[rapid], rgb, max(3, args.runs // 2), use_cls)

    print(f"{'pipeline':<18}{'median ms':>10}{'min ms':>8}{'p90 ms':>8}{'vs rapid':>9}{'CER':>8}{'lines':>6}   stages (median ms)")
    base = statistics.median(times[rapid]) if rapid else float("nan")
    for name in names:
        t = times[name]
        st = " ".join(f"{k} {v:.0f}" for k, v in stages.get(name, {}).items())
        print(f"{name:<18}{statistics.median(t):>10.1f}{min(t):>8.1f}{percentile(t, 90):>8.1f}"
              f"{base / statistics.median(t):>8.2f}x{character_error_rate(texts[name], truth):>8.2%}{len(texts[name]):>6}   {st}")
    for name in names:
        diffs = character_diffs(texts[name], truth)
        if diffs:
            print(f"{name.strip()} differs from the reference: " + "; ".join(diffs))

    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(3):
            ours["trtkit"](rgb)
        prof.disable()
        pstats.Stats(prof, stream=sys.stdout).sort_stats("tottime").print_stats(12)
    for p in opened:
        p.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
