"""The only imports of trtkit *internal* modules in :mod:`trtkit.serve`.

Everything else in this package uses the public API (``trtkit.load``, the task
classes, ``TensorSpec``, ``trtkit.errors``). These few facts have no public API
yet: an engine's sidecar (I/O tensors and profiles, written by ``trtkit
build``), the metadata stored in front of an Ultralytics engine, and the OCR
line crop. When those modules move, repoint the imports here and nowhere else.
"""

from __future__ import annotations

import os
from typing import Any


def engine_sidecar(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The verified sidecar of an engine (None when missing or stale)."""
    from ..engine_info import read_sidecar

    return read_sidecar(path)


def engine_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """Metadata stored in the engine file itself (Ultralytics engines), as strings."""
    from ..engine_file import read_engine_file

    meta = read_engine_file(path).metadata or {}
    return {str(k): v if isinstance(v, str) else repr(v) for k, v in meta.items()}


def ocr_crop_line() -> Any:
    """``crop_line(image, box)`` of the OCR pipeline (perspective crop of one text box)."""
    from ..tasks.ocr_det import crop_line

    return crop_line
