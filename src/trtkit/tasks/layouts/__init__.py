"""Output layouts of detection and face models: a registry, and picking one for a model.

A new layout is one module in this package (a :class:`~.base.Layout`
subclass instance named ``LAYOUT``, or per-task instances) plus one line in
``DETECT_LAYOUTS`` or ``FACE_LAYOUTS``. Auto-detection tries the layouts in
table order; the first whose ``bind`` accepts the outputs wins, so stricter
layouts come first (NMS outputs before raw heads, YOLOX before YOLOv5).
"""

from __future__ import annotations

import importlib
from typing import Any, Sequence

from ...errors import TaskError
from ...spec import TensorSpec

__all__ = ["DETECT_LAYOUTS", "FACE_LAYOUTS", "ALIASES", "layout_names", "get_layout", "resolve_layout"]

DETECT_LAYOUTS: dict[str, str] = {
    "efficient_nms": "trtkit.tasks.layouts.nms_outputs:DETECT",
    "onnx_nms": "trtkit.tasks.layouts.onnx_nms:LAYOUT",
    "yolov8": "trtkit.tasks.layouts.yolov8:LAYOUT",
    "yolox": "trtkit.tasks.layouts.yolox:LAYOUT",
    "yolov5": "trtkit.tasks.layouts.yolov5:LAYOUT",
}
FACE_LAYOUTS: dict[str, str] = {
    "efficient_nms": "trtkit.tasks.layouts.nms_outputs:FACE",
    "retinaface_mxnet": "trtkit.tasks.layouts.retinaface_mxnet:LAYOUT",
    "retinaface_torch": "trtkit.tasks.layouts.retinaface_torch:LAYOUT",
    "scrfd": "trtkit.tasks.layouts.scrfd:LAYOUT",
}
# other names users know the same layouts by
ALIASES: dict[str, str] = {"yolor": "yolov5", "yolov7": "yolov5", "yolov11": "yolov8", "nms": "efficient_nms"}

_TABLES = {"detect": DETECT_LAYOUTS, "face": FACE_LAYOUTS}


def layout_names(task: str, *, with_aliases: bool = True) -> tuple[str, ...]:
    table = _TABLES[task]
    aliases = tuple(a for a, target in ALIASES.items() if target in table) if with_aliases else ()
    return ("auto", *table, *aliases)


def get_layout(task: str, name: str) -> Any:
    table = _TABLES[task]
    key = ALIASES.get(name, name)
    if key not in table:
        raise TaskError(f"--task {task} has no layout {name!r} (--layout); choose one of {', '.join(layout_names(task))}")
    module, _, attr = table[key].partition(":")
    return getattr(importlib.import_module(module), attr)


def resolve_layout(
    task: str, name: str, outputs: Sequence[TensorSpec], size: tuple[int, int] | None, labels: Sequence[str],
    *, inputs_text: str = "",
) -> tuple[Any, Any]:
    """(layout, binding) for a model's outputs: the named layout (checked against the outputs) or the
    first in table order that fits. Raises TaskError saying what each layout expects and what was found."""
    from ..base import describe_outputs

    found = f"found {inputs_text}outputs {describe_outputs(outputs)}"
    if name != "auto":
        layout = get_layout(task, name)
        binding = layout.bind(outputs, size, labels, forced=True)
        if binding is None:
            fits = _fitting(task, outputs, size, labels)
            fix = (f"the outputs fit {' and '.join(fits)}: use --layout {fits[0]} or auto" if fits else
                   f"use another of {', '.join(layout_names(task, with_aliases=False)[1:])}, or check --task")
            raise TaskError(f"--layout {name}: expected {layout.expected(size)}; {found}; {fix}")
        return layout, binding
    for key in _TABLES[task]:
        layout = get_layout(task, key)
        binding = layout.bind(outputs, size, labels, forced=False)
        if binding is not None:
            return layout, binding
    options = "; ".join(f"{key}: {get_layout(task, key).expected(size)}" for key in _TABLES[task])
    other_task = "face" if task == "detect" else "detect"
    elsewhere = _fitting(other_task, outputs, size, labels)
    hint = (f"These look like {elsewhere[0]} outputs: use --task {other_task}" if elsewhere else
            f"Pick the task that matches the model (predict --task {'classify/face/ocr' if task == 'detect' else 'classify/detect/ocr'}; "
            "a classifier needs no add-nms) or name the layout with --layout")
    raise TaskError(f"model outputs do not match a {task} layout. Expected one of — {options}; {found}. {hint}")


def _fitting(task: str, outputs: Sequence[TensorSpec], size: tuple[int, int] | None, labels: Sequence[str]) -> list[str]:
    """Layouts of ``task`` whose auto-detection accepts these outputs."""
    return [key for key in _TABLES[task] if get_layout(task, key).bind(outputs, size, labels, forced=False) is not None]
