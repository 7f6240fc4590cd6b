"""The Python-backend models a trtkit repository runs (imported by each ``model.py`` shim).

* :class:`RawModel` runs one model through :func:`trtkit.load`; requests that
  Triton's dynamic batcher hands over together are stacked on the batch axis
  and run as one inference.
* :class:`TaskPreprocess` decodes encoded image bytes and runs the task's own
  ``preprocess``; the model's feeds and the task's meta (as JSON) go on to the
  next ensemble step.
* :class:`TaskPostprocess` runs the task's own ``postprocess`` on the model's
  outputs and answers with tensors and the result's JSON.

Each step reads ``trtkit_step.json`` from its version directory (written by
:func:`trtkit.serve.repository.write_repository`). Tensors cross the stub
through :mod:`trtkit.serve.pb_tensors` (DLPack; see there why not NumPy). A
request that fails (undecodable image, a shape the model refuses) is answered
with a Triton error naming the problem; the other requests of the batch, and
the server, go on.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..errors import TaskError, TrtkitError
from ..spec import RuntimeConfig
from .facts import ModelFacts
from .pb_tensors import from_pb, json_tensor, to_pb

__all__ = ["STEP_FILE", "META", "IMAGE", "JSON_OUT", "RawModel", "TaskPreprocess", "TaskPostprocess",
           "decode_image", "build_task", "task_outputs"]

STEP_FILE = "trtkit_step.json"
IMAGE = "image"  # ensemble input: encoded image bytes, UINT8 [-1]
META = "trtkit_meta"  # preprocess -> postprocess: the task's meta as JSON, UINT8 [-1]
JSON_OUT = "json"  # ensemble output: the result's JSON, UINT8 [-1]


class _Step:
    """Triton's ``TritonPythonModel`` interface: ``initialize``, ``execute``, ``finalize``."""

    def initialize(self, args: Mapping[str, str]) -> None:
        import triton_python_backend_utils as pb_utils  # provided by the stub process

        self.pb = pb_utils
        self.dir = Path(args["model_repository"]) / args["model_version"]
        self.step = json.loads((self.dir / STEP_FILE).read_text(encoding="utf-8"))
        self._owned: list[Any] = []
        self.setup()

    def setup(self) -> None:
        raise NotImplementedError

    def run_one(self, request: Any) -> list[Any]:
        raise NotImplementedError

    def execute(self, requests: list[Any]) -> list[Any]:
        return [self._answer(request) for request in requests]

    def _answer(self, request: Any) -> Any:
        try:
            return self.pb.InferenceResponse(output_tensors=self.run_one(request))
        except TrtkitError as exc:
            return self._error(exc)

    def _error(self, exc: Exception) -> Any:
        return self.pb.InferenceResponse(output_tensors=[], error=self.pb.TritonError(f"{self.step['name']}: {exc}"))

    def _input(self, request: Any, name: str) -> np.ndarray:
        tensor = self.pb.get_input_tensor_by_name(request, name)
        if tensor is None:  # Triton checks names against config.pbtxt first; this is a safety net
            raise TaskError(f"request has no input {name!r}")
        return from_pb(tensor)

    def _facts(self, model: Mapping[str, Any]) -> ModelFacts:
        return ModelFacts.from_json(dict(model), base=self.dir)

    def _load(self, model: Mapping[str, Any]) -> Any:
        from ..backends import load

        backend = load(self.dir / model["path"], config=RuntimeConfig(**self.step.get("runtime", {})))
        self._owned.append(backend)
        return backend

    def finalize(self) -> None:
        for backend in self._owned:
            backend.close()
        self._owned = []


# ---------------------------------------------------------------- the model itself


class RawModel(_Step):
    """One model, run by trtkit (ONNX Runtime, or TensorRT for engines)."""

    def setup(self) -> None:
        self.backend = self._load(self.step["model"])
        self.batched = int(self.step["max_batch_size"]) > 0

    def execute(self, requests: list[Any]) -> list[Any]:
        feeds: list[dict[str, np.ndarray] | Exception] = []
        for request in requests:
            try:
                feeds.append({s.name: self._input(request, s.name) for s in self.backend.inputs})
            except TrtkitError as exc:
                feeds.append(exc)
        good = [f for f in feeds if isinstance(f, dict)]
        stacked = self._run_stacked(good) if self.batched and len(good) > 1 else None
        answers, k = [], 0
        for item in feeds:
            if isinstance(item, Exception):
                answers.append(self._error(item))
                continue
            try:
                outputs = stacked[k] if stacked is not None else self.backend.infer(item)
                answers.append(self.pb.InferenceResponse(output_tensors=[to_pb(self.pb, n, v) for n, v in outputs.items()]))
            except TrtkitError as exc:
                answers.append(self._error(exc))
            k += 1
        return answers

    def _run_stacked(self, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]] | None:
        """One inference for requests the dynamic batcher grouped; None (run one by one) when their
        non-batch dims differ or the stacked run fails, so each request gets its own answer or error."""
        names = list(feeds[0])
        if any(len({f[n].shape[1:] for f in feeds}) > 1 for n in names):
            return None
        counts = [int(f[names[0]].shape[0]) for f in feeds]
        try:
            outputs = self.backend.infer({n: np.concatenate([f[n] for f in feeds]) for n in names})
        except TrtkitError:
            return None
        edges = np.cumsum([0, *counts])
        return [{n: np.asarray(v)[a:b] for n, v in outputs.items()} for a, b in zip(edges[:-1], edges[1:])]


# ---------------------------------------------------------------- task pipelines


def decode_image(data: np.ndarray) -> np.ndarray:
    """Encoded image bytes (UINT8) -> RGB uint8 HxWx3, decoded exactly as ``trtkit predict`` reads files."""
    from .._optional import require

    cv2 = require("cv2", purpose="decoding images")
    raw = np.ascontiguousarray(data, dtype=np.uint8).reshape(-1)
    if raw.size == 0:
        raise TaskError("input 'image' is empty (0 bytes); send the bytes of a JPEG/PNG/BMP/TIFF/WebP file")
    bgr = cv2.imdecode(raw, cv2.IMREAD_COLOR)
    if bgr is None or bgr.shape[0] == 0 or bgr.shape[1] == 0:
        raise TaskError(
            f"input 'image' cannot be decoded as an image ({raw.size} bytes, starts with {bytes(raw[:8])!r}); "
            "send the encoded bytes of a JPEG/PNG/BMP/TIFF/WebP file, e.g. np.frombuffer(open(path, 'rb').read(), np.uint8)"
        )
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def build_task(task: str, models: Mapping[str, Any], options: Mapping[str, Any]) -> Any:
    """The task object for ``task`` around ``models`` (facts or backends): ``{"model": ...}``, or for OCR
    ``{"det", "rec", "cls"?}``. ``options`` are task-config fields (conf, iou, top_k, labels...)."""
    from ..tasks import task_class

    cls = task_class(task)
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
    try:
        config = dataclasses.replace(cls.config_type(), **given)
    except TypeError as exc:
        raise TaskError(f"task {task!r} does not take option(s) {sorted(given)} ({exc})") from None
    if task == "ocr":
        return cls(models["det"], models["rec"], models.get("cls"), config=config)
    return cls(models["model"], config=config)


def meta_to_json(meta: Any) -> Any:
    """A task's meta (None, or a dataclass of numbers such as the letterbox) as JSON."""
    if meta is None:
        return None
    if not dataclasses.is_dataclass(meta) or isinstance(meta, type):
        raise TaskError(f"task meta of type {type(meta).__name__} cannot be sent between ensemble steps")
    kind = type(meta)
    return {"type": f"{kind.__module__}:{kind.__qualname__}", "fields": dataclasses.asdict(meta)}


def meta_from_json(doc: Any) -> Any:
    if doc is None:
        return None
    module, _, name = str(doc.get("type", "")).partition(":")
    if not module.startswith("trtkit.tasks"):  # only trtkit's own meta types are ever rebuilt
        raise TaskError(f"input {META!r} names type {doc.get('type')!r}, which is not a trtkit task meta")
    kind: Any = getattr(importlib.import_module(module), name)
    if not (isinstance(kind, type) and dataclasses.is_dataclass(kind)):
        raise TaskError(f"input {META!r} names {doc.get('type')!r}, which is not a trtkit task meta")
    return kind(**doc["fields"])


def _column(values: Any, dtype: Any, tail: tuple[int, ...]) -> np.ndarray:
    arr = np.asarray(values, dtype=dtype)
    return arr.reshape((-1, *tail)) if arr.size else np.zeros((0, *tail), dtype)


def task_outputs(task: str, result: Any) -> dict[str, np.ndarray]:
    """A result's numbers as tensors (their JSON goes in :data:`JSON_OUT`)."""
    if task == "detect":
        return {"boxes": _column(result.boxes, np.float32, (4,)), "scores": _column(result.scores, np.float32, ()),
                "class_ids": _column(result.class_ids, np.int64, ())}
    if task == "face":
        count = len(result.scores)
        marks = np.zeros((count, 0, 2)) if result.landmarks is None else np.asarray(result.landmarks)
        return {"boxes": _column(result.boxes, np.float32, (4,)), "scores": _column(result.scores, np.float32, ()),
                "landmarks": marks.astype(np.float32).reshape(count, marks.shape[1] if marks.ndim == 3 else 0, 2)}
    if task == "classify":
        return {"class_ids": _column(result.class_ids, np.int64, ()), "scores": _column(result.scores, np.float32, ())}
    if task == "ocr":
        return {"boxes": _column([line.box for line in result.lines], np.float32, (4, 2)),
                "scores": _column([line.score for line in result.lines], np.float32, ())}
    raise TaskError(f"unknown task {task!r}")


# (name, Triton dtype name, dims) of each task's tensor outputs, as config.pbtxt declares them
TASK_OUTPUTS: dict[str, tuple[tuple[str, str, tuple[int, ...]], ...]] = {
    "detect": (("boxes", "float32", (-1, 4)), ("scores", "float32", (-1,)), ("class_ids", "int64", (-1,))),
    "face": (("boxes", "float32", (-1, 4)), ("scores", "float32", (-1,)), ("landmarks", "float32", (-1, -1, 2))),
    "classify": (("class_ids", "int64", (-1,)), ("scores", "float32", (-1,))),
    "ocr": (("boxes", "float32", (-1, 4, 2)), ("scores", "float32", (-1,))),
}


class _TaskStep(_Step):
    def _models(self, *, run: tuple[str, ...] = ()) -> dict[str, Any]:
        """Facts for each model of the task; the ones in ``run`` opened with trtkit.load instead."""
        models = self.step["models"]
        return {key: self._load(m) if key in run else self._facts(m) for key, m in models.items()}


class TaskPreprocess(_TaskStep):
    def setup(self) -> None:
        self.task = build_task(self.step["task"], self._models(), self.step.get("options", {}))
        self.prepare = self.task.detector.preprocess if self.step["task"] == "ocr" else self.task.preprocess

    def run_one(self, request: Any) -> list[Any]:
        feeds, meta = self.prepare(decode_image(self._input(request, IMAGE)))
        return [to_pb(self.pb, n, v) for n, v in feeds.items()] + [json_tensor(self.pb, META, meta_to_json(meta))]


class TaskPostprocess(_TaskStep):
    def setup(self) -> None:
        run = ("rec", "cls") if self.step["task"] == "ocr" else ()
        self.task = build_task(self.step["task"], self._models(run=run), self.step.get("options", {}))
        self.model_outputs = [o["name"] for o in self.step["models"]["det" if self.step["task"] == "ocr" else "model"]["outputs"]]

    def run_one(self, request: Any) -> list[Any]:
        outputs = {name: self._input(request, name) for name in self.model_outputs}
        meta = meta_from_json(json.loads(self._input(request, META).tobytes().decode("utf-8")))
        if self.step["task"] == "ocr":
            boxes = self.task.detector.postprocess(outputs, meta)
            result = self.task.read_lines(decode_image(self._input(request, IMAGE)), boxes)
        else:
            result = self.task.postprocess(outputs, meta)
        tensors = [to_pb(self.pb, n, v) for n, v in task_outputs(self.step["task"], result).items()]
        return tensors + [json_tensor(self.pb, JSON_OUT, result.to_json())]
