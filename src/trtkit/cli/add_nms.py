"""``trtkit add-nms``: append decoding + NMS to a detector or face-detector ONNX model.

The output model gives ``num_detections``, ``nmsed_boxes``, ``nmsed_scores``,
``nmsed_classes`` (and ``nmsed_landmarks`` for faces), padded to ``--max-det``.
``--target`` says where it will run; TensorRT-RTX is refused up front (it cannot
build NMS graphs), with the alternatives.
"""

from __future__ import annotations

import argparse
from typing import Any

def register(subparsers: Any) -> None:
    from ..graph.nms import NAME_PRESETS, TARGETS
    from ..tasks.layouts import layout_names

    p = subparsers.add_parser(
        "add-nms",
        help="append box decoding + NMS to a YOLO/YOLOX/SCRFD/RetinaFace ONNX model",
        description="Append decoding and NMS so the model outputs num_detections/nmsed_boxes/nmsed_scores/"
        "nmsed_classes (+ nmsed_landmarks for faces), padded to --max-det. The graph is written for --target: "
        "onnxruntime (ONNX NonMaxSuppression; full TensorRT >= 8.5 imports it too) or tensorrt (EfficientNMS_TRT "
        "plugin for detection). TensorRT-RTX cannot build NMS graphs: for RTX, build the raw model and let "
        "`trtkit predict` do NMS on the host.",
    )
    p.add_argument("model", metavar="DETECTOR.onnx")
    p.add_argument("-o", "--output", required=True, metavar="OUT.onnx", help="where to write the new model")
    p.add_argument("--task", choices=("detect", "face"), default="detect", help="object detector or face detector")
    p.add_argument(
        "--layout",
        default="auto",
        metavar="NAME",
        help=f"output layout (default auto). detect: {', '.join(layout_names('detect', with_aliases=True)[1:])}; "
        f"face: {', '.join(layout_names('face')[1:])}",
    )
    p.add_argument("--max-det", type=int, default=200, help="detections kept per image (output padding)")
    p.add_argument("--iou", type=float, help="NMS IoU threshold (detect 0.45, face 0.4); recorded in the model's metadata")
    p.add_argument("--conf", type=float, help="score threshold (detect 0.25, face 0.5); recorded in the model's metadata")
    p.add_argument(
        "--target",
        choices=TARGETS,
        default="auto",
        help="where the graph runs (default: tensorrt when full TensorRT is installed, else onnxruntime); "
        "tensorrt-rtx is refused with the alternatives",
    )
    p.add_argument(
        "--efficient-nms",
        action="store_true",
        default=None,
        help="force TensorRT's EfficientNMS_TRT plugin node (full TensorRT only; default for --target tensorrt --task detect)",
    )
    p.add_argument("--names", choices=tuple(NAME_PRESETS), default="tutorial",
                   help="output names: tutorial (num_detections, nmsed_*) or trt (detection_*)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..graph.nms import AddNmsConfig, add_nms, describe_result

    config = AddNmsConfig(
        task=args.task,
        layout=args.layout,
        max_det=args.max_det,
        iou=args.iou,
        conf=args.conf,
        target=args.target,
        efficient_nms=args.efficient_nms,
        names=args.names,
    )
    out = add_nms(args.model, args.output, config=config)
    print(f"wrote {out} (conf {config.conf}, iou {config.iou}, max {config.max_det} detections; recorded in its metadata)")
    print(describe_result(config))
    return 0
