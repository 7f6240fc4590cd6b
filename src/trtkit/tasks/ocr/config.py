"""``OcrConfig``: the settings every OCR stage reads (detector size and thresholds, classifier, recognizer batching).

Its own module so the stages (``det``, ``rec``) and the pipeline import it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import SpecError

__all__ = ["OcrConfig", "REC_BATCHING"]

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
