"""``trtkit predict``: run a task pipeline (classify, detect, face, ocr) on images.

Prints a table per image (or one JSON document with ``--json``); with
``--save-dir`` writes ``<image stem>.png`` (annotated) and ``<image stem>.json``
per image, each atomically. A bad image among many is reported on stderr and
the rest still run; the exit code is then 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import SpecError, TrtkitError
from ._args import add_runtime_args, runtime_from_args
from ._task_args import add_task_args, task_config_fields

TASK_CHOICES = ("classify", "detect", "face", "ocr")


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "predict",
        help="run a task (classify/detect/face/ocr) on images; print results, save annotated images + JSON",
        description="Run a task pipeline on images with an ONNX model or a TensorRT engine.",
    )
    p.add_argument("--task", required=True, choices=TASK_CHOICES, help="what the model does")
    p.add_argument("model", metavar="MODEL", nargs="?", help="model (.onnx or engine); for --task ocr the det model")
    p.add_argument("images", metavar="IMAGES", nargs="*", help="image files")
    p.add_argument("--save-dir", metavar="DIR", help="write <stem>.png (annotated) and <stem>.json per image here")
    p.add_argument("--json", action="store_true", help="print results as JSON instead of tables")
    p.add_argument("--labels", metavar="FILE", help="class names, one per line (default: model metadata)")
    p.add_argument("--conf", type=float, help="score threshold (detect: 0.25, face: 0.5)")
    p.add_argument("--iou", type=float, help="NMS IoU threshold (detect: 0.45, face: 0.4)")
    p.add_argument("--top-k", type=int, help="classify: how many classes to report (default 5)")
    p.add_argument("--imgsz", type=int, help="detect/face: input size for models with dynamic H/W (>= 32, a multiple of the model's stride)")
    p.add_argument("--batch", type=int, default=1, help="images per inference when the batch axis is dynamic")
    p.add_argument("--det", metavar="MODEL", help="ocr: text detection model (or give it as MODEL)")
    p.add_argument("--rec", metavar="MODEL", help="ocr: text recognition model")
    p.add_argument("--cls", metavar="MODEL", help="ocr: optional text direction classifier model")
    p.add_argument("--rec-chars", metavar="FILE", help="ocr: character list (one per line) overriding the rec model's 'character' metadata")
    add_task_args(p)
    add_runtime_args(p)
    p.set_defaults(run=run)


# ---------------------------------------------------------------- options -> task

_TASK_OPTIONS = {  # which flags each task takes; anything else is a conflict, not silently ignored
    "classify": {"labels", "top_k"},
    "detect": {"labels", "conf", "iou", "imgsz"},
    "face": {"conf", "iou", "imgsz"},
    "ocr": {"det", "rec", "cls", "rec_chars"},
}
_ALL_OPTIONS = ("labels", "conf", "iou", "top_k", "imgsz", "det", "rec", "cls", "rec_chars")


def _check_options(args: argparse.Namespace) -> None:
    wrong = [o for o in _ALL_OPTIONS if getattr(args, o) is not None and o not in _TASK_OPTIONS[args.task]]
    if wrong:
        flags = ", ".join("--" + o.replace("_", "-") for o in wrong)
        allowed = ", ".join("--" + o.replace("_", "-") for o in sorted(_TASK_OPTIONS[args.task]))
        raise SpecError(f"{flags} do(es) not apply to --task {args.task}; options for it: {allowed}")
    task_config_fields(args, args.task)  # layout/preprocessing flags foreign to the task raise here


def _config(args: argparse.Namespace, config_type: type) -> Any:
    from ..tasks.base import read_labels

    given: dict[str, Any] = {}
    if args.labels is not None:
        given["labels"] = read_labels(args.labels)
    for flag, field in (("conf", "conf"), ("iou", "iou"), ("top_k", "top_k")):
        if getattr(args, flag) is not None:
            given[field] = getattr(args, flag)
    if args.imgsz is not None:
        given["input_size"] = (args.imgsz, args.imgsz)
    given.update(task_config_fields(args, args.task))
    return dataclasses.replace(config_type(), **given)


def open_task(args: argparse.Namespace) -> tuple[Any, list[str]]:
    """Build the task from the parsed flags; returns (task, image paths)."""
    from ..tasks import task_class

    _check_options(args)
    backend, runtime = runtime_from_args(args)
    cls = task_class(args.task)
    if args.task == "ocr":
        images = list(args.images)
        det = args.det
        if det is None:
            det = args.model
        elif args.model is not None:
            images.insert(0, args.model)  # with --det, the first positional is an image
        if det is not None and args.det is None and _is_image(det):
            raise SpecError(
                f"--task ocr needs --det DET.onnx (or DET as the first positional); {det!r} is an image, "
                "not a model: trtkit predict --task ocr --det DET.onnx --rec REC.onnx IMAGE..."
            )
        if det is None or args.rec is None:
            raise SpecError("--task ocr needs the detection and recognition models: --det DET.onnx --rec REC.onnx (or DET as MODEL)")
        config = cls.config_type(rec_chars=args.rec_chars)
        return cls.from_paths(det=det, rec=args.rec, cls=args.cls, runtime=runtime, config=config, backend=backend), images
    if args.model is None:
        raise SpecError(f"--task {args.task} needs MODEL (an .onnx file or an engine) followed by images")
    if _is_image(args.model):
        raise SpecError(
            f"MODEL {args.model!r} is an image, not a model; give the model first: "
            f"trtkit predict --task {args.task} MODEL.onnx IMAGE..."
        )
    task = cls.from_path(args.model, runtime=runtime, config=_config(args, cls.config_type), backend=backend)
    return task, list(args.images)


def _is_image(path: str) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


# ---------------------------------------------------------------- running

def run(args: argparse.Namespace) -> int:
    from ..tasks.diagnose import describe_task, explain_empty

    if args.batch < 1:
        raise SpecError(f"--batch must be >= 1, got {args.batch}")
    save_dir = _prepare_save_dir(args.save_dir)
    task, images = open_task(args)
    print(describe_task(task), file=sys.stderr)  # which layout and preprocessing this run uses
    with task:
        if not images:
            raise SpecError("no images given; usage: trtkit predict --task TASK MODEL IMAGE [IMAGE...]")
        records, failures = _predict_all(task, images, batch=args.batch, save_dir=save_dir)
        notes = explain_empty(task, [(record["image"], result) for record, result in records])  # never silent
    if args.json:
        print(json.dumps([record for record, _ in records], indent=2))
    else:
        _print_tables(records)
    print(*(f"note: {line}" for line in notes), sep="\n", file=sys.stderr, end="\n" if notes else "")
    for path, message in failures:
        print(f"error: {path}: {message}", file=sys.stderr)
    if failures:
        print(f"error: {len(failures)} of {len(images)} image(s) failed", file=sys.stderr)
    return 1 if failures else 0


def _prepare_save_dir(path: str | None) -> Path | None:
    from ..errors import OutputPathError

    if path is None:
        return None
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputPathError(f"--save-dir {path!r} exists and is not a directory; give a directory path")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputPathError(f"cannot create --save-dir {path!r}: {exc.strerror or exc}; choose another directory") from exc
    return p


Record = tuple[dict[str, Any], Any]  # (JSON record, the Result)


def _predict_all(task: Any, images: list[str], *, batch: int, save_dir: Path | None) -> tuple[list[Record], list[tuple[str, str]]]:
    from ..tasks._image import read_image

    records: list[Record] = []
    failures: list[tuple[str, str]] = []
    progress = _Progress(len(images))
    stems: set[str] = set()
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        loaded = []
        for path in chunk:
            try:
                loaded.append((path, read_image(path)))
            except TrtkitError as exc:
                failures.append((path, str(exc)))
        if loaded:
            results = task.predict_batch([img for _, img in loaded], batch_size=batch)
            for (path, img), result in zip(loaded, results):
                record = {"image": path, **result.to_json()}
                records.append((record, result))
                if save_dir is not None:
                    _save(save_dir, _unique_stem(Path(path).stem, stems), img, result, record)
        progress.advance(len(chunk))
    progress.done()
    return records, failures


def _unique_stem(stem: str, seen: set[str]) -> str:
    name, i = stem, 1
    while name in seen:
        i += 1
        name = f"{stem}_{i}"
    seen.add(name)
    return name


def _save(save_dir: Path, stem: str, image: Any, result: Any, record: dict[str, Any]) -> None:
    from .._optional import require
    from ..atomic import write_bytes_atomic, write_text_atomic

    cv2 = require("cv2", purpose="saving annotated images")
    ok, png = cv2.imencode(".png", cv2.cvtColor(result.draw(image), cv2.COLOR_RGB2BGR))
    if not ok:
        raise TrtkitError(f"OpenCV could not encode the annotated image for {record['image']!r} as PNG")
    write_bytes_atomic(save_dir / f"{stem}.png", png.tobytes(), what="annotated image")
    write_text_atomic(save_dir / f"{stem}.json", json.dumps(record, indent=2) + "\n", what="result JSON")


def _print_tables(records: list[Record]) -> None:
    for record, result in records:
        rows, cols = result.rows(), list(result.columns)
        print(f"{record['image']}: {len(rows)} result(s)")
        if rows:
            widths = [max(len(str(x)) for x in col) for col in zip(cols, *rows)]
            for row in [cols, *rows]:
                print("  " + "  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip())


class _Progress:
    """A one-line progress bar on stderr, only for 8+ images and only when stderr is a terminal."""

    def __init__(self, total: int) -> None:
        self.total, self.count = total, 0
        self.enabled = total >= 8 and sys.stderr.isatty()

    def advance(self, n: int) -> None:
        self.count += n
        if self.enabled:
            filled = int(30 * self.count / self.total)
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {self.count}/{self.total}")
            sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
