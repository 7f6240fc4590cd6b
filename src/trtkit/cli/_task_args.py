"""``trtkit predict`` flags for the output layout and the preprocessing (detect/face/classify).

Every flag overrides one field of the layout's (or classification preset's) own preprocessing; a flag
left out keeps that default. ``predict`` registers them with :func:`add_task_args` and turns them
into config fields with :func:`task_config_fields`, which also refuses flags that do not apply to the
chosen task.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import SpecError

__all__ = ["add_task_args", "task_config_fields"]

_FLAGS = ("layout", "preset", "scale", "mean", "std", "bgr", "pad")
_APPLIES = {
    "detect": {"layout", "scale", "mean", "std", "bgr", "pad"},
    "face": {"layout", "scale", "mean", "std", "bgr", "pad"},
    "classify": {"preset", "scale", "mean", "std", "bgr"},
    "ocr": set(),
}


def add_task_args(parser: argparse.ArgumentParser) -> None:
    from ..tasks.layouts import layout_names
    from ..tasks.preprocess import CLASSIFY_PRESETS, PAD_CHOICES

    g = parser.add_argument_group(
        "layout and preprocessing (default: the layout's or preset's own; each flag overrides one setting)"
    )
    g.add_argument(
        "--layout",
        metavar="NAME",
        help=f"output layout, default auto-detected. detect: {', '.join(layout_names('detect')[1:])}; "
        f"face: {', '.join(layout_names('face')[1:])}",
    )
    g.add_argument("--preset", choices=tuple(CLASSIFY_PRESETS), help="classify: normalisation preset (default imagenet)")
    g.add_argument("--scale", metavar="S", help="multiply pixels (0..255) by S first, e.g. 1/255 or 1")
    g.add_argument("--mean", metavar="M", help="then subtract M: one number or three per tensor channel, e.g. 0.485,0.456,0.406")
    g.add_argument("--std", metavar="S", help="then divide by S: one number or three per tensor channel")
    order = g.add_mutually_exclusive_group()
    order.add_argument("--bgr", dest="bgr", action="store_const", const=True, help="feed channels in B,G,R order")
    order.add_argument("--rgb", dest="bgr", action="store_const", const=False, help="feed channels in R,G,B order")
    g.add_argument("--pad", choices=PAD_CHOICES, help="detect/face letterbox: pad around the image (center) or bottom/right (corner)")


def _numbers(flag: str, text: str) -> tuple[float, ...] | float:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise SpecError(f"{flag} takes one number or three separated by commas (e.g. {flag} 0.5 or {flag} 0.5,0.5,0.5), got {text!r}") from None
    if len(values) not in (1, 3):
        raise SpecError(f"{flag} takes one number or three (one per channel), got {len(values)}: {text!r}")
    return values[0] if len(values) == 1 else values


def task_config_fields(args: argparse.Namespace, task: str) -> dict[str, Any]:
    """Config fields (``layout``, ``preset``, ``preprocess``) from the flags; flags foreign to ``task`` raise."""
    from ..errors import TrtkitError
    from ..tasks.preprocess import Preprocess, parse_scale

    given = [f for f in _FLAGS if getattr(args, f, None) is not None]
    wrong = [f for f in given if f not in _APPLIES[task]]
    if wrong:
        allowed = ", ".join("--" + f for f in sorted(_APPLIES[task])) or "none of them"
        shown = ", ".join("--" + (f if f != "bgr" else ("bgr" if args.bgr else "rgb")) for f in wrong)
        raise SpecError(f"{shown} do(es) not apply to --task {task}; layout/preprocessing options for it: {allowed}")
    fields: dict[str, Any] = {}
    if args.layout is not None:
        fields["layout"] = args.layout
    if args.preset is not None:
        fields["preset"] = args.preset
    try:
        preprocess = Preprocess(
            scale=parse_scale(args.scale) if args.scale is not None else None,
            mean=_numbers("--mean", args.mean) if args.mean is not None else None,
            std=_numbers("--std", args.std) if args.std is not None else None,
            bgr=args.bgr,
            pad=args.pad,
        )
    except TrtkitError as exc:
        raise SpecError(str(exc)) from None
    if preprocess.given():
        fields["preprocess"] = preprocess
    return fields
