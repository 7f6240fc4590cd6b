"""`trtkit run MODEL`: run a model once on given or generated inputs and summarise the outputs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import SpecError
from ..measure.run import RunConfig, SourceConfig, check_save_path, run_model
from ._args import add_runtime_args, add_shape_args, print_input_notes, runtime_from_args, shapes_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "run",
        help="run a model once (ONNX Runtime or TensorRT) and summarise its outputs",
        description="Run MODEL once. Inputs missing from --input are generated (seeded, Polygraphy-like: "
        "floats in [0,1), ints in [0,25)). Prints each input and output: dtype, shape, min/max/mean, NaN/Inf counts.",
    )
    p.add_argument("model", help="model file: .onnx, or an engine (.plan/.engine/.trt)")
    p.add_argument(
        "--input", action="append", default=[], metavar="NAME=FILE",
        help="input data: NAME=FILE.npy, NAME=FILE.npz, or FILE.npz whose keys are input names (repeatable)",
    )
    add_shape_args(p, ranges=False)
    p.add_argument("--seed", type=int, default=0, help="seed for generated inputs (default 0)")
    p.add_argument("--save", metavar="OUT.npz", help="write the outputs to an .npz (keys = output names)")
    p.add_argument("--json", action="store_true", help="print a JSON report instead of tables")
    add_runtime_args(p)
    p.set_defaults(run=main)


def main(args: argparse.Namespace) -> int:
    from ..graph.quantize import IMAGE_SUFFIXES

    if Path(args.model).suffix.lower() in IMAGE_SUFFIXES and args.backend == "auto":
        raise SpecError(
            f"{args.model!r} is an image, but `trtkit run` takes a model (.onnx or a TensorRT engine) and feeds it "
            "arrays (--input NAME=FILE.npy, or generated ones). To run a model on an image, use "
            "`trtkit predict --task TASK MODEL IMAGE`"
        )
    if args.save:
        check_save_path(args.save)  # before running anything
    _, runtime = runtime_from_args(args)
    config = RunConfig(
        source=SourceConfig(backend=args.backend, runtime=runtime),
        input_files=tuple(args.input),
        shapes=shapes_from_args(args),
        seed=args.seed,
    )
    result = run_model(args.model, config=config)
    print_input_notes(result)
    if args.save:
        result.save(args.save)
    if args.json:
        print(json.dumps({**result.to_json(), "saved": args.save}, indent=2))
    else:
        print(result.render())
        if args.save:
            print(f"saved outputs to {args.save}")
    return 0
