"""Image classification: resize, centre-crop, normalize -> top-k classes with labels.

Defaults follow the ImageNet convention (resize short side 256, centre-crop
224, RGB, pixel/255 then ImageNet mean/std), which is what efficientnet_lite0,
VGG16 from the ONNX model zoo and torchvision-style models expect. That
normalisation is one preset among several (``ClassifierConfig.preset`` /
``--preset``: imagenet, inception, caffe, unit, raw; see
:data:`~trtkit.tasks.preprocess.CLASSIFY_PRESETS`), and
``ClassifierConfig.preprocess`` overrides single fields (``--scale``,
``--mean``, ``--std``, ``--bgr``). Softmax is applied only when the outputs are
logits (values outside [0, 1] or rows that do not sum to ~1), so a model that
already ends in Softmax is not squashed twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

import numpy as np

from ..errors import TaskError
from ._image import center_crop, resize_short
from .base import Task, describe_outputs, input_dtype, model_metadata
from .preprocess import CLASSIFY_PRESETS, Preprocess

__all__ = ["ClassifierConfig", "Classification", "Classifier", "labels_from_metadata"]

@dataclass(frozen=True)
class ClassifierConfig:
    """Preprocessing and output options. ``crop=None`` takes the model's static input size (else 224);
    ``resize=None`` takes ``round(crop / 0.875)`` (256 for 224). ``softmax=None`` detects logits.
    ``preset`` names the normalisation (:data:`CLASSIFY_PRESETS`); ``preprocess`` overrides its fields."""

    top_k: int = 5
    resize: int | None = None
    crop: int | None = None
    preset: str = "imagenet"
    preprocess: Preprocess = field(default_factory=Preprocess)
    labels: tuple[str, ...] = ()
    softmax: bool | None = None

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise TaskError(f"top_k (--top-k) must be >= 1 (got {self.top_k}); e.g. --top-k 5")
        if self.preset not in CLASSIFY_PRESETS:
            raise TaskError(
                f"ClassifierConfig.preset (--preset) {self.preset!r} is unknown; choose one of {', '.join(CLASSIFY_PRESETS)}"
            )
        if self.preprocess.pad is not None or self.preprocess.pad_value is not None:
            raise TaskError("classification resizes and centre-crops, it does not pad: drop --pad / Preprocess.pad")

    @property
    def preprocessing(self) -> Preprocess:
        """The preset with the overrides applied."""
        return self.preprocess.over(CLASSIFY_PRESETS[self.preset])


@dataclass(frozen=True)
class Classification:
    """Top-k classes, best first. ``scores`` are probabilities (softmax applied when the model gave logits)."""

    class_ids: tuple[int, ...]
    scores: tuple[float, ...]
    labels: tuple[str, ...]

    columns: ClassVar[tuple[str, ...]] = ("rank", "class", "label", "score")

    @property
    def top1(self) -> int:
        return self.class_ids[0]

    def to_json(self) -> dict[str, Any]:
        return {
            "task": "classify",
            "top_k": [
                {"class_id": c, "label": label, "score": round(s, 6)}
                for c, label, s in zip(self.class_ids, self.labels, self.scores)
            ],
        }

    def rows(self) -> list[list[str]]:
        return [[str(i + 1), str(c), label, f"{s:.4f}"] for i, (c, label, s) in enumerate(zip(self.class_ids, self.labels, self.scores))]

    def draw(self, image: np.ndarray) -> np.ndarray:
        from .draw import draw_caption

        return draw_caption(image, [f"{label or c} {s:.2f}" for c, label, s in zip(self.class_ids, self.labels, self.scores)])


def labels_from_metadata(meta: Mapping[str, str]) -> tuple[str, ...]:
    """Class names from model metadata: Ultralytics ``names`` (a dict literal) or ``labels`` (one per line / JSON list)."""
    import ast

    for key in ("names", "labels", "classes"):
        text = meta.get(key)
        if not text:
            continue
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = [line for line in text.splitlines() if line.strip()]
        if isinstance(value, dict):
            ids = sorted(int(k) for k in value)
            if ids == list(range(len(ids))):
                return tuple(str(value[k] if k in value else value[str(k)]) for k in ids)
        elif isinstance(value, (list, tuple)) and len(value) > 1:
            return tuple(str(v) for v in value)
    return ()


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _looks_like_probabilities(row: np.ndarray) -> bool:
    return bool(row.min() >= 0.0 and row.max() <= 1.0 and abs(float(row.sum()) - 1.0) < 1e-3)


class Classifier(Task[ClassifierConfig, Classification]):
    """Top-k image classification for models with input ``[B, 3, H, W]`` and output ``[B, C]``."""

    name = "classify"
    config_type = ClassifierConfig

    def _check_model(self) -> None:
        ins, outs = self.inputs, self.outputs
        ok_in = len(ins) == 1 and ins[0].rank == 4 and (ins[0].shape[1] == 3 or isinstance(ins[0].shape[1], str))
        ok_out = len(outs) >= 1 and (
            outs[0].rank == 2 or (outs[0].rank == 4 and all(d == 1 for d in outs[0].shape[2:]))
        )
        if not (ok_in and ok_out):
            raise TaskError(
                "model does not look like an image classifier: expected one input [B,3,H,W] and an output "
                f"[B,num_classes]; found inputs {describe_outputs(ins)} and outputs {describe_outputs(outs)}. "
                "Pick the task that matches the model (--task detect/face/ocr)"
            )
        crop = self._crop_size()
        static = ins[0].shape[2:4]
        if all(isinstance(d, int) for d in static) and tuple(static) != crop:
            raise TaskError(
                f"ClassifierConfig.crop={self.config.crop} conflicts with the model's static input "
                f"{ins[0].display_shape()}; drop crop= or set it to {static[0]}"
            )
        labels = self.config.labels or labels_from_metadata(model_metadata(self.backend, self.model_path))
        num = outs[0].shape[1]
        if labels and isinstance(num, int) and len(labels) != num:
            raise TaskError(
                f"{len(labels)} labels given (--labels / labels=) but the model's output {outs[0].name!r} {outs[0].display_shape()} "
                f"has {num} classes; give a labels file with {num} lines"
            )
        if isinstance(num, int):
            self._check_top_k(num)
        self.labels = labels

    def _check_top_k(self, num_classes: int) -> None:
        """More classes asked for than exist is a mistake to report, not to clamp silently."""
        if self.config.top_k > num_classes:
            raise TaskError(
                f"top_k (--top-k) {self.config.top_k} is larger than the number of classes ({num_classes}) of the "
                f"model's output {self.outputs[0].name!r}; use --top-k {num_classes} or less"
            )

    def _crop_size(self) -> tuple[int, int]:
        if self.config.crop is not None:
            return self.config.crop, self.config.crop
        h, w = self.inputs[0].shape[2:4]
        if isinstance(h, int) and isinstance(w, int):
            return h, w
        return 224, 224

    def preprocess(self, image: np.ndarray) -> tuple[dict[str, np.ndarray], None]:
        ch, cw = self._crop_size()
        resize = self.config.resize or int(round(min(ch, cw) / 0.875))
        crop = center_crop(resize_short(image, resize), (ch, cw))
        spec = self.inputs[0]
        return {spec.name: self.config.preprocessing.to_tensor(crop, input_dtype(spec))}, None

    def describe(self) -> str:
        """One line: the preprocessing used (preset and overrides)."""
        ch, cw = self._crop_size()
        resize = self.config.resize or int(round(min(ch, cw) / 0.875))
        given = self.config.preprocess.given()
        over = f", overridden: {', '.join(given)}" if given else ""
        return (f"classify: resize short side {resize}, centre-crop {ch}x{cw}; preprocessing "
                f"{self.config.preprocessing.describe()} (preset {self.config.preset}{over})")

    def postprocess(self, outputs: Mapping[str, np.ndarray], meta: None) -> Classification:
        row = np.asarray(outputs[self.outputs[0].name], np.float32).reshape(-1)
        softmax = self.config.softmax
        if softmax is None:
            softmax = not _looks_like_probabilities(row)
        probs = _softmax(row) if softmax else row
        if not isinstance(self.outputs[0].shape[1], int):  # a static class count was checked when opening
            self._check_top_k(probs.size)
        k = min(self.config.top_k, probs.size)
        top = np.argpartition(-probs, k - 1)[:k]
        top = top[np.argsort(-probs[top], kind="stable")]
        labels = tuple(self.labels[i] if i < len(self.labels) else "" for i in top)
        return Classification(
            class_ids=tuple(int(i) for i in top), scores=tuple(float(probs[i]) for i in top), labels=labels
        )
