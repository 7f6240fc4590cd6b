"""Task pipelines: image in, meaningful result out, on any backend.

A task is ``preprocess(image) -> (feeds, meta)`` and ``postprocess(outputs,
meta) -> Result``, written in NumPy and independent of the backend; ``__call__``
runs both around ``backend.infer``. A new task is one module plus one line in
``TASKS``.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..errors import SpecError

__all__ = ["TASKS", "task_class"]

TASKS: dict[str, str] = {
    "classify": "trtkit.tasks.classification:Classifier",
    "detect": "trtkit.tasks.detection:Detector",
    "face": "trtkit.tasks.face:FaceDetector",
    "ocr": "trtkit.tasks.ocr.pipeline:OcrPipeline",
}


def task_class(name: str) -> Any:
    if name not in TASKS:
        raise SpecError(f"unknown task {name!r}; choose one of: {', '.join(TASKS)}")
    module, _, attr = TASKS[name].partition(":")
    return getattr(importlib.import_module(module), attr)
