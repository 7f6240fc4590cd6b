"""``trtkit predict``: run a task pipeline (classify, detect, face, ocr) on images and videos.

Inputs are any mix of image files, directories (walked recursively, image
extensions only), globs and video files, plus ``--stream`` for a camera or an
RTSP/HTTP URL; they run through :mod:`trtkit.tasks.streaming` (decoding,
preprocessing, inference and postprocessing overlapped; ``--batch``,
``--workers``) and come out in input order. Prints a table per image (or one
JSON array with ``--json``, written as results arrive); with ``--save-dir``
writes ``<image stem>.png`` (annotated) and ``<image stem>.json`` per image,
each atomically, and per video ``<stem>.mp4`` (annotated) and ``<stem>.jsonl``
(one JSON line per frame). A bad image among many is reported on stderr and
the rest still run; the exit code is then 1. Ctrl-C stops cleanly: files
already written stay, videos and JSON-lines files are closed with the frames
done so far (exit 130).
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



def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "predict",
        help="run a task (classify/detect/face/ocr) on images; print results, save annotated images + JSON",
        description="Run a task pipeline on images with an ONNX model or a TensorRT engine.",
    )
    p.add_argument("--task", required=True, choices=TASK_CHOICES, help="what the model does")
    p.add_argument("model", metavar="MODEL", nargs="?", help="model (.onnx or engine); for --task ocr the det model")
    p.add_argument("images", metavar="IMAGES", nargs="*", help="image files, directories (recursive), globs, video files")
    p.add_argument("--stream", metavar="URL", help="also read a live stream: a camera index (0) or an RTSP/HTTP URL OpenCV can open")
    p.add_argument("--save-dir", metavar="DIR", help="write <stem>.png + <stem>.json per image, <stem>.mp4 + <stem>.jsonl per video, here")
    p.add_argument("--json", action="store_true", help="print results as JSON instead of tables")
    p.add_argument("--labels", metavar="FILE", help="class names, one per line (default: model metadata)")
    p.add_argument("--conf", type=float, help="score threshold (detect: 0.25, face: 0.5)")
    p.add_argument("--iou", type=float, help="NMS IoU threshold (detect: 0.45, face: 0.4)")
    p.add_argument("--top-k", type=int, help="classify: how many classes to report (default 5)")
    p.add_argument("--imgsz", type=int, help="detect/face: input size for models with dynamic H/W (>= 32, a multiple of the model's stride)")
    p.add_argument("--batch", type=int, default=8, help="images per inference when the batch axis is dynamic (default 8)")
    p.add_argument("--workers", type=int, help="threads (or processes) decoding and preprocessing, threads postprocessing (default: one per CPU core)")
    p.add_argument(
        "--pool", choices=("auto", "threads", "processes"), default="auto",
        help="where decoding and preprocessing run: worker threads, or worker processes writing into shared memory "
        "(no shared GIL; fills each batch before it runs). auto: processes for a GPU backend with >= 4 workers, "
        "threads for --stream and otherwise",
    )
    p.add_argument(
        "--graph-preprocess", choices=("host", "graph"),
        help="detect/face with an .onnx model: put the preprocessing in a copy of the model (the file is not changed). "
        "host: the workers letterbox with cv2 and send uint8 pixels, the model normalises (the same tensor as "
        "without; 4x less to write and upload; the fastest on a GPU). graph: the letterbox too (threads only)",
    )
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
    from ..tasks.sources import IMAGE_SUFFIXES

    return Path(path).suffix.lower() in IMAGE_SUFFIXES



# ---------------------------------------------------------------- running

def run(args: argparse.Namespace) -> int:
    from .._optional import require
    from ..tasks.diagnose import describe_task

    if args.batch < 1:
        raise SpecError(f"--batch must be >= 1, got {args.batch}")
    if args.workers is not None and args.workers < 1:
        raise SpecError(f"--workers must be >= 1, got {args.workers}; leave it out for one per CPU core")
    if args.stream is not None and args.pool == "processes":
        raise SpecError("--pool processes fills each batch before it runs, which holds back a live --stream; use --pool threads")
    require("cv2", purpose="reading images")  # once here, not once per image
    _check_graph_preprocess(args)
    save_dir = _prepare_save_dir(args.save_dir)
    task, images = open_task(args)
    print(describe_task(task), file=sys.stderr)  # which layout and preprocessing this run uses
    with task:
        if not images and args.stream is None:
            raise SpecError(
                "no images given; usage: trtkit predict --task TASK MODEL IMAGE|DIR|GLOB|VIDEO... (or --stream URL)"
            )
        if args.graph_preprocess is None:
            return _predict_all(task, images, args=args, save_dir=save_dir, runner=task)
        with _graph_front(task, args) as front:
            return _predict_all(task, images, args=args, save_dir=save_dir, runner=front)


def _graph_front(task: Any, args: argparse.Namespace) -> Any:
    """--graph-preprocess: the task's model with its preprocessing baked in (GraphPreprocessed), run
    with the same backend and runtime flags; ``task`` still letterboxes (host) and postprocesses."""
    from ..tasks.graph_preprocess import GraphPreprocessed

    backend, runtime = runtime_from_args(args)
    front = GraphPreprocessed.open(task, runtime=runtime, backend=backend, resize=args.graph_preprocess)
    where = "normalisation and layout" if front.resize == "host" else "letterbox, normalisation and layout"
    print(f"--graph-preprocess {front.resize}: the {where} run in the model (on {type(front.backend).__name__})", file=sys.stderr)
    return front


def _check_graph_preprocess(args: argparse.Namespace) -> None:
    """--graph-preprocess conflicts, before any model is loaded."""
    if args.graph_preprocess is None:
        return
    flag = f"--graph-preprocess {args.graph_preprocess}"
    if args.task not in ("detect", "face"):
        raise SpecError(f"{flag} applies to --task detect and --task face (letterbox tasks), not --task {args.task}; leave it out")
    if args.model is not None and not _is_image(args.model) and Path(args.model).suffix.lower() != ".onnx":
        raise SpecError(
            f"{flag} bakes the preprocessing into an ONNX model, and MODEL {args.model!r} is not one; give the .onnx, "
            "or build an engine from a baked model (trtkit.tasks.graph_preprocess.bake_normalize) and leave the flag out"
        )
    if args.graph_preprocess == "graph" and args.pool == "processes":
        raise SpecError(
            "--graph-preprocess graph uploads each batch at its largest image's size, which worker processes cannot "
            "fill; use --pool threads (or auto), or --graph-preprocess host"
        )


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


def _predict_all(task: Any, images: list[str], *, args: argparse.Namespace, save_dir: Path | None, runner: Any) -> int:
    """Stream ``images`` through ``runner`` (the task, or its GraphPreprocessed front end); ``task`` explains
    empty results."""
    from ..tasks.diagnose import explain_empty
    from ..tasks.sources import Source, expand_inputs
    from ..tasks.streaming import AUTO_PROCESSES_MIN_IMAGES, StreamOptions, stream_predictions

    sources = expand_inputs(images)
    if args.stream is not None:
        sources.append(Source("stream", args.stream))
    feed = _Feed(sources)
    out = _Output(save_dir, as_json=args.json, videos=feed.videos)
    total = feed.total()
    progress = _Progress(total)
    pool = args.pool
    if args.stream is not None or (pool == "auto" and total is not None and total < AUTO_PROCESSES_MIN_IMAGES):
        pool = "threads"  # a live camera: no waiting for a full batch; a few images: not worth starting processes
    options = StreamOptions(batch_size=args.batch, workers=args.workers, keep_images=save_dir is not None, pool=pool)
    predictions = stream_predictions(runner, feed.items(), options=options)
    interrupted = False
    try:
        for prediction in predictions:
            out.add(prediction)
            progress.advance()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        predictions.close()  # stops the stream's threads before the video sources go
        feed.close()
        out.close()
        progress.done()
    if not interrupted:  # never silent about empty results (all of them kept: they are small)
        notes = explain_empty(task, [*out.empty, *[(None, None)] * (out.count - len(out.failures) - len(out.empty))])
        print(*(f"note: {line}" for line in notes), sep="\n", file=sys.stderr, end="\n" if notes else "")
    for source, message in out.failures:
        print(f"error: {source}: {message}", file=sys.stderr)
    if interrupted:
        kept = f"; what was written to {str(save_dir)!r} is kept" if save_dir is not None else ""
        print(f"error: interrupted after {out.count} input(s){kept}", file=sys.stderr)
        return 130
    if out.failures:
        print(f"error: {len(out.failures)} of {out.count} input(s) failed", file=sys.stderr)
    return 1 if out.failures else 0


class _Feed:
    """The stream's input, in order: image paths as they are, video frames decoded lazily
    (one video open at a time), unusable inputs as BadInput."""

    def __init__(self, sources: list[Any]) -> None:
        self.sources = sources
        self.videos: dict[str, Any] = {}  # name -> its open VideoSource (fps, size), for the writers
        self._open: Any = None

    def total(self) -> int | None:
        """Images + known frame counts; None with a live stream (no end)."""
        from ..errors import TaskError
        from ..tasks.sources import VideoSource

        total = 0
        for s in self.sources:
            if s.kind == "stream":
                return None
            if s.kind == "video":
                try:
                    with VideoSource(s.path) as probe:
                        total += probe.count
                except TaskError:
                    total += 1  # counted as its one error
            else:
                total += 1
        return total

    def items(self) -> Any:
        from ..errors import TaskError
        from ..tasks.sources import VideoSource, camera_target
        from ..tasks.streaming import BadInput

        for s in self.sources:
            if s.kind == "image":
                yield s.path
                continue
            if s.kind == "error":
                yield BadInput(s.path, s.message)
                continue
            try:
                video = VideoSource(camera_target(s.path) if s.kind == "stream" else s.path, name=s.path)
            except TaskError as exc:
                yield BadInput(s.path, str(exc))
                continue
            self._open = video
            self.videos[s.path] = video
            yield from video.frames()
            video.close()
            self._open = None

    def close(self) -> None:
        if self._open is not None:
            self._open.close()


Record = tuple[dict[str, Any], Any]  # (JSON record, the Result)


class _Output:
    """Where results go: stdout (tables, or one JSON array written as it grows) and --save-dir files."""

    def __init__(self, save_dir: Path | None, *, as_json: bool, videos: dict[str, Any]) -> None:
        self.save_dir, self.as_json, self.videos = save_dir, as_json, videos
        self.count = 0
        self.failures: list[tuple[str, str]] = []
        self._stems: set[str] = set()
        self._writers: dict[str, _VideoSink] = {}
        self._printed = 0  # JSON records written to stdout so far
        self.empty: list[tuple[str, Any]] = []  # (source, result) of results with nothing found, for explain_empty

    def add(self, prediction: Any) -> None:
        self.count += 1
        result, source = prediction.result, prediction.source
        video, _, frame = source.rpartition("#")
        in_video = video in self.videos
        record: dict[str, Any] = {"image": source, **({"frame": int(frame)} if in_video else {}), **result.to_json()}
        if prediction.failed:
            self.failures.append((source, result.message))
        else:
            self._print(record, result)
            if hasattr(result, "top_score") and len(result) == 0:
                self.empty.append((source, result))
        if self.save_dir is None:
            return
        if in_video:
            sink = self._writers.get(video)
            if sink is None:
                sink = self._writers[video] = _VideoSink(self.save_dir, _unique_stem(_stem(video), self._stems), self.videos[video])
            sink.add(prediction, record)
        elif not prediction.failed:
            _save(self.save_dir, _unique_stem(Path(source).stem, self._stems), prediction.image, result, record)

    def _print(self, record: dict[str, Any], result: Any) -> None:
        if self.as_json:
            text = json.dumps(record, indent=2)
            sys.stdout.write(("[\n" if not self._printed else ",\n") + text)
            self._printed += 1
        else:
            _print_table(record, result)
        sys.stdout.flush()

    def close(self) -> None:
        for sink in self._writers.values():
            sink.close()
        if self.as_json:
            sys.stdout.write("\n]\n" if self._printed else "[]\n")
            sys.stdout.flush()


def _stem(source: str) -> str:
    stem = Path(source).stem
    return stem if stem and "://" not in source else "stream"


class _VideoSink:
    """``<stem>.mp4`` (annotated frames) and ``<stem>.jsonl`` (one line per frame) for one video.

    Both are written under temporary names and renamed by ``close()``, which also runs
    on Ctrl-C or an error: the files then hold every frame done so far, whole."""

    def __init__(self, save_dir: Path, stem: str, video: Any) -> None:
        self.dir, self.stem, self.video = save_dir, stem, video
        self._writer: Any = None
        self._tmp_video = save_dir / f".{stem}.partial.mp4"
        self._tmp_lines = save_dir / f".{stem}.jsonl.partial"
        self._lines = open(self._tmp_lines, "w", encoding="utf-8")

    def add(self, prediction: Any, record: dict[str, Any]) -> None:
        from .._optional import require

        self._lines.write(json.dumps(record) + "\n")
        image = prediction.image
        if image is None:
            return
        cv2 = require("cv2", purpose="writing videos")
        if self._writer is None:
            h, w = image.shape[:2]
            self._writer = cv2.VideoWriter(str(self._tmp_video), cv2.VideoWriter_fourcc(*"mp4v"), self.video.fps, (w, h))
            if not self._writer.isOpened():
                raise TrtkitError(f"OpenCV cannot write an MP4 video to {str(self._tmp_video)!r} (no mp4v encoder?)")
        self._writer.write(cv2.cvtColor(prediction.result.draw(image), cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        self._lines.close()
        self._tmp_lines.replace(self.dir / f"{self.stem}.jsonl")
        if self._writer is not None:
            self._writer.release()
            self._tmp_video.replace(self.dir / f"{self.stem}.mp4")


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


def _print_table(record: dict[str, Any], result: Any) -> None:
    rows, cols = result.rows(), list(result.columns)
    print(f"{record['image']}: {len(rows)} result(s)")
    if rows:
        widths = [max(len(str(x)) for x in col) for col in zip(cols, *rows)]
        for row in [cols, *rows]:
            print("  " + "  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip())


class _Progress:
    """A one-line progress bar with images/s on stderr, only when stderr is a terminal (and, with a
    known total, for 8+ inputs); redrawn at most 10 times a second."""

    def __init__(self, total: int | None, *, out: Any = None) -> None:
        import time

        self._clock = time.perf_counter
        self.out = out if out is not None else sys.stderr
        self.total, self.count = total, 0
        self.enabled = self.out.isatty() and (total is None or total >= 8)
        self._start = self._last = self._clock()

    def advance(self, n: int = 1) -> None:
        self.count += n
        now = self._clock()
        if self.enabled and (now - self._last >= 0.1 or self.count == self.total):
            self._last = now
            self.out.write("\r" + self.line(now))
            self.out.flush()

    def line(self, now: float) -> str:
        rate = self.count / max(now - self._start, 1e-9)
        if self.total:
            filled = int(30 * min(self.count, self.total) / self.total)
            return f"[{'#' * filled}{'.' * (30 - filled)}] {self.count}/{self.total}  {rate:.1f} img/s"
        return f"{self.count} images  {rate:.1f} img/s"

    def done(self) -> None:
        if self.enabled:
            self.out.write("\r" + self.line(self._clock()) + "\n")
