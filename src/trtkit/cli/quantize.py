"""``trtkit quantize``: make an INT8 Q/DQ ONNX model for TensorRT's explicit quantization."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import SpecError


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "quantize",
        help="INT8 Q/DQ ONNX model from calibration data (for --int8 builds)",
        description="Calibrate an FP32 ONNX model with ONNX Runtime and write an INT8 Q/DQ model "
        "(symmetric, per-channel weights) that TensorRT 10/11 and TensorRT-RTX build with --int8.",
        epilog="Images are preprocessed as: RGB (or --bgr), bilinear resize to the input H x W (no letterbox), "
        "/255, (x - mean) / std, NCHW. If your model needs anything else, save preprocessed arrays: "
        "numpy.savez('calib.npz', **{input_name: batch_stack}) and pass --calib calib.npz.",
    )
    p.add_argument("model", help="FP32 ONNX model")
    p.add_argument("--calib", required=True, metavar="DIR|NPZ", help=".npz file, or a directory of .npz/.npy/image files")
    p.add_argument("-o", "--output", metavar="OUT.onnx", help="output path (default: MODEL.qdq.onnx)")
    p.add_argument("--method", default="minmax", choices=["minmax", "entropy", "percentile"],
                   help="calibration: minmax (activation min/max), entropy (TensorRT's KL-divergence threshold), "
                        "percentile (99.999th percentile of |x|); default minmax")
    p.add_argument("--per-tensor", action="store_true", help="one scale per weight tensor instead of per channel")
    p.add_argument("--max-samples", type=int, default=256, metavar="N", help="calibration batches used at most (besides those held back)")
    p.add_argument("--image-size", metavar="HxW", help="image size when the model's H/W are dynamic, e.g. 640x640")
    p.add_argument("--mean", metavar="R,G,B", help="per-channel mean subtracted after /255 (default 0,0,0)")
    p.add_argument("--std", metavar="R,G,B", help="per-channel std divided after the mean (default 1,1,1)")
    p.add_argument("--bgr", action="store_true", help="feed images as BGR")
    from ..tasks.preprocess import CLASSIFY_PRESETS

    p.add_argument("--preset", choices=list(CLASSIFY_PRESETS),
                   help="image preprocessing preset, as in predict --task classify (instead of --mean/--std/--bgr)")
    p.add_argument("--holdout", type=int, metavar="N",
                   help="calibration samples held back to measure accuracy against the FP32 model "
                        "(default: a fifth, at most 32; 0: no check)")
    p.set_defaults(run=run)


def _triple(text: str | None, flag: str, default: tuple[float, float, float]) -> tuple[float, float, float]:
    if text is None:
        return default
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        vals = ()
    if len(vals) != 3:
        raise SpecError(f"{flag} {text!r}: expected three comma-separated numbers, e.g. 0.485,0.456,0.406")
    return vals  # type: ignore[return-value]


def _size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise SpecError(f"--image-size {text!r}: expected HxW, e.g. 640x640")
    return int(parts[0]), int(parts[1])


def run(args: argparse.Namespace) -> int:
    from ..graph.quantize import QuantizeConfig, quantize

    config = QuantizeConfig(
        calib=args.calib,
        method=args.method,
        per_channel=not args.per_tensor,
        max_samples=args.max_samples,
        image_size=_size(args.image_size),
        mean=_triple(args.mean, "--mean", (0.0, 0.0, 0.0)),
        std=_triple(args.std, "--std", (1.0, 1.0, 1.0)),
        bgr=args.bgr,
        preset=args.preset,
        holdout=args.holdout,
    )
    output = args.output or str(Path(args.model).with_suffix(".qdq.onnx"))
    print(quantize(args.model, output, config=config).summary())
    return 0
