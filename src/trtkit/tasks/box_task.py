"""What detection and face tasks share: picking the output layout, its preprocessing, thresholds
(including the ones ``trtkit add-nms`` baked into a graph), and the decode -> threshold -> NMS path.

The layout comes from :mod:`trtkit.tasks.layouts` (auto-detected from the outputs, or named);
its preprocessing is applied unless the config overrides a field, and :meth:`BoxTask.describe`
says which layout and which preprocessing a run used.
"""

from __future__ import annotations

import ast
from typing import Any, ClassVar, Mapping

import numpy as np

from ..errors import TaskError
from ..spec import TensorSpec
from ._image import Letterbox, letterbox, nms, scale_boxes, scale_points
from .base import Task, check_input_size, describe_outputs, input_dtype, model_metadata
from .layouts import resolve_layout
from .layouts.base import Selected
from .preprocess import Preprocess

__all__ = ["BoxTask", "NMS_CONF_KEY", "NMS_IOU_KEY", "check_image_input", "check_box_config"]

NMS_CONF_KEY = "trtkit.nms.conf"  # written by trtkit add-nms: the thresholds baked into the graph
NMS_IOU_KEY = "trtkit.nms.iou"


def check_image_input(inputs: tuple[TensorSpec, ...], task: str) -> None:
    """One NCHW image input; a channels-last (NHWC) input is named as such, with its H, W and C."""
    if len(inputs) == 1 and inputs[0].rank == 4:
        shape = inputs[0].shape
        if shape[3] in (1, 3, 4) and shape[1] not in (1, 3, 4):
            raise TaskError(
                f"model input {inputs[0].name!r} {inputs[0].display_shape()} is channels-last (NHWC: H={shape[1]}, "
                f"W={shape[2]}, C={shape[3]}); trtkit's --task {task} feeds NCHW [B,3,H,W]. Export the model with an "
                "NCHW input (e.g. tf2onnx --inputs-as-nchw, or a Transpose at the start of the graph)"
            )
        return
    raise TaskError(
        f"--task {task} takes one image input [B,3,H,W] (NCHW); found inputs {describe_outputs(inputs)}. "
        "Pick the task that matches the model"
    )


def check_box_config(config: Any, layouts: tuple[str, ...], example: str) -> None:
    """Validate the fields detection and face configs share (``example``: e.g. ``--conf 0.25 --iou 0.45``)."""
    name = type(config).__name__
    if config.layout not in layouts:
        raise TaskError(f"{name}.layout (--layout) {config.layout!r} is unknown; choose one of {', '.join(layouts)}")
    for field_name in ("conf", "iou"):
        value = getattr(config, field_name)
        if value is not None and not 0.0 <= value <= 1.0:
            raise TaskError(f"{field_name} (--{field_name}) must be in [0, 1], got {value}; e.g. {example}")
    if config.max_det < 1:
        raise TaskError(f"{name}.max_det must be >= 1, got {config.max_det}")
    if config.input_size is not None:
        check_input_size(config.input_size)
    if not isinstance(config.preprocess, Preprocess):
        raise TaskError(f"{name}.preprocess must be a trtkit.tasks.preprocess.Preprocess, got {config.preprocess!r}")


def _literal(meta: Mapping[str, str], key: str) -> Any:
    try:
        return ast.literal_eval(meta.get(key, "None"))
    except (ValueError, SyntaxError):
        return None


class BoxTask(Task[Any, Any]):
    """Base of :class:`~trtkit.tasks.detection.Detector` and :class:`~trtkit.tasks.face.FaceDetector`.

    The config must have ``conf``, ``iou`` (None: the model's baked value, else the task default),
    ``max_det``, ``layout``, ``input_size`` and ``preprocess``.
    """

    default_conf: ClassVar[float] = 0.25
    default_iou: ClassVar[float] = 0.45

    # ------------------------------------------------------------ opening
    def _check_model(self) -> None:
        check_image_input(self.inputs, self.name)
        self.metadata = model_metadata(self.backend, self.model_path)
        self.labels = self._labels()
        self.input_size = self._input_size()
        spec = self.inputs[0]
        self.layout, self.binding = resolve_layout(
            self.name, self.config.layout, self.outputs, self.input_size, self.labels,
            inputs_text=f"input {spec.name!r} {spec.display_shape()} and ",
        )
        self.preprocessing = self.config.preprocess.over(self.layout.defaults(self.metadata))
        self.conf, self.iou = self._thresholds()
        self._check_classes()

    def _labels(self) -> tuple[str, ...]:
        return ()

    def _check_classes(self) -> None:
        """Hook: detection compares label count with the model's class count."""

    def _input_size(self) -> tuple[int, int]:
        h, w = self.inputs[0].shape[2:4]
        given = self.config.input_size
        if isinstance(h, int) and isinstance(w, int):
            if given is not None and tuple(given) != (h, w):
                raise TaskError(
                    f"input_size (--imgsz) {given[0]}x{given[1]} conflicts with the model's static input "
                    f"{self.inputs[0].display_shape()}; drop --imgsz / input_size or set it to {h}"
                    + (f"x{w}" if h != w else "")
                )
            return h, w
        stride = _literal(self.metadata, "stride")
        if isinstance(stride, (list, tuple)) and stride and all(isinstance(v, (int, float)) for v in stride):
            stride = max(stride)
        stride = int(stride) if isinstance(stride, (int, float)) and not isinstance(stride, bool) and stride >= 1 else None
        stride = stride or self.config.preprocess.stride or 32
        if given is not None:
            return check_input_size(given, stride=stride)
        size = _literal(self.metadata, "imgsz")
        if isinstance(size, (list, tuple)) and len(size) == 2:
            return int(size[0]), int(size[1])
        if isinstance(size, int):
            return size, size
        return 640, 640

    def _thresholds(self) -> tuple[float, float]:
        cfg = self.config
        if not self.layout.has_nms:
            return (cfg.conf if cfg.conf is not None else self.default_conf,
                    cfg.iou if cfg.iou is not None else self.default_iou)
        baked_conf, baked_iou = _literal(self.metadata, NMS_CONF_KEY), _literal(self.metadata, NMS_IOU_KEY)
        where = f"the model's in-graph NMS ({self.layout.name} outputs"
        if cfg.conf is not None and isinstance(baked_conf, (int, float)) and cfg.conf < baked_conf - 1e-9:
            raise TaskError(
                f"--conf {cfg.conf:g} is below the score threshold {baked_conf:g} baked into {where}, metadata "
                f"{NMS_CONF_KEY}): boxes scoring under {baked_conf:g} were already dropped inside the graph. Use "
                f"--conf {baked_conf:g} or higher, or re-run `trtkit add-nms --conf {cfg.conf:g}` on the raw model, "
                "or predict with the raw model"
            )
        if cfg.iou is not None:
            if not isinstance(baked_iou, (int, float)):
                raise TaskError(
                    f"--iou {cfg.iou:g} cannot apply: NMS runs inside this model ({self.layout.name} outputs) with "
                    f"an IoU threshold trtkit cannot read (no {NMS_IOU_KEY} metadata). Drop --iou, or predict with "
                    "the raw model to choose the IoU"
                )
            if abs(cfg.iou - baked_iou) > 1e-9:
                raise TaskError(
                    f"--iou {cfg.iou:g} differs from the IoU threshold {baked_iou:g} baked into {where}, metadata "
                    f"{NMS_IOU_KEY}). Drop --iou, or re-run `trtkit add-nms --iou {cfg.iou:g}` on the raw model"
                )
        conf = cfg.conf if cfg.conf is not None else (float(baked_conf) if isinstance(baked_conf, (int, float)) else 0.0)
        iou = float(baked_iou) if isinstance(baked_iou, (int, float)) else float("nan")
        return conf, iou

    # ------------------------------------------------------------ words
    def describe(self) -> str:
        """One line: the layout (auto-detected or given), the preprocessing and the thresholds used."""
        how = "auto-detected" if self.binding.auto else "given with --layout"
        given = self.config.preprocess.given()
        pre = f"{self.layout.name} defaults" if not given else f"{self.layout.name} defaults, overridden: {', '.join(given)}"
        h, w = self.input_size
        if self.layout.has_nms:
            iou = f"{self.iou:g}" if self.iou == self.iou else "unknown"
            thresholds = f"conf {self.conf:g} on top of the model's in-graph NMS (iou {iou})"
        else:
            thresholds = f"conf {self.conf:g}, iou {self.iou:g}"
        return (f"{self.name}: layout {self.layout.name} ({how}); input {h}x{w}; preprocessing "
                f"{self.preprocessing.describe()} ({pre}); {thresholds}")

    def with_preprocess(self, preprocess: Preprocess) -> "BoxTask":
        """The same model and layout with other preprocessing (shares the backend; closing it leaves it open)."""
        import dataclasses

        config = dataclasses.replace(self.config, preprocess=preprocess, layout=self.layout.name)
        return type(self)(self.backend, config=config, model_path=self.model_path)

    # ------------------------------------------------------------ pipeline
    def preprocess(self, image: np.ndarray) -> tuple[dict[str, np.ndarray], Letterbox]:
        boxed, info = self.letterbox(image)
        spec = self.inputs[0]
        return {spec.name: self.preprocessing.to_tensor(boxed, input_dtype(spec))}, info

    def letterbox(self, image: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        """The first half of :meth:`preprocess`: RGB uint8 ``HxWx3`` -> letterboxed uint8 at ``input_size``."""
        p = self.preprocessing
        return letterbox(image, self.input_size, pad_value=int(round(p.pad_value)), center=p.pad == "center")  # type: ignore[arg-type]

    def candidates(self, outputs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, float | None]:
        """(boxes, scores, classes, landmarks, top score seen) after threshold + NMS, in input pixels."""
        decoded = self.layout.decode(outputs, self.binding, self.input_size)
        if isinstance(decoded, Selected):
            top = float(decoded.scores.max()) if len(decoded.scores) else None
            keep = decoded.scores >= self.conf
            kps = decoded.landmarks[keep] if decoded.landmarks is not None else None
            return decoded.boxes[keep], decoded.scores[keep], decoded.classes[keep], kps, top
        classes = decoded.scores.argmax(1) if decoded.scores.shape[1] else np.zeros(0, np.int64)
        scores = decoded.scores[np.arange(len(classes)), classes]
        top = float(scores.max()) if len(scores) else None
        keep = np.flatnonzero(scores >= self.conf)
        boxes, scores, classes = decoded.boxes[keep], scores[keep], classes[keep]
        kps = decoded.landmarks[keep] if decoded.landmarks is not None else None
        aware = None if getattr(self.config, "class_agnostic", True) else classes
        kept = nms(boxes, scores, iou=self.iou, classes=aware, max_det=self.config.max_det)
        return boxes[kept], scores[kept], classes[kept].astype(np.int64), (kps[kept] if kps is not None else None), top

    def place(self, boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, kps: np.ndarray | None,
              info: Letterbox) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """Best first, at most max_det, mapped back to original image pixels."""
        order = np.argsort(-scores, kind="stable")[: self.config.max_det]
        boxes = scale_boxes(boxes[order], info) if len(order) else np.zeros((0, 4), np.float32)
        marks = scale_points(kps[order], info) if kps is not None else None
        return boxes, scores[order].astype(np.float32), classes[order].astype(np.int64), marks
