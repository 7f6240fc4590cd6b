"""`trtkit compare A B`: run two sources on the same inputs and check every output (Polygraphy-style)."""

from __future__ import annotations

import argparse
import dataclasses
import json

from ..measure.compare import AS_WRITTEN, CompareConfig, compare, parse_tolerances
from ..backends import backend_choices
from ..measure.run import SourceConfig
from ._args import add_shape_args, print_input_notes, shapes_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "compare",
        help="compare two models (ONNX, engine or PyTorch) output by output",
        description="Run A and B on the same inputs (from --input, or generated with --seed) and compare each "
        "output elementwise as Polygraphy does: an element fails when |A-B| > atol AND |A-B| > rtol*|B|; any NaN "
        "fails. B is the reference. A and B are .onnx files, engines, or PyTorch sources file.py:factory / "
        "pkg.mod:attr. Exit code 0 when every output matches, 1 otherwise.",
    )
    p.add_argument("a", metavar="A", help="model file or PyTorch source (file.py:factory)")
    p.add_argument("b", metavar="B", help="reference: model file or PyTorch source")
    p.add_argument(
        "--input", action="append", default=[], metavar="NAME=FILE",
        help="input data: NAME=FILE.npy, NAME=FILE.npz, or FILE.npz whose keys are input names (repeatable)",
    )
    add_shape_args(p, ranges=False)
    p.add_argument("--seed", type=int, default=0, help="seed for generated inputs (default 0)")
    for flag in ("atol", "rtol"):
        p.add_argument(
            f"--{flag}", action="append", default=[], metavar="[NAME:]VALUE",
            help=f"{'absolute' if flag == 'atol' else 'relative'} tolerance (default 1e-5); NAME:VALUE sets one output's (repeatable)",
        )
    choices = backend_choices()
    for side in ("a", "b"):
        p.add_argument(f"--backend-{side}", default="auto", choices=choices, help=f"runtime for {side.upper()} (default: by file extension)")
        p.add_argument(f"--weights-{side}", metavar="FILE", help=f"weights for PyTorch source {side.upper()} (state_dict or checkpoint)")
    p.add_argument("--threads", type=int, default=None, help="intra-op CPU threads (ONNX Runtime)")
    p.add_argument("--json", action="store_true", help="print a JSON report instead of the table")
    p.set_defaults(run=main)


def main(args: argparse.Namespace) -> int:
    atol, output_atol = parse_tolerances(args.atol, flag="--atol")
    rtol, output_rtol = parse_tolerances(args.rtol, flag="--rtol")
    runtime = dataclasses.replace(AS_WRITTEN, threads=args.threads)  # the library's default: graphs as written
    config = CompareConfig(
        a=SourceConfig(backend=args.backend_a, weights=args.weights_a, runtime=runtime),
        b=SourceConfig(backend=args.backend_b, weights=args.weights_b, runtime=runtime),
        atol=atol,
        rtol=rtol,
        output_atol=output_atol,
        output_rtol=output_rtol,
        input_files=tuple(args.input),
        shapes=shapes_from_args(args),
        seed=args.seed,
    )
    result = compare(args.a, args.b, config=config)
    print_input_notes(result)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(result.render())
        print(result.summary())
        if not result.passed:
            for hint in result.hints:
                print(f"hint: {hint}")
    return 0 if result.passed else 1
