"""``trtkit reshape MODEL -o OUT.onnx (--shapes SPEC | --dynamic-batch | --dynamic NAME:AXES ...)``."""

from __future__ import annotations

import argparse

from ..spec import parse_axes, parse_shapes
from ._args import OnceAction, reject_repeated


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "reshape",
        help="make an ONNX model's inputs static or dynamic (verified with ONNX Runtime)",
        description="Fix dynamic input dims (--shapes) or make static ones dynamic (--dynamic-batch, --dynamic). "
        "Shapes are re-inferred, safe constant rewrites are applied and listed, and the result is checked with "
        "ONNX Runtime against the original at a new shape before anything is written.",
    )
    parser.add_argument("model", help="input .onnx file")
    parser.add_argument("-o", "--output", required=True, help="output .onnx file (written atomically)")
    parser.add_argument("--shapes", action=OnceAction, metavar="SPEC", help="fix inputs to these shapes, trtexec syntax: x:1x3x640x640")
    parser.add_argument("--dynamic-batch", action="store_true", help="make axis 0 of every input dynamic")
    parser.add_argument(
        "--dynamic", action="append", default=[], metavar="NAME:AXES",
        help="make these axes of one input dynamic, e.g. images:0,2,3 (repeatable)",
    )
    parser.add_argument(
        "--check-shapes", action=OnceAction, metavar="SPEC",
        help="concrete shapes of the reshaped model for the ONNX Runtime check: sizes for dims that stay dynamic "
        "(default: 1 for axis 0, 64 for other dims), or another size for a freed axis to run it at too",
    )
    parser.add_argument("--atol", type=float, default=1e-4, help="absolute tolerance of the check (default 1e-4)")
    parser.add_argument("--rtol", type=float, default=1e-3, help="relative tolerance of the check (default 1e-3)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..graph.reshape import ReshapeConfig, reshape

    reject_repeated(args)
    config = ReshapeConfig(
        shapes=tuple(parse_shapes(args.shapes).items()) if args.shapes is not None else (),
        dynamic_batch=args.dynamic_batch,
        dynamic=tuple(parse_axes(d) for d in args.dynamic),
        check_shapes=tuple(parse_shapes(args.check_shapes).items()) if args.check_shapes is not None else (),
        atol=args.atol,
        rtol=args.rtol,
    )
    print(reshape(args.model, args.output, config=config).render())
    return 0
