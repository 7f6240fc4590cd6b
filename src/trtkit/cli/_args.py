"""Argument and output helpers shared by several commands (shape flags, backend choice, input notes)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import SpecError
from ..spec import RuntimeConfig, ShapeProfile, format_shapes, parse_shapes

__all__ = [
    "OnceAction",
    "add_shape_args",
    "reject_repeated",
    "profile_from_args",
    "shapes_from_args",
    "add_runtime_args",
    "add_fuse_arg",
    "print_input_notes",
    "runtime_from_args",
]

_REPEATS = "_repeated_flags"


class OnceAction(argparse.Action):
    """A flag that may be given once: argparse's default keeps the last value and drops the others silently.

    The repeat is recorded, not raised here, so that it is reported as a clean
    ``error: ...`` (exit 1) by :func:`reject_repeated` rather than as a usage
    error in the middle of parsing.
    """

    def __call__(self, parser: Any, ns: argparse.Namespace, values: Any, option_string: Any = None) -> None:
        first = getattr(ns, self.dest, None)
        if first is not None:
            flag = option_string or self.option_strings[0]
            repeats = getattr(ns, _REPEATS, None) or []
            setattr(ns, _REPEATS, repeats + [(flag, str(first), str(values))])
            return
        setattr(ns, self.dest, values)


def reject_repeated(args: argparse.Namespace) -> None:
    """Raise SpecError when a once-only flag (see :class:`OnceAction`) was given more than once."""
    repeats = getattr(args, _REPEATS, None)
    if not repeats:
        return
    flag, first, second = repeats[0]
    joined = f"{first},{second}" if flag.lower().endswith("shapes") else first
    raise SpecError(
        f"{flag} is given more than once ({first!r} and {second!r}); only one would be used. "
        f"Give it once, listing every input in it, e.g. {flag} {joined}"
    )


def add_shape_args(parser: argparse.ArgumentParser, *, ranges: bool = True) -> None:
    parser.add_argument(
        "--shapes",
        action=OnceAction,
        metavar="SPEC",
        help="concrete input shapes in trtexec syntax, e.g. input.1:1x3x640x640,other:1x4 "
        "(quote names with commas: 'a,b':1x3)",
    )
    if ranges:
        for flag in ("minShapes", "optShapes", "maxShapes"):
            parser.add_argument(f"--{flag}", action=OnceAction, metavar="SPEC", help=f"{flag[:3]} shapes of an optimization profile (trtexec syntax)")


def shapes_from_args(args: argparse.Namespace) -> dict[str, tuple[int, ...]] | None:
    """--shapes parsed; None when absent. ``--shapes ""`` is an empty spec and raises, not "no shapes"."""
    reject_repeated(args)
    text = getattr(args, "shapes", None)
    return None if text is None else parse_shapes(text)


def profile_from_args(args: argparse.Namespace) -> ShapeProfile | None:
    """--shapes, or --minShapes/--optShapes/--maxShapes; both at once is a conflict."""
    reject_repeated(args)
    ranges = [getattr(args, f, None) for f in ("minShapes", "optShapes", "maxShapes")]
    given = [r is not None for r in ranges]
    if args.shapes is not None and any(given):
        raise SpecError("--shapes and --minShapes/--optShapes/--maxShapes conflict; use --shapes for a fixed shape or the three range flags")
    if args.shapes is not None:
        return ShapeProfile.fixed(parse_shapes(args.shapes))
    if any(given):
        lo, mid, hi = (parse_shapes(r) if r is not None else {} for r in ranges)
        return ShapeProfile.from_shapes(min=lo, opt=mid, max=hi)
    return None


def add_runtime_args(parser: argparse.ArgumentParser) -> None:
    from ..backends import backend_choices, backend_help

    parser.add_argument("--backend", default="auto", choices=backend_choices(), help=backend_help())
    parser.add_argument("--threads", type=int, default=None, help="intra-op CPU threads (ONNX Runtime)")
    add_fuse_arg(parser)
    parser.add_argument("--plugins", action="append", default=[], metavar="LIB.so", help="TensorRT plugin library (repeatable)")


def add_fuse_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-fuse", dest="fuse", action="store_false",
        help="ONNX Runtime: run the graph as written, without trtkit's exact conv/affine/hard-swish fusions",
    )


def runtime_from_args(args: argparse.Namespace) -> tuple[str, RuntimeConfig]:
    """Map --backend to (backend for trtkit.load, RuntimeConfig on the device that backend runs on)."""
    from ..backends import runtime_for

    return runtime_for(args.backend, base=RuntimeConfig(threads=args.threads, plugins=tuple(args.plugins), fuse=args.fuse))


def print_input_notes(result: Any) -> None:
    """On stderr: the warnings of a run or compare result, and the shapes it chose for unset dynamic dims."""
    for message in result.warnings:
        print(f"warning: {message}", file=sys.stderr)
    if result.defaulted:
        used = format_shapes({n: result.inputs[n].shape for n in result.defaulted})
        print(f"using shape {used} (dynamic dims not given: batch set to 1, named dims shared with given inputs; choose with --shapes)", file=sys.stderr)
