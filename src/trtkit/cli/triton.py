"""``trtkit triton MODEL... -o REPO``: write a Triton model repository (see trtkit.serve.repository)."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import SpecError


def add_repository_args(p: argparse.ArgumentParser, *, backend_default: str) -> None:
    """Flags shared by ``trtkit triton`` and ``trtkit serve MODEL``."""
    p.add_argument("--name", help="model name in the repository (default: the file's stem)")
    p.add_argument("--task", choices=("classify", "detect", "face", "ocr"),
                   help="write an ensemble: image bytes -> preprocess -> model -> postprocess -> tensors + JSON "
                   "(ocr: MODEL... = DET REC [CLS])")
    p.add_argument("--backend", default=backend_default, choices=("native", "python"),
                   help="native: tensorrt_plan / onnxruntime_onnx; python: trtkit runs the model in the Python backend "
                   f"(default {backend_default})")
    p.add_argument("--max-batch", type=int, help="max_batch_size (default: from the engine profiles; 8 for ONNX with a dynamic batch; 0 if static)")
    p.add_argument("--instances", type=int, default=1, help="instances per model (instance_group count)")
    p.add_argument("--max-queue-delay-us", type=int, help="dynamic batching: max queue delay in microseconds (default 100)")
    p.add_argument("--preferred-batch", metavar="N,...", help="dynamic batching: preferred batch sizes (default: from the profiles)")
    p.add_argument("--no-dynamic-batching", dest="dynamic_batching", action="store_false", help="write no dynamic_batching")
    p.add_argument("--no-warmup", dest="warmup", action="store_false", help="write no model_warmup")
    p.add_argument("--ort-tensorrt", action="store_true", help="onnxruntime_onnx: enable ONNX Runtime's TensorRT accelerator")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="python backend: run on the CPU (ORT) or CUDA (ORT-CUDA / TensorRT)")
    p.add_argument("--threads", type=int, help="python backend: ONNX Runtime intra-op threads per instance "
                   "(default ORT's: one per core; 1 on a CPU shared with Triton and its clients, see docs/deploy.md)")
    p.add_argument("--conf", type=float, help="detect/face: score threshold")
    p.add_argument("--iou", type=float, help="detect/face: NMS IoU threshold")
    p.add_argument("--top-k", type=int, help="classify: classes to report")
    p.add_argument("--labels", metavar="FILE", help="classify/detect: class names, one per line")


def options_from_args(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    from ..serve.config import TritonOptions

    preferred: tuple[int, ...] = ()
    if args.preferred_batch:
        try:
            preferred = tuple(int(v) for v in args.preferred_batch.split(","))
        except ValueError:
            raise SpecError(f"--preferred-batch {args.preferred_batch!r} must be comma-separated integers, e.g. 4,8") from None
    if not args.dynamic_batching and (preferred or args.max_queue_delay_us is not None):
        given = "--preferred-batch" if preferred else "--max-queue-delay-us"
        raise SpecError(f"--no-dynamic-batching and {given} conflict: {given} sets up dynamic batching; drop one")
    delay = {} if args.max_queue_delay_us is None else {"max_queue_delay_us": args.max_queue_delay_us}
    options = TritonOptions(
        name=args.name, backend=args.backend, max_batch=args.max_batch, instances=args.instances,
        **delay, preferred_batch=preferred, dynamic_batching=args.dynamic_batching,
        warmup=args.warmup, ort_tensorrt=args.ort_tensorrt, device=args.device, threads=args.threads,
    )
    task_options: dict[str, Any] = {}
    for flag in ("conf", "iou", "top_k"):
        if getattr(args, flag) is not None:
            task_options[flag] = getattr(args, flag)
    if args.labels is not None:
        from ..tasks.base import read_labels

        task_options["labels"] = list(read_labels(args.labels))
    if task_options and args.task is None:
        flags = ", ".join("--" + k.replace("_", "-") for k in task_options)
        raise SpecError(f"{flags} apply to task pipelines only; add --task, or drop them")
    return options, task_options


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "triton",
        help="write a Triton model repository (engines, ONNX, or task pipelines as ensembles)",
        description="Write a Triton Inference Server model repository. Every config.pbtxt is validated "
        "with Triton's model_config.proto before it is written.",
    )
    p.add_argument("models", metavar="MODEL", nargs="+", help="engine (.plan/.engine with its trtkit sidecar) or .onnx")
    p.add_argument("-o", "--output", required=True, metavar="REPO", help="repository directory (created if missing)")
    add_repository_args(p, backend_default="native")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..serve.repository import write_repository

    options, task_options = options_from_args(args)
    report = write_repository(args.models, args.output, options=options, task=args.task, task_options=task_options)
    print(report.render())
    return 0
