"""Argument helpers shared by several commands (shape flags, backend choice)."""

from __future__ import annotations

import argparse

from ..errors import SpecError
from ..spec import RuntimeConfig, ShapeProfile, parse_shapes

__all__ = ["add_shape_args", "profile_from_args", "shapes_from_args", "add_runtime_args", "runtime_from_args"]


def add_shape_args(parser: argparse.ArgumentParser, *, ranges: bool = True) -> None:
    parser.add_argument(
        "--shapes",
        metavar="SPEC",
        help="concrete input shapes in trtexec syntax, e.g. input.1:1x3x640x640,other:1x4 "
        "(quote names with commas: 'a,b':1x3)",
    )
    if ranges:
        for flag in ("minShapes", "optShapes", "maxShapes"):
            parser.add_argument(f"--{flag}", metavar="SPEC", help=f"{flag[:3]} shapes of an optimization profile (trtexec syntax)")


def shapes_from_args(args: argparse.Namespace) -> dict[str, tuple[int, ...]] | None:
    return parse_shapes(args.shapes) if getattr(args, "shapes", None) else None


def profile_from_args(args: argparse.Namespace) -> ShapeProfile | None:
    """--shapes, or --minShapes/--optShapes/--maxShapes; both at once is a conflict."""
    ranges = [getattr(args, f, None) for f in ("minShapes", "optShapes", "maxShapes")]
    if args.shapes and any(ranges):
        raise SpecError("--shapes and --minShapes/--optShapes/--maxShapes conflict; use --shapes for a fixed shape or the three range flags")
    if args.shapes:
        return ShapeProfile.fixed(parse_shapes(args.shapes))
    if any(ranges):
        lo, mid, hi = (parse_shapes(r) if r else {} for r in ranges)
        return ShapeProfile.from_shapes(min=lo, opt=mid, max=hi)
    return None


def add_runtime_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend",
        default="auto",
        choices=["auto", "onnxruntime", "ort-cpu", "ort-cuda", "tensorrt"],
        help="runtime: auto (by file extension), onnxruntime/ort-cpu, ort-cuda, tensorrt",
    )
    parser.add_argument("--threads", type=int, default=None, help="intra-op CPU threads (ONNX Runtime)")
    parser.add_argument("--plugins", action="append", default=[], metavar="LIB.so", help="TensorRT plugin library (repeatable)")


def runtime_from_args(args: argparse.Namespace) -> tuple[str, RuntimeConfig]:
    """Map --backend to (registry name, RuntimeConfig)."""
    choice = args.backend
    device = "cuda" if choice in ("ort-cuda", "tensorrt") else "cpu"
    name = {"ort-cpu": "onnxruntime", "ort-cuda": "onnxruntime"}.get(choice, choice)
    return name, RuntimeConfig(device=device, threads=args.threads, plugins=tuple(args.plugins))
