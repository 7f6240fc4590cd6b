"""``trtkit inspect MODEL [--json]``: IO table, opsets, op histogram, build flags."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "inspect",
        help="show a model's inputs/outputs, opsets, ops, parameters and the flags to build it",
        description="Show an ONNX model's (or TensorRT engine's) inputs and outputs, opsets, producer, "
        "op histogram and parameter size, plus --minShapes/--optShapes/--maxShapes flags for its dynamic inputs.",
    )
    parser.add_argument("model", help="an .onnx file, or a TensorRT engine (.plan/.engine/.trt)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the report")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..graph.inspection import inspect_model

    info = inspect_model(args.model)
    print(json.dumps(info.to_json(), indent=2) if args.json else info.render())
    return 0
