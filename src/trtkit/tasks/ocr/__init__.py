"""PP-OCR: text detection (DB) -> optional 0/180 direction classifier -> CTC recognition.

``pipeline`` composes the stages (``det``, ``rec``), all configured by ``config.OcrConfig``.
"""

from .config import OcrConfig
from .pipeline import OcrLine, OcrPipeline, OcrResult, character_error_rate, edit_distance

__all__ = ["OcrConfig", "OcrLine", "OcrPipeline", "OcrResult", "character_error_rate", "edit_distance"]
