"""``config.pbtxt`` for Triton: derived from a model's facts, validated with Triton's own proto.

Each config is built as a ``inference.ModelConfig`` message from
``tritonclient.grpc.model_config_pb2`` (Triton's ``model_config.proto``),
rendered with ``google.protobuf.text_format`` and parsed back before it is
written, so a field name or value Triton's parser would refuse can never reach
disk. The checks that the proto cannot express, but that make Triton refuse to
load a model (a batch axis missing from an output, a preferred batch size above
``max_batch_size``...), raise :class:`~trtkit.errors.SpecError` naming the fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from .._optional import require
from ..errors import SpecError
from ..spec import TensorSpec
from .facts import ModelFacts

__all__ = ["TritonOptions", "model_config", "render", "parse", "TRITON_DTYPES", "BACKENDS"]

BACKENDS = ("native", "python")

# numpy dtype name -> Triton DataType enum name (model_config.proto)
TRITON_DTYPES = {
    "bool": "TYPE_BOOL", "uint8": "TYPE_UINT8", "uint16": "TYPE_UINT16", "uint32": "TYPE_UINT32",
    "uint64": "TYPE_UINT64", "int8": "TYPE_INT8", "int16": "TYPE_INT16", "int32": "TYPE_INT32",
    "int64": "TYPE_INT64", "float16": "TYPE_FP16", "float32": "TYPE_FP32", "float64": "TYPE_FP64",
}


@dataclass(frozen=True)
class TritonOptions:
    """How ``trtkit triton`` lays out a model.

    ``max_batch`` None derives it: the engine profiles' smallest max batch, or 8
    for a model whose batch axis is dynamic without profiles (ONNX); 0 when the
    batch axis is static. ``preferred_batch`` () derives it from the profiles'
    opt batch sizes (none for ONNX). ``dynamic_batching`` False writes no
    ``dynamic_batching``. ``threads`` sets ONNX Runtime's intra-op threads in the
    Python backend (on a CPU shared with Triton and its clients, 1 avoids ORT's
    spinning pool taking the cores they need; see docs/deploy.md).
    """

    name: str | None = None
    backend: str = "native"  # native: tensorrt_plan / onnxruntime_onnx; python: trtkit in the Python backend
    max_batch: int | None = None
    instances: int = 1
    max_queue_delay_us: int = 100
    preferred_batch: tuple[int, ...] = ()
    dynamic_batching: bool = True
    warmup: bool = True
    ort_tensorrt: bool = False  # onnxruntime_onnx: enable ONNX Runtime's TensorRT execution accelerator
    device: str = "cpu"  # python backend: trtkit runtime device ("cpu" = ORT CPU, "cuda" = ORT CUDA / TensorRT)
    threads: int | None = None  # python backend: ONNX Runtime intra-op threads per instance (None = ORT's default)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise SpecError(f"--backend {self.backend!r} is unknown; choose one of: {', '.join(BACKENDS)}")
        if self.max_batch is not None and self.max_batch < 0:
            raise SpecError(f"--max-batch must be >= 0 (0 = no batching), got {self.max_batch}")
        if self.instances < 1:
            raise SpecError(f"--instances must be >= 1, got {self.instances}")
        if self.max_queue_delay_us < 0:
            raise SpecError(f"--max-queue-delay-us must be >= 0, got {self.max_queue_delay_us}")
        if any(b < 1 for b in self.preferred_batch):
            raise SpecError(f"--preferred-batch sizes must be >= 1, got {','.join(map(str, self.preferred_batch))}")
        if self.ort_tensorrt and self.backend != "native":
            raise SpecError("--ort-tensorrt applies to --backend native (onnxruntime_onnx) only; drop one of them")
        if self.threads is not None and self.threads < 1:
            raise SpecError(f"--threads must be >= 1, got {self.threads}")
        if self.threads is not None and self.backend != "python":
            raise SpecError("--threads applies to --backend python (trtkit runs the model); drop one of them")
        if self.device not in ("cpu", "cuda"):
            raise SpecError(f"device must be 'cpu' or 'cuda', got {self.device!r}")


def _pb() -> Any:
    return require("tritonclient.grpc.model_config_pb2", purpose="writing Triton model configs")


def _dtype(spec: TensorSpec, model: str) -> str:
    try:
        return TRITON_DTYPES[spec.dtype]
    except KeyError:
        raise SpecError(
            f"model {model!r}: tensor {spec.name!r} has dtype {spec.dtype}, which Triton's numeric types do not "
            f"cover (supported: {', '.join(TRITON_DTYPES)}); export the model with a supported dtype"
        ) from None


def _dims(spec: TensorSpec, batched: bool) -> list[int]:
    dims = spec.json_shape()
    return dims[1:] if batched else dims


# ---------------------------------------------------------------- batching


def batch_size(facts: ModelFacts, options: TritonOptions, *, model: str) -> int:
    """``max_batch_size``: 0 when the batch axis is static; else the profiles' bound or the option."""
    if not facts.batch_dynamic:
        if options.max_batch:
            static = [f"{s.name} {s.display_shape()}" for s in (*facts.inputs, *facts.outputs)
                      if s.rank == 0 or not isinstance(s.shape[0], str)]
            raise SpecError(
                f"model {model!r}: --max-batch {options.max_batch} needs every input and output to lead with a "
                f"dynamic batch axis, but {', '.join(static)} do(es) not; Triton would reject the outputs. Drop "
                "--max-batch (max_batch_size 0), or rebuild/re-export the model with a dynamic batch axis "
                "(trtkit reshape --dynamic NAME:0, trtkit build --dynamic-batch 1:4:8)"
            )
        return 0
    bounds = [p[s.name].max[0] for p in facts.profiles for s in facts.inputs if s.name in p]
    limit = min(bounds) if bounds else None
    if options.max_batch is None:
        return limit if limit is not None else 8
    if limit is not None and options.max_batch > limit:
        raise SpecError(
            f"model {model!r}: --max-batch {options.max_batch} exceeds the engine's profiles, whose batch axis "
            f"goes up to {limit}; Triton would send batches the engine cannot run. Use --max-batch {limit} or "
            "rebuild the engine with a larger --dynamic-batch range"
        )
    return options.max_batch


def preferred_sizes(facts: ModelFacts, options: TritonOptions, max_batch: int, *, model: str) -> list[int]:
    if options.preferred_batch:
        too_big = [b for b in options.preferred_batch if b > max_batch]
        if too_big:
            raise SpecError(
                f"model {model!r}: --preferred-batch {','.join(map(str, too_big))} exceed(s) max_batch_size "
                f"{max_batch}; Triton refuses such a config. Use sizes <= {max_batch}"
            )
        return sorted(set(options.preferred_batch))
    if not facts.profiles:
        # ONNX Runtime (and trtkit in the Python backend) has no batch size it runs best: no preferred sizes,
        # so the batcher sends what queued while the instance was busy instead of holding requests for the
        # queue delay in the hope of a "preferred" batch (benchmarks/serve.py measured that wait at c=1)
        return []
    opts = {p[s.name].opt[0] for p in facts.profiles for s in facts.inputs if s.name in p}
    return sorted(b for b in opts | {max_batch} if 1 < b <= max_batch) or [max_batch]


# ---------------------------------------------------------------- the config


def model_config(
    facts: ModelFacts,
    options: TritonOptions,
    *,
    name: str,
    platform: str | None = None,
    backend: str | None = None,
    parameters: dict[str, str] | None = None,
    inputs: Sequence[TensorSpec] | None = None,
    outputs: Sequence[TensorSpec] | None = None,
    max_batch: int | None = None,
    gpu: bool = False,
) -> Any:
    """A ``ModelConfig`` for one model. ``inputs``/``outputs``/``max_batch`` override the facts' own
    (the Python-backend steps of a task pipeline have their own tensors)."""
    pb = _pb()
    cfg = pb.ModelConfig(name=name)
    if platform:
        cfg.platform = platform
    if backend:
        cfg.backend = backend
    mbs = batch_size(facts, options, model=name) if max_batch is None else max_batch
    cfg.max_batch_size = mbs
    batched = mbs > 0
    ins = list(facts.inputs if inputs is None else inputs)
    outs = list(facts.outputs if outputs is None else outputs)
    _check_batch_axis(ins, outs, batched, model=name)
    for spec in ins:
        cfg.input.add(name=spec.name, data_type=_dtype(spec, name), dims=_dims(spec, batched))
    for spec in outs:
        cfg.output.add(name=spec.name, data_type=_dtype(spec, name), dims=_dims(spec, batched))
    if batched and options.dynamic_batching:
        cfg.dynamic_batching.SetInParent()  # present even with no preferred sizes and a zero delay
        cfg.dynamic_batching.preferred_batch_size.extend(preferred_sizes(facts, options, mbs, model=name))
        cfg.dynamic_batching.max_queue_delay_microseconds = options.max_queue_delay_us
    _instances(cfg, facts, options, gpu=gpu)
    if options.warmup and inputs is None:
        _warmup(cfg, facts, batched)
    if options.ort_tensorrt and platform == "onnxruntime_onnx":
        cfg.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
    for key, value in (parameters or {}).items():
        cfg.parameters[key].string_value = value
    return cfg


def _check_batch_axis(ins: Iterable[TensorSpec], outs: Iterable[TensorSpec], batched: bool, *, model: str) -> None:
    if not batched:
        return
    bad = [s for s in (*ins, *outs) if s.rank == 0 or not isinstance(s.shape[0], str)]
    if bad:
        raise SpecError(
            f"model {model!r}: with max_batch_size > 0 Triton needs every input and output to lead with the batch "
            f"axis, but {', '.join(f'{s.name} {s.display_shape()}' for s in bad)} do(es) not. Use --max-batch 0, "
            "or re-export the model with a dynamic batch axis on every tensor"
        )


def _instances(cfg: Any, facts: ModelFacts, options: TritonOptions, *, gpu: bool) -> None:
    pb = _pb()
    kind = pb.ModelInstanceGroup.KIND_GPU if gpu else pb.ModelInstanceGroup.KIND_CPU
    if gpu and len(facts.profiles) > 1:  # one group per optimization profile: each instance runs its own
        for index in range(len(facts.profiles)):
            cfg.instance_group.add(count=options.instances, kind=kind, profile=[str(index)])
    else:
        cfg.instance_group.add(count=options.instances, kind=kind)


def _warmup(cfg: Any, facts: ModelFacts, batched: bool) -> None:
    """One warmup request at the first profile's opt shape (or the static shape); skipped, not guessed,
    when a non-batch axis is dynamic and no profile says how large it is."""
    profile = facts.profiles[0] if facts.profiles else None
    sample: dict[str, list[int]] = {}
    for spec in facts.inputs:
        if profile is not None and spec.name in profile:
            shape = list(profile[spec.name].opt)
        else:
            shape = [d if isinstance(d, int) else (1 if i == 0 and batched else -1) for i, d in enumerate(spec.shape)]
        if batched:
            shape = shape[1:]
        if any(d < 1 for d in shape):
            return
        sample[spec.name] = shape
    warm = cfg.model_warmup.add(name="trtkit_warmup", batch_size=1 if batched else 0)
    for spec in facts.inputs:
        warm.inputs[spec.name].data_type = _dtype(spec, cfg.name)
        warm.inputs[spec.name].dims.extend(sample[spec.name])
        warm.inputs[spec.name].zero_data = True


def render(cfg: Any) -> str:
    """The config as ``config.pbtxt`` text, proven to parse back into the same message."""
    from google.protobuf import text_format

    text = text_format.MessageToString(cfg)
    if parse(text) != cfg:
        raise SpecError(f"model {cfg.name!r}: the config did not survive a text round trip; this is a trtkit bug")
    return text


def parse(text: str) -> Any:
    """Parse ``config.pbtxt`` text with Triton's ``model_config.proto``; SpecError naming the problem."""
    from google.protobuf import text_format

    pb = _pb()
    try:
        return text_format.Parse(text, pb.ModelConfig())
    except text_format.ParseError as exc:
        raise SpecError(f"config.pbtxt does not parse as Triton's ModelConfig: {exc}") from None


def step_config(
    name: str,
    *,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    backend: str | None = None,
    platform: str | None = None,
    instances: int = 1,
) -> Any:
    """A non-batching config with full shapes (``max_batch_size: 0``): the ensemble and its Python steps.

    A step feeding a batching model declares the batch axis as -1 in its full
    shape; Triton's ensemble check accepts ``[-1, d...]`` against ``[d...]`` of
    a batching model, and the dynamic batcher then groups concurrent requests.
    """
    pb = _pb()
    cfg = pb.ModelConfig(name=name, max_batch_size=0)
    if backend:
        cfg.backend = backend
    if platform:
        cfg.platform = platform
    for spec in inputs:
        cfg.input.add(name=spec.name, data_type=_dtype(spec, name), dims=spec.json_shape())
    for spec in outputs:
        cfg.output.add(name=spec.name, data_type=_dtype(spec, name), dims=spec.json_shape())
    if platform != "ensemble":
        cfg.instance_group.add(count=instances, kind=pb.ModelInstanceGroup.KIND_CPU)
    return cfg


def add_ensemble_step(cfg: Any, model: str, *, inputs: Iterable[str], outputs: Iterable[str]) -> None:
    """One ``ensemble_scheduling`` step; ensemble tensors carry the step tensors' own names."""
    step = cfg.ensemble_scheduling.step.add(model_name=model, model_version=-1)
    for name in inputs:
        step.input_map[name] = name
    for name in outputs:
        step.output_map[name] = name
