"""``trtkit export SOURCE -o model.onnx --input NAME:SHAPE[,...]``: PyTorch -> ONNX with a parity check."""

from __future__ import annotations

import argparse

from ..errors import SpecError
from ..spec import parse_axes, parse_shapes


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a PyTorch model to ONNX, checked against PyTorch with ONNX Runtime",
        description="Export a PyTorch nn.Module to ONNX. SOURCE is FILE.py:NAME or package.module:NAME, where NAME "
        "is a module instance, a class or a zero-argument factory. The ONNX file is written only after "
        "onnx.checker passes and ONNX Runtime matches PyTorch on seeded random inputs (at a second shape too "
        "when axes are dynamic).",
    )
    parser.add_argument("source", help="FILE.py:NAME or package.module:NAME returning a torch.nn.Module")
    parser.add_argument("-o", "--output", required=True, help="output .onnx file (written atomically)")
    parser.add_argument(
        "--input", required=True, metavar="SPEC",
        help="forward() arguments in order with their export shapes, trtexec syntax: images:1x3x224x224[,mask:1x224x224]",
    )
    parser.add_argument(
        "--input-dtype", action="append", default=[], metavar="NAME:DTYPE",
        help="numpy dtype of one input (repeatable; default float32), e.g. ids:int64, mask:bool, x:float16",
    )
    parser.add_argument("--weights", help="state_dict file (or checkpoint with 'state_dict'/'model'), loaded strictly")
    parser.add_argument("--dynamic-batch", action="store_true", help="make axis 0 of every input (and output) dynamic")
    parser.add_argument(
        "--dynamic", action="append", default=[], metavar="NAME:AXES",
        help="make these axes of one input dynamic, e.g. images:0,2,3 (repeatable)",
    )
    parser.add_argument("--opset", type=int, help="ONNX opset (default 17)")
    parser.add_argument("--output-names", metavar="A,B", help="names of forward()'s outputs, comma-separated")
    parser.add_argument("--simplify", action="store_true", help="simplify the graph with onnxslim before the check")
    parser.add_argument(
        "--exporter", choices=["torchscript", "dynamo"], default="torchscript",
        help="torch.onnx exporter: torchscript (default: fast, exact --opset) or dynamo (torch.export-based, opset >= 18)",
    )
    parser.add_argument("--atol", type=float, default=1e-4, help="parity absolute tolerance (default 1e-4)")
    parser.add_argument("--rtol", type=float, default=1e-3, help="parity relative tolerance (default 1e-3)")
    parser.set_defaults(run=run)


def _dtype_item(text: str) -> tuple[str, str]:
    name, sep, dtype = text.rpartition(":")
    if not sep or not name or not dtype:
        raise SpecError(f"--input-dtype {text!r}: expected NAME:DTYPE, e.g. ids:int64")
    return name, dtype


def run(args: argparse.Namespace) -> int:
    from ..graph.export import ExportConfig, export

    names = tuple(n.strip() for n in args.output_names.split(",")) if args.output_names else ()
    if any(not n for n in names):
        raise SpecError(f"--output-names {args.output_names!r} has an empty name; give comma-separated names, e.g. boxes,scores")
    config = ExportConfig(
        inputs=tuple(parse_shapes(args.input).items()),
        input_dtypes=tuple(_dtype_item(t) for t in args.input_dtype),
        dynamic_batch=args.dynamic_batch,
        dynamic=tuple(parse_axes(d) for d in args.dynamic),
        opset=args.opset,
        output_names=names,
        simplify=args.simplify,
        exporter=args.exporter,
        weights=args.weights,
        atol=args.atol,
        rtol=args.rtol,
    )
    print(export(args.source, args.output, config=config).render())
    return 0
