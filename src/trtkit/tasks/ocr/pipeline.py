"""PP-OCR text reading: detection (DB) -> optional 0/180 classifier -> CTC recognition.

``OcrPipeline(det, rec, cls=None, config=OcrConfig())`` composes three
backends (ONNX Runtime, TensorRT, or a mix); ``OcrPipeline.from_paths(...)``
opens them itself and closes them with the pipeline. The defaults follow the
PP-OCRv4 ONNX pipeline (RapidOCR), see ``OcrConfig``. The stages live in
:mod:`trtkit.tasks.ocr.det` and :mod:`trtkit.tasks.ocr.rec`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, Iterator, Sequence

import numpy as np

from ...errors import TaskError
from ...spec import RuntimeConfig
from ..base import ImageInput
from .config import REC_BATCHING, OcrConfig

__all__ = ["OcrConfig", "OcrLine", "OcrResult", "OcrPipeline", "REC_BATCHING", "edit_distance", "character_error_rate"]

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
        """Numbered boxes on the image and their text in a side panel (readable on dense pages).
        cv2's font is ASCII only: other characters are drawn as '?'."""
        from ..draw import draw_text_panel

        return draw_text_panel(image, [np.asarray(line.box) for line in self.lines], [line.text for line in self.lines])


class OcrPipeline:
    """Read text: ``pipeline(image) -> OcrResult``.

    ``det``, ``rec`` and optional ``cls`` are open Backends (the caller keeps
    ownership) whose layouts are checked up front: det ``[N,1,H,W]``, rec
    ``[N,T,C]`` with a character list, cls ``[N,2]``.
    """

    name: ClassVar[str] = "ocr"
    config_type: ClassVar[type] = OcrConfig

    def __init__(self, det: Any, rec: Any, cls: Any | None = None, *, config: OcrConfig | None = None) -> None:
        from .det import TextDetector
        from .rec import TextClassifier, TextRecognizer

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
        from ...backends import load

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
        from .._image import as_rgb

        if self._closed:
            raise TaskError("OcrPipeline was used after close(); create a new one")
        rgb = as_rgb(image)
        return self.read_lines(rgb, self.detector(rgb))

    def read_lines(self, rgb: np.ndarray, boxes: Sequence[np.ndarray]) -> OcrResult:
        """The stages after detection: crop each detected box out of ``rgb`` (RGB uint8 HxWx3), turn
        it upright (direction classifier), recognize it. For callers that ran the detector elsewhere
        (the Triton ensemble runs it as its own step, then its postprocess calls this)."""
        from .det import crop_line

        if self._closed:
            raise TaskError("OcrPipeline was used after close(); create a new one")
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

    def stream(self, images: Iterable[ImageInput], *, batch_size: int = 1, workers: int | None = None, depth: int = 2, pool: str = "auto") -> Iterator[Any]:
        """Results in input order, several images read at once in worker threads (see
        :mod:`trtkit.tasks.streaming`); ``batch_size`` is accepted for the common signature."""
        from ..streaming import StreamOptions, stream_predictions

        options = StreamOptions(batch_size=batch_size, workers=workers, depth=depth, pool=pool)
        return (p.result for p in stream_predictions(self, images, options=options))


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
