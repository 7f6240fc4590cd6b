"""``trtkit add-nms``: append decoding + NMS to a YOLO or SCRFD ONNX model.

The output model gives ``num_detections``, ``nmsed_boxes``, ``nmsed_scores``,
``nmsed_classes`` (and ``nmsed_landmarks`` for faces), padded to ``--max-det``.
"""

from __future__ import annotations

import argparse
from typing import Any

_FACE_DEFAULTS = {"conf": 0.5, "iou": 0.4}  # InsightFace's SCRFD defaults
_DETECT_DEFAULTS = {"conf": 0.25, "iou": 0.45}  # Ultralytics' defaults


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "add-nms",
        help="append box decoding + NonMaxSuppression to a YOLO/SCRFD ONNX model",
        description="Append decoding and NMS so the model outputs num_detections/nmsed_boxes/nmsed_scores/"
        "nmsed_classes (+ nmsed_landmarks for faces), padded to --max-det. Runs in ONNX Runtime and TensorRT.",
    )
    p.add_argument("model", metavar="DETECTOR.onnx")
    p.add_argument("-o", "--output", required=True, metavar="OUT.onnx", help="where to write the new model")
    p.add_argument("--task", choices=("detect", "face"), default="detect", help="YOLO detector or SCRFD face detector")
    p.add_argument("--layout", choices=("auto", "yolov8", "yolov5"), default="auto", help="detect: YOLO output layout")
    p.add_argument("--max-det", type=int, default=200, help="detections kept per image (output padding)")
    p.add_argument("--iou", type=float, help="NMS IoU threshold (detect 0.45, face 0.4)")
    p.add_argument("--conf", type=float, help="score threshold (detect 0.25, face 0.5)")
    p.add_argument(
        "--efficient-nms",
        action="store_true",
        help="use TensorRT's EfficientNMS_TRT plugin node instead of ONNX NonMaxSuppression (TensorRT only)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import SpecError
    from ..graph.nms import AddNmsConfig, add_nms

    if args.task == "face" and args.layout != "auto":
        raise SpecError("--layout applies to --task detect only; drop it for --task face")
    defaults = _FACE_DEFAULTS if args.task == "face" else _DETECT_DEFAULTS
    config = AddNmsConfig(
        task=args.task,
        layout=args.layout,
        max_det=args.max_det,
        iou=args.iou if args.iou is not None else defaults["iou"],
        conf=args.conf if args.conf is not None else defaults["conf"],
        efficient_nms=args.efficient_nms,
    )
    out = add_nms(args.model, args.output, config=config)
    kind = "EfficientNMS_TRT (TensorRT only)" if args.efficient_nms else "ONNX NonMaxSuppression"
    print(f"wrote {out} ({kind}; conf {config.conf}, iou {config.iou}, max {config.max_det} detections)")
    return 0
