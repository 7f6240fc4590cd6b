"""Task pipelines side by side (CPU, ONNX Runtime, same intra-op threads everywhere).

1. Faces on solvay_conference_1927.jpg (29 faces): trtkit's FaceDetector against the
   `scrfd` 0.3.0 PyPI package's pipeline (pip install scrfd==0.3.0), both on an
   InferenceSession with the same thread count; same thresholds (score 0.5, NMS 0.4).
   Prints median end-to-end ms (decoded image in, faces out), trtkit's stage split,
   and how far the two pipelines' boxes are apart.
2. NMS: trtkit's ``nms`` (cv2 path / NumPy path) against raw ``cv2.dnn.NMSBoxes`` at
   1k and 10k boxes, clustered (like real detector output) and spread out (few suppressed).
3. Throughput: images/s for classify / detect / face at batch 1 and 8 (``predict_batch``);
   SCRFD has a static batch of 1, so a dynamic-batch copy is written to a temp dir.

    python benchmarks/tasks.py [--threads 2] [--repeats 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from trtkit.spec import RuntimeConfig
from trtkit.tasks._image import _nms_numpy, nms, read_image
from trtkit.tasks.classification import Classifier
from trtkit.tasks.detection import Detector
from trtkit.tasks.face import FaceDetector, FaceDetectorConfig

ROOT = Path(__file__).resolve().parents[1]
ASSETS = Path(os.environ.get("TRTKIT_SHARED", ROOT.parent / "shared")) / "assets"


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def interleaved_ms(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Alternate the contenders call by call so machine-load drift hits all alike."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(repeats):
        order = list(fns) if i % 2 == 0 else list(reversed(fns))
        for name in order:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


# ---------------------------------------------------------------- 1. faces

def bench_faces(threads: int, repeats: int) -> None:
    import onnxruntime as ort
    from PIL import Image
    from scrfd import SCRFD, Threshold

    model = ASSETS / "models" / "scrfd_2.5g_kps.onnx"
    path = ASSETS / "images" / "solvay_conference_1927.jpg"
    rgb = read_image(path)
    pil = Image.fromarray(rgb)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    theirs = SCRFD.from_session(ort.InferenceSession(str(model), sess_options=opts, providers=["CPUExecutionProvider"]))
    threshold = Threshold(probability=0.5, nms=0.4)
    ours = FaceDetector.from_path(model, runtime=RuntimeConfig(threads=threads), config=FaceDetectorConfig(conf=0.5, iou=0.4))

    a, b = ours(rgb), theirs.detect(pil, threshold)
    their_boxes = np.array([[f.bbox.upper_left.x, f.bbox.upper_left.y, f.bbox.lower_right.x, f.bbox.lower_right.y] for f in b])
    dist = np.abs(a.boxes[:, None, :] - their_boxes[None]).max(-1).min(1) if len(b) else np.array([np.inf])
    res = interleaved_ms({"trtkit": lambda: ours(rgb), "scrfd 0.3.0": lambda: theirs.detect(pil, threshold)}, repeats)

    feeds, meta = ours.preprocess(rgb)
    outs = ours.backend.infer(feeds)
    pre = median_ms(lambda: ours.preprocess(rgb), repeats)
    inf = median_ms(lambda: ours.backend.infer(feeds), repeats)
    post = median_ms(lambda: ours.postprocess(outs, meta), repeats)
    print(f"\n== faces: solvay_conference_1927.jpg ({rgb.shape[1]}x{rgb.shape[0]}), {threads} ORT threads ==")
    print(f"{'pipeline':<14}{'faces':>6}{'median ms':>11}")
    print(f"{'trtkit':<14}{len(a):>6}{res['trtkit']:>11.2f}")
    print(f"{'scrfd 0.3.0':<14}{len(b):>6}{res['scrfd 0.3.0']:>11.2f}")
    print(f"ratio trtkit/scrfd: {res['trtkit'] / res['scrfd 0.3.0']:.3f}")
    print(f"trtkit stages: preprocess {pre:.2f} ms, infer {inf:.2f} ms, postprocess {post:.2f} ms")
    print(f"box agreement: max over faces of the nearest scrfd box's max coord diff = {dist.max():.2f} px "
          "(scrfd resizes with PIL NEAREST, trtkit with cv2 bilinear)")
    ours.close()


# ---------------------------------------------------------------- 2. NMS

def nms_boxes(n: int, mode: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    if mode == "spread":
        xy = rng.uniform(0, 4000, (n, 2))
        wh = rng.uniform(10, 80, (n, 2))
    else:  # clustered: 60 objects, many jittered candidates each (raw detector output)
        centers, sizes = rng.uniform(0, 600, (60, 2)), rng.uniform(20, 200, (60, 2))
        k = rng.integers(0, 60, n)
        xy = centers[k] + rng.normal(0, 4, (n, 2))
        wh = sizes[k] * rng.uniform(0.85, 1.15, (n, 2))
    return np.concatenate([xy, xy + wh], 1).astype(np.float32), rng.uniform(0, 1, n).astype(np.float32)


def bench_nms(repeats: int) -> None:
    import cv2

    rng = np.random.default_rng(0)
    print("\n== NMS (IoU 0.45), median ms ==")
    print(f"{'boxes':>6} {'layout':<10}{'kept':>6}{'trtkit nms':>12}{'numpy path':>12}{'cv2 NMSBoxes':>14}  same")
    for n in (1000, 10000):
        for mode in ("clustered", "spread"):
            boxes, scores = nms_boxes(n, mode, rng)
            xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1)
            b64 = boxes.astype(np.float64)
            reps = max(3, repeats // (4 if n > 1000 else 1))
            t_ours = median_ms(lambda: nms(boxes, scores, iou=0.45), reps, warmup=1)
            t_np = median_ms(lambda: _nms_numpy(b64, scores, 0.45, None), reps, warmup=1)
            t_cv = median_ms(lambda: cv2.dnn.NMSBoxes(xywh, scores, 0.0, 0.45), reps, warmup=1)
            kept = nms(boxes, scores, iou=0.45)
            ref = np.asarray(cv2.dnn.NMSBoxes(xywh, scores, 0.0, 0.45)).reshape(-1)
            same = np.array_equal(np.sort(kept), np.sort(ref))
            print(f"{n:>6} {mode:<10}{len(kept):>6}{t_ours:>12.2f}{t_np:>12.2f}{t_cv:>14.2f}  {same}")


# ---------------------------------------------------------------- 3. throughput

def dynamic_batch_copy(model: Path, directory: Path) -> Path:
    """Copy of a static-batch model with dim 0 of every input and output made symbolic."""
    import onnx

    proto = onnx.load(str(model))
    for value in [*proto.graph.input, *proto.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if len(dims) >= 3:  # SCRFD's outputs are [1, N, k]
            dims[0].dim_param = "batch"
    out = directory / f"{model.stem}_dynbatch.onnx"
    onnx.save(proto, str(out))
    return out


def bench_throughput(threads: int, repeats: int) -> None:
    runtime = RuntimeConfig(threads=threads)
    images = {
        "classify": [ASSETS / "images" / n for n in ("coffee.png", "baboon.jpg", "chelsea.png", "squirrel_cls.jpg")],
        "detect": [ASSETS / "images" / n for n in ("astronaut.png", "fruits.jpg", "coffee.png", "chelsea.png")],
        "face": [ASSETS / "images" / n for n in ("newton.png", "gauss.png", "astronaut.png", "chelsea.png")],
    }
    print(f"\n== throughput, images/s (decoded images in, results out), {threads} ORT threads ==")
    print(f"{'task':<10}{'model':<28}{'batch 1':>9}{'batch 8':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        models: dict[str, tuple[type, Path]] = {
            "classify": (Classifier, ASSETS / "models" / "efficientnet_lite0.onnx"),
            "detect": (Detector, ASSETS / "models" / "yolov8n_nudenet_320.onnx"),
            "face": (FaceDetector, dynamic_batch_copy(ASSETS / "models" / "scrfd_2.5g_kps.onnx", Path(tmp))),
        }
        for name, (cls, model) in models.items():
            batch = [read_image(p) for p in images[name]] * 2  # 8 images
            with cls.from_path(model, runtime=runtime) as task:
                t1 = median_ms(lambda: task.predict_batch(batch, batch_size=1), max(3, repeats // 3), warmup=1)
                note = ""
                try:
                    t8 = median_ms(lambda: task.predict_batch(batch, batch_size=8), max(3, repeats // 3), warmup=1)
                    b8 = f"{8000 / t8:>9.1f}"
                except Exception as exc:  # a benchmark reports what failed instead of stopping
                    b8, note = f"{'n/a':>9}", f"  (batch 8 failed: {str(exc)[:120]})"
                print(f"{name:<10}{model.name:<28}{8000 / t1:>9.1f}{b8}{note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--skip", action="append", default=[], choices=["faces", "nms", "throughput"])
    args = parser.parse_args()
    if "faces" not in args.skip:
        bench_faces(args.threads, args.repeats)
    if "nms" not in args.skip:
        bench_nms(args.repeats)
    if "throughput" not in args.skip:
        bench_throughput(args.threads, args.repeats)


if __name__ == "__main__":
    main()
