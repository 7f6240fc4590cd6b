"""The contract every task pipeline follows (classification, detection, faces, OCR).

A task turns an RGB image into a Result around any Backend:

* ``preprocess(image) -> (feeds, meta)``: pure NumPy/cv2, no backend calls.
  ``feeds`` holds one batch-1 array per model input; ``meta`` is whatever
  ``postprocess`` needs to map results back to the original image (scale, pad,
  original size...).
* ``postprocess(outputs, meta) -> Result``: pure NumPy; ``outputs`` holds one
  batch-1 array per model output (as ``backend.infer`` returns them).
* ``__call__(image)`` runs preprocess -> ``backend.infer`` -> postprocess.
* ``predict_batch(images)`` stacks the feeds into one inference when the
  model's batch axis is dynamic, and loops otherwise; its stages run one after
  another.
* ``stream(images)`` overlaps them: decoding and preprocessing in worker
  threads, batched inference, postprocessing in the workers, results in input
  order, a bad image giving an :class:`~trtkit.tasks.streaming.ImageError`
  result instead of stopping the stream (see :mod:`trtkit.tasks.streaming`).

Tasks are built from an open Backend (``Classifier(backend, config=...)``,
the caller keeps ownership) or from a path (``Classifier.from_path(model,
runtime=RuntimeConfig(), config=...)``, the task owns the backend and closes
it). Results are frozen dataclasses that satisfy :class:`Result`.

Splitting batched outputs back into per-image outputs is a hook
(:meth:`Task.split_outputs`): most models keep the batch on axis 0, but e.g.
ONNX ``NonMaxSuppression`` returns ``selected_indices [K, 3]`` whose column 0
is the batch index, so a task for such a graph overrides the hook.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Generic, Iterable, Iterator, Mapping, Protocol, Sequence, TypeVar, runtime_checkable

import numpy as np

from ..errors import TaskError
from ..spec import RuntimeConfig, TensorSpec

__all__ = [
    "Result", "Task", "ImageInput", "model_metadata", "describe_outputs", "read_labels", "input_dtype",
    "check_input_size", "MIN_INPUT_SIDE",
]

MIN_INPUT_SIDE = 32  # the coarsest stride of YOLO/SCRFD heads: a smaller input has no cells at that stride
# Largest model input side trtkit prepares: 8192 px is 805 MB of float32 per image, past any detector's training size;
# above it cv2 fails with an out-of-memory traceback instead of a clear error.
MAX_INPUT_SIDE = 8192

ImageInput = np.ndarray | str | os.PathLike  # an RGB uint8 HxWx3 array, or an image file path


@runtime_checkable
class Result(Protocol):
    """What every task returns. Implementations are frozen dataclasses.

    ``columns`` names the columns of ``rows()`` (the CLI table header).
    """

    columns: ClassVar[tuple[str, ...]]

    def to_json(self) -> dict[str, Any]: ...

    def draw(self, image: np.ndarray) -> np.ndarray:
        """Return an annotated RGB copy of ``image`` (the input is not modified)."""
        ...

    def rows(self) -> list[list[str]]: ...


ConfigT = TypeVar("ConfigT")
ResultT = TypeVar("ResultT")


class Task(Generic[ConfigT, ResultT]):
    """Base class of a task pipeline. Subclasses set ``name``/``config_type`` and
    implement ``preprocess`` and ``postprocess`` (and ``_check_model`` to reject a
    model whose inputs/outputs do not fit the task, with a TaskError saying what
    layout was expected and what was found)."""

    name: ClassVar[str] = "task"
    config_type: ClassVar[type] = object

    def __init__(self, backend: Any, *, config: ConfigT | None = None, model_path: str | os.PathLike | None = None) -> None:
        self.backend = backend
        self.config: ConfigT = config if config is not None else self.config_type()
        self._owns_backend = False
        self._closed = False
        path = model_path if model_path is not None else getattr(backend, "path", None)
        self.model_path: Path | None = Path(path) if path is not None else None
        self._check_model()

    # ------------------------------------------------------------ lifetime
    @classmethod
    def from_path(
        cls,
        model: str | os.PathLike,
        *,
        runtime: RuntimeConfig | None = None,
        config: Any = None,
        backend: str = "auto",
    ) -> "Task[Any, Any]":
        """Open ``model`` with :func:`trtkit.load` and build the task; the task owns and closes the backend."""
        from ..backends import load

        opened = load(model, backend=backend, config=runtime or RuntimeConfig())
        try:
            task = cls(opened, config=config, model_path=model)
        except BaseException:
            opened.close()
            raise
        task._owns_backend = True
        return task

    def close(self) -> None:
        """Close the backend when this task opened it (``from_path``); idempotent."""
        if not self._closed:
            self._closed = True
            workers = self.__dict__.pop("_stream_workers", None)  # worker processes a stream started
            if workers is not None:
                workers.close()
            if self._owns_backend:
                self.backend.close()

    def __enter__(self) -> "Task[ConfigT, ResultT]":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ model facts
    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return tuple(self.backend.inputs)

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return tuple(self.backend.outputs)

    @property
    def dynamic_batch(self) -> bool:
        """True when every input's axis 0 is dynamic, so images can be stacked into one batch."""
        return all(s.rank > 0 and isinstance(s.shape[0], str) for s in self.inputs)

    def _check_model(self) -> None:
        """Raise TaskError when the model's inputs/outputs do not fit this task."""

    # ------------------------------------------------------------ the pipeline
    def preprocess(self, image: np.ndarray) -> tuple[dict[str, np.ndarray], Any]:
        raise NotImplementedError

    def postprocess(self, outputs: Mapping[str, np.ndarray], meta: Any) -> ResultT:
        raise NotImplementedError

    def __call__(self, image: ImageInput) -> ResultT:
        from ._image import as_rgb

        if self._closed:
            raise TaskError(f"{type(self).__name__} was used after close(); create a new one")
        feeds, meta = self.preprocess(as_rgb(image))
        return self.postprocess(self.backend.infer(feeds), meta)

    def predict_batch(self, images: Iterable[ImageInput], *, batch_size: int = 8) -> list[ResultT]:
        """Run many images: stacked ``batch_size`` at a time when the batch axis is dynamic, else one by one."""
        from ._image import as_rgb

        if batch_size < 1:
            raise TaskError(f"predict_batch(batch_size={batch_size}): batch_size must be >= 1")
        items = list(images)
        if not self.dynamic_batch or batch_size == 1:
            return [self(image) for image in items]
        results: list[ResultT] = []
        for start in range(0, len(items), batch_size):
            prepared = [self.preprocess(as_rgb(image)) for image in items[start : start + batch_size]]
            results.extend(self._run_stacked(prepared))
        return results

    def stream(
        self, images: Iterable[ImageInput], *, batch_size: int = 8, workers: int | None = None, depth: int = 2,
        pool: str = "auto",
    ) -> Iterator[Any]:
        """Yield one result per image, in input order, with decoding, preprocessing, inference and
        postprocessing overlapped (:mod:`trtkit.tasks.streaming`). ``images`` is any iterable of
        arrays or paths, read lazily; an image that cannot be used yields an ``ImageError``.
        ``workers`` threads or processes (default: one per core); at most ``depth`` batches in flight;
        ``pool`` picks threads or worker processes for decoding and preprocessing (see
        :class:`~trtkit.tasks.streaming.StreamOptions`)."""
        from .streaming import StreamOptions, stream_predictions

        options = StreamOptions(batch_size=batch_size, workers=workers, depth=depth, pool=pool)
        return (p.result for p in stream_predictions(self, images, options=options))

    def _run_stacked(self, prepared: Sequence[tuple[dict[str, np.ndarray], Any]]) -> list[ResultT]:
        names = list(prepared[0][0])
        shapes = {name: {feeds[name].shape for feeds, _ in prepared} for name in names}
        if any(len(s) > 1 for s in shapes.values()):  # e.g. no letterbox: sizes differ, cannot stack
            return [self.postprocess(self.backend.infer(feeds), meta) for feeds, meta in prepared]
        stacked = {name: np.concatenate([feeds[name] for feeds, _ in prepared], axis=0) for name in names}
        per_image = self.split_outputs(self.backend.infer(stacked), len(prepared))
        return [self.postprocess(outputs, meta) for outputs, (_, meta) in zip(per_image, prepared)]

    def split_outputs(self, outputs: Mapping[str, np.ndarray], count: int) -> list[dict[str, np.ndarray]]:
        """Split batched outputs into ``count`` batch-1 output dicts (batch on axis 0)."""
        per: list[dict[str, np.ndarray]] = [{} for _ in range(count)]
        for name, value in outputs.items():
            arr = np.asarray(value)
            if arr.ndim == 0 or arr.shape[0] != count:
                raise TaskError(
                    f"output {name!r} has shape {list(arr.shape)} after a batch of {count}; expected the batch on "
                    f"axis 0. Run images one by one (batch_size=1) for this model"
                )
            for i in range(count):
                per[i][name] = arr[i : i + 1]
        return per


def describe_outputs(specs: Sequence[TensorSpec]) -> str:
    """``name [shape] dtype, ...`` for error messages that say what a model has."""
    def dims(spec: TensorSpec) -> str:  # long symbolic dims (shape-inference formulas) shown as -1
        return "[" + ",".join(str(d) if isinstance(d, int) or len(d) <= 12 else "-1" for d in spec.shape) + "]"

    return ", ".join(f"{s.name} {dims(s)} {s.dtype}" for s in specs) or "(none)"


def model_metadata(backend: Any, path: Path | None) -> dict[str, str]:
    """Model metadata: ONNX ``metadata_props`` for a .onnx file, else the backend's ``metadata`` (engines)."""
    meta = getattr(backend, "metadata", None)
    result: dict[str, str] = {str(k): str(v) for k, v in dict(meta or {}).items()} if isinstance(meta, Mapping) else {}
    if path is not None and path.suffix.lower() == ".onnx" and path.is_file():
        import onnx

        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # onnx raises DecodeError/ValueError etc.; the backend opened it, so this is rare
            raise TaskError(f"cannot read metadata from {str(path)!r} ({exc}); check the model file") from exc
        result.update({p.key: p.value for p in proto.metadata_props})
    return result


def read_labels(path: str | os.PathLike) -> tuple[str, ...]:
    """Class names from a text file, one per line (line N = class N-1); trailing blank lines ignored."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TaskError(f"labels file {str(p)!r} does not exist; give a text file with one class name per line") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TaskError(f"cannot read labels file {str(p)!r} ({exc}); give a UTF-8 text file, one name per line") from exc
    labels = tuple(line.strip() for line in text.rstrip("\n").splitlines())
    if not labels:
        raise TaskError(f"labels file {str(p)!r} is empty; give one class name per line")
    return labels


def input_dtype(spec: TensorSpec) -> np.dtype:
    """The numpy dtype to feed ``spec`` (float16 models get float16 feeds; float32 otherwise)."""
    return np.dtype(np.float16) if spec.dtype == "float16" else np.dtype(np.float32)


def check_input_size(size: Any, *, stride: int | None = None) -> tuple[int, int]:
    """Validate a requested ``input_size`` (h, w) (the CLI's ``--imgsz``): two ints >= 32 and, when
    ``stride`` is given, multiples of it. Otherwise cv2 fails on a zero size and the runtime fails
    deep inside the model on a size its strided layers cannot concatenate."""
    if (
        not isinstance(size, (tuple, list))
        or len(size) != 2
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in size)
    ):
        raise TaskError(f"input_size (--imgsz) must be (height, width) integers, got {size!r}; e.g. (640, 640)")
    h, w = int(size[0]), int(size[1])
    if min(h, w) < MIN_INPUT_SIDE:
        raise TaskError(
            f"input_size (--imgsz) must be >= {MIN_INPUT_SIDE} pixels per side, got {h}x{w}; use e.g. --imgsz 640"
        )
    if max(h, w) > MAX_INPUT_SIDE:
        raise TaskError(
            f"input_size (--imgsz) must be <= {MAX_INPUT_SIDE} pixels per side, got {h}x{w}; detectors are trained "
            "at 320 to 1280: use e.g. --imgsz 640"
        )
    if stride and (h % stride or w % stride):
        bad = h if h % stride else w
        near = [c for c in (bad // stride * stride, (bad // stride + 1) * stride) if c >= MIN_INPUT_SIDE]
        raise TaskError(
            f"input_size (--imgsz) must be a multiple of the model's stride {stride}, got {h}x{w}; "
            f"use --imgsz {' or '.join(map(str, near))}"
        )
    return h, w
