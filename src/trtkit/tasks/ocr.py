"""PP-OCR text reading: detection (DB) -> optional 0/180 classifier -> CTC recognition.

``OcrPipeline(det, rec, cls=None, config=OcrConfig())`` composes three
backends (ONNX Runtime, TensorRT, or a mix); ``OcrPipeline.from_paths(...)``
opens them itself and closes them with the pipeline. The defaults follow the
PP-OCRv4 ONNX pipeline (RapidOCR), see ``OcrConfig``. The stages live in
:mod:`trtkit.tasks.ocr_det` and :mod:`trtkit.tasks.ocr_rec`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, Sequence

import numpy as np

from ..errors import SpecError, TaskError
from ..spec import RuntimeConfig
from .base import ImageInput

__all__ = ["OcrConfig", "OcrLine", "OcrResult", "OcrPipeline", "REC_BATCHING", "edit_distance", "character_error_rate"]

REC_BATCHING = ("padded", "single", "buckets")  # OcrConfig.rec_batching choices, see ocr_rec.plan_batches


@dataclass(frozen=True)
class OcrConfig:
    """Settings of the OCR pipeline. Defaults match RapidOCR 1.4.4's PP-OCRv4 pipeline where it matters for
    accuracy (detector size and thresholds, recognizer height and minimum width)."""

    limit_side: int = 736  # the DB input's short side is scaled up to this ...
    limit_type: str = "min"  # ... ("min"), or its long side down to it ("max", PaddleOCR's server default)
    max_side: int = 2000  # ... but its long side never exceeds this (huge inputs cost time, not accuracy)
    det_threshold: float = 0.3  # probability-map binarisation threshold
    box_threshold: float = 0.5  # minimum mean probability inside a box
    unclip_ratio: float = 1.6  # how far boxes are grown (DB shrinks text regions in training)
    dilate: bool = True  # 2x2 dilation of the binary map (joins broken strokes)
    max_candidates: int = 1000
    min_size: float = 3.0  # boxes with a side shorter than this (probability-map pixels) are noise
    cls_threshold: float = 0.9  # a line is turned when the 180-degree score exceeds this
    cls_size: tuple[int, int] = (48, 192)  # classifier input (height, width)
    cls_batch_size: int = 16
    rec_height: int = 48
    rec_min_width: int = 320  # PP-OCR pads every recognition batch to at least 320 px wide
    rec_batch_size: int = 6  # RapidOCR's rec_batch_num
    # how crops are grouped for recognition (see ocr_rec.plan_batches): "padded" reproduces RapidOCR's
    # text exactly; "single" and "buckets" pad less (faster) but can read a character differently
    rec_batching: str = "padded"
    rec_max_padding: float = 0.15  # "buckets": largest padded share of a batch
    # crops per recognizer call. A batch's padded width is already fixed, and samples do not interact, so this
    # changes speed only (identical text): ORT on CPU runs 13 lines ~1.5x faster one at a time than in
    # padded batches of 6 (benchmarks/ocr.py); raise it for GPU backends, where batching pays
    rec_infer_batch: int = 1
    rec_chars: str | None = None  # dictionary file overriding the rec model's 'character' metadata
    text_score: float = 0.5  # lines whose recognition score is lower are dropped

    def __post_init__(self) -> None:
        if self.rec_batching not in REC_BATCHING:
            raise SpecError(f"OcrConfig.rec_batching must be one of {', '.join(map(repr, REC_BATCHING))}, got {self.rec_batching!r}")
        if self.limit_type not in ("min", "max"):
            raise SpecError(f"OcrConfig.limit_type must be 'min' or 'max', got {self.limit_type!r}")
        for name in ("limit_side", "max_side", "rec_height", "rec_min_width", "rec_batch_size", "rec_infer_batch", "cls_batch_size"):
            if getattr(self, name) < 1:
                raise SpecError(f"OcrConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("det_threshold", "box_threshold", "rec_max_padding", "cls_threshold", "text_score"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise SpecError(f"OcrConfig.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.unclip_ratio <= 0:
            raise SpecError(f"OcrConfig.unclip_ratio must be > 0, got {self.unclip_ratio}")


@dataclass(frozen=True)
class OcrLine:
    """One text line: its text, recognition score (mean CTC probability) and 4-point box
    (top-left, top-right, bottom-right, bottom-left; original-image pixels)."""

    text: str
    score: float
    box: tuple[tuple[float, float], ...]
    rotated: bool = False  # the direction classifier turned this line by 180 degrees

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "score": round(self.score, 4), "box": [list(p) for p in self.box], "rotated": self.rotated}


@dataclass(frozen=True)
class OcrResult:
    """The lines read from one image, in reading order (top to bottom, left to right)."""

    lines: tuple[OcrLine, ...]
    columns: ClassVar[tuple[str, ...]] = ("#", "text", "score", "box")

    @property
    def text(self) -> str:
        return "\n".join(line.text for line in self.lines)

    def __len__(self) -> int:
        return len(self.lines)

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "lines": [line.to_json() for line in self.lines]}

    def rows(self) -> list[list[str]]:
        return [
            [str(i), line.text, f"{line.score:.3f}", " ".join(f"{x:.0f},{y:.0f}" for x, y in line.box)]
            for i, line in enumerate(self.lines)
        ]

    def draw(self, image: np.ndarray) -> np.ndarray:
        """Boxes and their text. cv2's font is ASCII only: other characters are drawn as '?'."""
        from .draw import draw_polygons

        return draw_polygons(image, [np.asarray(line.box) for line in self.lines], labels=[line.text for line in self.lines])


class OcrPipeline:
    """Read text: ``pipeline(image) -> OcrResult``.

    ``det``, ``rec`` and optional ``cls`` are open Backends (the caller keeps
    ownership) whose layouts are checked up front: det ``[N,1,H,W]``, rec
    ``[N,T,C]`` with a character list, cls ``[N,2]``.
    """

    name: ClassVar[str] = "ocr"
    config_type: ClassVar[type] = OcrConfig

    def __init__(self, det: Any, rec: Any, cls: Any | None = None, *, config: OcrConfig | None = None) -> None:
        from .ocr_det import TextDetector
        from .ocr_rec import TextClassifier, TextRecognizer

        self.config = config if config is not None else OcrConfig()
        self.detector = TextDetector(det, config=self.config)
        self.recognizer = TextRecognizer(rec, config=self.config)
        self.classifier = TextClassifier(cls, config=self.config) if cls is not None else None
        self._owned: tuple[Any, ...] = ()
        self._closed = False

    @classmethod
    def from_paths(
        klass,  # not `cls`: that name is the classifier model, as in __init__
        det: str | os.PathLike[str],
        rec: str | os.PathLike[str],
        cls: str | os.PathLike[str] | None = None,
        *,
        runtime: RuntimeConfig | None = None,
        config: OcrConfig | None = None,
        backend: str = "auto",
    ) -> "OcrPipeline":
        """Open the models with :func:`trtkit.load`; the pipeline owns and closes them."""
        from ..backends import load

        opened: list[Any] = []
        try:
            for path in (det, rec, cls):
                opened.append(load(path, backend=backend, config=runtime or RuntimeConfig()) if path is not None else None)
            pipeline = klass(opened[0], opened[1], opened[2], config=config)
        except BaseException:
            for b in opened:
                if b is not None:
                    b.close()
            raise
        pipeline._owned = tuple(b for b in opened if b is not None)
        return pipeline

    # ------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Close the backends this pipeline opened (``from_paths``); idempotent."""
        if not self._closed:
            self._closed = True
            for b in self._owned:
                b.close()

    def __enter__(self) -> "OcrPipeline":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ running
    def __call__(self, image: ImageInput) -> OcrResult:
        from ._image import as_rgb
        from .ocr_det import crop_line

        if self._closed:
            raise TaskError("OcrPipeline was used after close(); create a new one")
        rgb = as_rgb(image)
        boxes = self.detector(rgb)
        crops = [crop_line(rgb, box) for box in boxes]
        flipped = [False] * len(crops)
        if self.classifier is not None and crops:
            crops, flipped = self.classifier.orient(crops)
        read = self.recognizer.recognize(crops) if crops else []
        lines = tuple(
            OcrLine(text, score, tuple((float(x), float(y)) for x, y in box), rotated)
            for (text, score), box, rotated in zip(read, boxes, flipped)
            if score >= self.config.text_score and text
        )
        return OcrResult(lines)

    def predict_batch(self, images: Iterable[ImageInput], *, batch_size: int = 1) -> list[OcrResult]:
        """Read many images one by one (each image's lines are already batched through the recognizer)."""
        if batch_size < 1:
            raise TaskError(f"predict_batch(batch_size={batch_size}): batch_size must be >= 1")
        return [self(image) for image in images]


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions), one DP row at a time.

    Hand-written on purpose: ten lines on short OCR texts do not justify a dependency.
    """
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def character_error_rate(lines: Sequence[str], reference: Sequence[str]) -> float:
    """CER of ``lines`` against ``reference``, each joined with newlines, so missed, split, merged
    or reordered lines count as errors too."""
    ref = "\n".join(reference)
    return edit_distance("\n".join(lines), ref) / max(len(ref), 1)
