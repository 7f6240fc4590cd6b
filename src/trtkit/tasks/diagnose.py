"""Never silent: say which layout and preprocessing a run used, and explain a run that found nothing.

When detection or face results are empty, :func:`explain_empty` reports the highest score the model
gave (and the threshold it missed). When that score is far below the threshold — what a trained
detector shows when it is fed pixels prepared differently from its training — it re-runs the first
image with the preprocessing of every other layout (and with the channel order swapped) and names the
flags of the one that scores higher, with the score it reached. This costs a few extra inferences, and
only on a run that found nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["describe_task", "explain_empty", "preprocessing_trials"]

MISMATCH_RATIO = 0.5  # a top score under half the threshold: worth trying other preprocessing


def describe_task(task: Any) -> str:
    """The task's own one-line description (layout, preprocessing, thresholds), or its name."""
    describe = getattr(task, "describe", None)
    return describe() if callable(describe) else f"{getattr(task, 'name', type(task).__name__)}: preprocessing from the models"


def preprocessing_trials(task: Any) -> list[Any]:
    """Complete preprocessings worth trying instead of the task's: every layout's defaults for this task
    and the current one with the channel order swapped, without duplicates or the current one."""
    import dataclasses

    from .layouts import get_layout, layout_names

    current = task.preprocessing
    keep = ("scale", "mean", "std", "bgr", "pad")
    seen = {tuple(getattr(current, k) for k in keep)}
    trials = []
    candidates = [dataclasses.replace(current, bgr=not current.bgr)]
    for name in layout_names(task.name, with_aliases=False)[1:]:
        defaults = get_layout(task.name, name).preprocess
        candidates.append(dataclasses.replace(defaults, pad_value=defaults.pad_value, stride=current.stride))
    for p in candidates:
        key = tuple(getattr(p, k) for k in keep)
        if key not in seen:
            seen.add(key)
            trials.append(p)
    return trials


def _image(source: Any) -> np.ndarray | None:
    from ._image import as_rgb

    if isinstance(source, np.ndarray):
        return as_rgb(source)
    if isinstance(source, (str, Path)) and Path(source).is_file():
        return as_rgb(source)
    return None


# A trial whose boxes are this many, or whose best score is saturated, is input the model was never meant to
# see (e.g. raw 0-255 pixels into a 0-1 model), not a better preprocessing: it is never suggested.
IMPLAUSIBLE_BOXES = 100
SATURATED_SCORE = 0.999


def _plausible(result: Any) -> bool:
    top = result.top_score if result.top_score is not None else 0.0
    return len(result) <= IMPLAUSIBLE_BOXES and top < SATURATED_SCORE


def explain_empty(task: Any, results: Sequence[tuple[Any, Any]]) -> list[str]:
    """Lines explaining empty results; ``results`` holds (image path or array, Result) pairs.
    Empty when every result found something or the task has no score threshold (classify, ocr)."""
    empty = [(src, r) for src, r in results if hasattr(r, "top_score") and len(r) == 0]
    if not empty:
        return []
    conf = empty[0][1].conf
    lines = []
    seen = [(src, r.top_score) for src, r in empty if r.top_score is not None]
    name = "faces" if task.name == "face" else "detections"
    where = f"{len(empty)} of {len(results)} image(s)"
    if not seen:
        lines.append(f"no {name} in {where}: the model returned no boxes at all (threshold --conf {conf:g})")
        return lines
    best_src, best = max(seen, key=lambda item: item[1])
    shown = best_src if isinstance(best_src, str) else "an image"
    lines.append(f"no {name} in {where}: the highest score seen was {best:.4f} ({shown}), below the threshold --conf {conf:g}")
    if len(empty) < len(results) or best >= conf * MISMATCH_RATIO:
        if best >= conf * MISMATCH_RATIO:
            lines.append(f"scores are close to the threshold: a lower --conf (e.g. {best * 0.9:.2f}) would keep them")
        return lines
    image = _image(best_src)
    if image is None or getattr(task, "layout", None) is None:
        return lines
    tried, trials = [], preprocessing_trials(task)
    for preprocess in trials:
        with task.with_preprocess(preprocess) as other:
            result = other(image)
        if _plausible(result):
            tried.append((result.top_score if result.top_score is not None else 0.0, preprocess))
    better = sorted((t for t in tried if t[0] > max(best * 2, conf * MISMATCH_RATIO)), key=lambda t: -t[0])
    if better:
        score, preprocess = better[0]
        lines.append(
            f"this can be a preprocessing mismatch (or an image with nothing this model detects): with "
            f"`{preprocess.flags(relative_to=task.preprocessing)}` the highest score on {shown} is {score:.4f} "
            f"(now {task.preprocessing.describe()}; with {preprocess.describe()}). Check which preprocessing the "
            "model was trained with, and pass those flags only if it is that one"
        )
    else:
        lines.append(
            f"other preprocessings ({len(trials)} tried: every layout's defaults, and RGB/BGR swapped; "
            f"{len(trials) - len(tried)} gave saturated or hundreds of boxes) score no higher, "
            "so the preprocessing is probably right and the image holds nothing this model detects"
        )
    return lines
