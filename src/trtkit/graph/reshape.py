"""``trtkit reshape``: make an ONNX model's inputs static or dynamic, safely.

Editing the input dims is the easy part. The hard part is everything the
exporter derived from them: stale ``value_info``, output shapes that still say
``1``, and constants that bake in the export size. So this module

1. sets the input dims (``--shapes`` fixes them; ``--dynamic-batch`` /
   ``--dynamic NAME:AXES`` frees them), refusing names, ranks and static dims
   that do not fit (never a silent rewrite of what the user asked);
2. when freeing axes, rewrites the constants that are provably safe to rewrite
   (see :mod:`trtkit.graph.reshape_rules` for the rules and why they are exact);
3. clears stale ``value_info`` and output shapes and re-runs shape inference;
4. proves the result with ONNX Runtime on the CPU: the new model must match the
   original at the original shape, must run at a *new* shape (batch 2x, or
   each freed spatial axis +32), and at the doubled batch each half must match
   the original run on that half alone. Any failure is a ReshapeError that
   names the node(s) hard-coding the old size and how to fix it; nothing is
   written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from .._optional import require
from ..atomic import check_output_path
from ..errors import ModelLoadError, ReshapeError, ShapeError, SpecError
from ..measure.inputs import generate_at_shapes
from ..measure.tolerance import check_tolerances
from .onnx_io import OutputError, compare_outputs, io_specs, load_onnx, run_onnxruntime, save_onnx
from .reshape_rules import infer, rewrite_reshapes, rewrite_resizes, static_shapes, suspects
from ..spec import Dim, Shape, TensorSpec, format_shape, format_shapes, suggest_name, validate_shapes

if TYPE_CHECKING:  # pragma: no cover
    import onnx

__all__ = ["ReshapeConfig", "ReshapeReport", "reshape"]

SPATIAL_STEP = 32  # freed non-batch axes are checked at old size + 32 (keeps strides of 2..32 valid)
DEFAULT_DYNAMIC = 64  # size used for still-dynamic non-batch dims when running the check (see --check-shapes)


def _shape_pairs(value: Any) -> tuple[tuple[str, Shape], ...]:
    items = value.items() if isinstance(value, Mapping) else value
    out = []
    for name, dims in items:
        if isinstance(dims, (str, bytes)) or not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0
                                                     for d in dims):
            raise SpecError(
                f"ReshapeConfig shape for input {name!r} must be non-negative integers, got {tuple(dims) if not isinstance(dims, str) else dims!r}; "
                "give concrete sizes, e.g. (1, 3, 640, 640) (to keep an axis dynamic, use dynamic_batch or dynamic)"
            )
        out.append((str(name), tuple(int(d) for d in dims)))
    return tuple(out)


@dataclass(frozen=True)
class ReshapeConfig:
    """What to change. ``shapes`` (fix) and ``dynamic_batch``/``dynamic`` (free) exclude each other.

    ``check_shapes`` gives concrete shapes for the ONNX Runtime check, in terms
    of the *reshaped* model: sizes for dims that stay dynamic (default: batch 1,
    other dims 64), and optionally another size for an axis this call frees
    (the reshaped model is then also run there).
    """

    shapes: tuple[tuple[str, Shape], ...] = ()  # a dict {name: shape} is accepted too
    dynamic_batch: bool = False
    dynamic: tuple[tuple[str, tuple[int, ...]], ...] = ()
    check_shapes: tuple[tuple[str, Shape], ...] = ()  # a dict {name: shape} is accepted too
    atol: float = 1e-4
    rtol: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "shapes", _shape_pairs(self.shapes))
        object.__setattr__(self, "check_shapes", _shape_pairs(self.check_shapes))
        object.__setattr__(self, "dynamic", _shape_pairs(self.dynamic))
        check_tolerances([("atol", self.atol), ("rtol", self.rtol)])
        if self.shapes and self.frees_axes:
            raise SpecError(
                "--shapes (make inputs static) conflicts with --dynamic-batch/--dynamic (make axes dynamic); "
                "run `trtkit reshape` twice if you need both"
            )
        if not self.shapes and not self.frees_axes:
            raise SpecError("reshape needs --shapes SPEC, --dynamic-batch or --dynamic NAME:AXES; nothing to do")

    @property
    def frees_axes(self) -> bool:
        return bool(self.dynamic_batch or self.dynamic)


@dataclass(frozen=True)
class ReshapeReport:
    """What changed and how it was verified."""

    output: str
    inputs_before: tuple[TensorSpec, ...]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    rewrites: tuple[str, ...] = ()
    checks: tuple[str, ...] = ()
    errors: tuple[OutputError, ...] = field(default=())

    def render(self) -> str:
        lines = [f"wrote {self.output}"]
        for before, after in zip(self.inputs_before, self.inputs):
            if before.shape != after.shape:
                lines.append(f"  input {after.name}: {before.display_shape()} -> {after.display_shape()}")
        lines += [f"  output {s.name}: {s.display_shape()}" for s in self.outputs]
        if any("-1" in s.display_shape().strip("[]").split(",") for s in (*self.inputs, *self.outputs)):
            lines.append("  (-1: a dynamic size that follows from the dynamic input dims)")
        lines += [f"rewrote {r}" for r in self.rewrites]
        lines += [f"checked {c}" for c in self.checks]
        return "\n".join(lines)


# ------------------------------------------------------------------ planning


def _dim_name(spec: TensorSpec, axis: int, *, several: bool) -> str:
    if axis == 0:
        return "batch"
    name = {2: "height", 3: "width"}.get(axis, f"dim{axis}") if spec.rank == 4 else f"dim{axis}"
    return f"{spec.name}_{name}" if several or name.startswith("dim") else name


def _plan_dynamic(inputs: tuple[TensorSpec, ...], config: ReshapeConfig) -> dict[str, tuple[Dim, ...]]:
    by_name = {s.name: s for s in inputs}
    axes: dict[str, set[int]] = {}
    if config.dynamic_batch:
        for s in inputs:
            if s.rank:
                axes.setdefault(s.name, set()).add(0)
    for name, wanted in config.dynamic:
        spec = by_name.get(name)
        if spec is None:
            names = list(by_name)
            raise ShapeError(
                f"--dynamic names input {name!r}, which the model does not have. "
                f"Model inputs: {', '.join(repr(n) for n in names)}.{suggest_name(name, names)}"
            )
        bad = [a for a in wanted if not 0 <= a < spec.rank]
        if bad:
            raise ShapeError(
                f"--dynamic {name}:{','.join(map(str, wanted))}: axis {bad[0]} is out of range for input {name!r} "
                f"{spec.display_shape()} (rank {spec.rank}); use axes 0..{spec.rank - 1}"
            )
        axes.setdefault(name, set()).update(wanted)
    plan = {}
    for name, chosen in axes.items():
        spec = by_name[name]
        dims = list(spec.shape)
        for a in sorted(chosen):
            if isinstance(dims[a], int):
                dims[a] = _dim_name(spec, a, several=len(inputs) > 1)
        if tuple(dims) != spec.shape:
            plan[name] = tuple(dims)
    if not plan:
        shown = ", ".join(f"{s.name!r} {s.display_shape()}" for s in inputs)
        raise ReshapeError(f"nothing to change: the requested axes are already dynamic (inputs: {shown})")
    return plan


def _plan_static(inputs: tuple[TensorSpec, ...], config: ReshapeConfig) -> dict[str, tuple[Dim, ...]]:
    shapes = dict(config.shapes)
    validate_shapes(inputs, shapes, what="--shapes")
    plan: dict[str, tuple[Dim, ...]] = {
        n: tuple(s) for n, s in shapes.items() if tuple(s) != next(i.shape for i in inputs if i.name == n)
    }
    if not plan:
        raise ReshapeError(f"nothing to change: --shapes {format_shapes(shapes)} equals the model's static input shapes")
    return plan


def _set_dims(model: "onnx.ModelProto", plan: Mapping[str, tuple[Dim, ...]]) -> None:
    for value in model.graph.input:
        dims = plan.get(value.name)
        if dims is None:
            continue
        shape = value.type.tensor_type.shape
        shape.ClearField("dim")
        for d in dims:
            if isinstance(d, int):
                shape.dim.add().dim_value = d
            else:
                shape.dim.add().dim_param = d


def _clear_output_shapes(model: "onnx.ModelProto") -> None:
    for value in model.graph.output:
        value.type.tensor_type.ClearField("shape")


# ------------------------------------------------------------------ checking


def _check_shapes(
    inputs: tuple[TensorSpec, ...], new_inputs: tuple[TensorSpec, ...], config: ReshapeConfig
) -> tuple[dict[str, Shape], dict[str, Shape]]:
    """(base, wanted): where the ORIGINAL model runs for the check, and where the user asked the new one to run.

    ``--check-shapes`` describes the *reshaped* model (it may give a size for an
    axis this call makes dynamic), so it is validated against the new specs.
    The original can only run at its own static sizes, so ``base`` keeps those;
    ``wanted`` differs from ``base`` only where the user chose another size
    for a freed axis, and the reshaped model is then also run there.
    """
    given = dict(config.check_shapes)
    validate_shapes(new_inputs, given, what="--check-shapes")
    given.update(dict(config.shapes))
    wanted = {
        s.name: tuple(given[s.name]) if s.name in given else tuple(
            d if isinstance(d, int) else (1 if a == 0 else DEFAULT_DYNAMIC) for a, d in enumerate(s.shape)
        )
        for s in inputs
    }
    base = {s.name: tuple(d if isinstance(d, int) else w for d, w in zip(s.shape, wanted[s.name])) for s in inputs}
    return base, wanted


class _Checker:
    """Runs the original and reshaped models with ONNX Runtime and words every failure."""

    def __init__(self, original: "onnx.ModelProto", model: "onnx.ModelProto", config: ReshapeConfig, hint: str) -> None:
        self.original, self.model, self.config, self.hint = original, model, config, hint
        self.checks: list[str] = []
        self.errors: list[OutputError] = []
        self.runs: list[dict[str, np.ndarray]] = []

    def run(self, which: str, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        model = self.original if which == "original" else self.model
        try:
            out = run_onnxruntime(model, feeds)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises several pybind types; all become ReshapeError
            shapes = format_shapes({n: a.shape for n, a in feeds.items()})
            if which == "original":
                raise ReshapeError(
                    f"the original model does not run with ONNX Runtime at {shapes} ({exc}); "
                    "give shapes it accepts for its dynamic dims with --check-shapes"
                ) from None
            raise ReshapeError(f"the reshaped model fails in ONNX Runtime at {shapes}: {exc}. {self.hint}") from None
        if which != "original":
            self.runs.append(out)
        return out

    def compare(self, what: str, ref: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray]) -> None:
        errors = compare_outputs(ref, got, atol=self.config.atol, rtol=self.config.rtol)
        self.errors += errors
        bad = [e for e in errors if not e.ok]
        if bad:
            raise ReshapeError(
                f"the reshaped model gives different results {what}: "
                + "; ".join(e.describe() for e in bad) + f". {self.hint}"
            )
        worst_abs = max((e.max_abs for e in errors), default=0.0)
        worst_rel = max((e.max_rel for e in errors), default=0.0)
        self.checks.append(
            f"{what}: {len(errors)} output(s) match, max abs {worst_abs:.3g}, max rel {worst_rel:.3g} "
            f"(atol {self.config.atol}, rtol {self.config.rtol})"
        )


def _split_batch(checker: _Checker, inputs: tuple[TensorSpec, ...], base: dict[str, Shape], batched: set[str], seed: int) -> None:
    """Run at twice the batch; each half must equal the original run on that half alone."""
    a = generate_at_shapes(inputs, base, seed=seed)
    b = generate_at_shapes(inputs, base, seed=seed + 1)
    b = {n: (b[n] if n in batched else a[n]) for n in a}
    both = {n: (np.concatenate([a[n], b[n]]) if n in batched else a[n]) for n in a}
    ref_a, ref_b = checker.run("original", a), checker.run("original", b)
    got = checker.run("reshaped", both)
    halves_a, halves_b = {}, {}
    for name, ref in ref_a.items():
        out = got[name]
        if out.ndim and ref.ndim and out.shape[0] == 2 * ref.shape[0] and out.shape[1:] == ref.shape[1:]:
            halves_a[name], halves_b[name] = out[: ref.shape[0]], out[ref.shape[0] :]
        elif out.shape == ref.shape and np.array_equal(ref, ref_b[name]):
            halves_a[name], halves_b[name] = out, out  # an output that does not depend on the batch
        else:
            raise ReshapeError(
                f"output {name!r} has shape {format_shape(out.shape)} at batch "
                f"{format_shapes({n: both[n].shape for n in batched})} but {format_shape(ref.shape)} at the original "
                f"batch: the graph does not keep the batch on axis 0 of this output. {checker.hint}"
            )
    shown = format_shapes({n: both[n].shape for n in both})
    single = format_shapes({n: a[n].shape for n in a})
    checker.compare(f"at {shown}, first half of the batch vs the original run alone at {single}", ref_a, halves_a)
    checker.compare(f"at {shown}, second half of the batch vs the original run alone at {single}", ref_b, halves_b)


def _check(original: "onnx.ModelProto", model: "onnx.ModelProto", plan: Mapping[str, tuple[Dim, ...]],
           config: ReshapeConfig, hint: str) -> _Checker:
    inputs, _ = io_specs(original)
    checker = _Checker(original, model, config, hint)
    base, wanted = _check_shapes(inputs, io_specs(model)[0], config)
    feeds = generate_at_shapes(inputs, base, seed=config.seed)
    checker.compare(f"at {format_shapes(base)} (vs the original)", checker.run("original", feeds), checker.run("reshaped", feeds))
    if wanted != base:
        checker.run("reshaped", generate_at_shapes(inputs, wanted, seed=config.seed + 30))
        checker.checks.append(f"runs at {format_shapes(wanted)} (--check-shapes)")
    if not config.frees_axes:
        return checker
    freed = {n: [a for a, d in enumerate(dims) if isinstance(d, str) and a < len(base[n]) and isinstance(
        next(s for s in inputs if s.name == n).shape[a], int)] for n, dims in plan.items()}
    batched = {n for n, axes in freed.items() if 0 in axes}
    if batched:
        _split_batch(checker, inputs, base, batched, config.seed + 10)
    spatial = {n: [a for a in axes if a > 0] for n, axes in freed.items()}
    if any(spatial.values()):
        grown = {n: tuple(d + SPATIAL_STEP if a in spatial.get(n, []) else d for a, d in enumerate(s)) for n, s in base.items()}
        checker.run("reshaped", generate_at_shapes(inputs, grown, seed=config.seed + 20))
        checker.checks.append(f"runs at {format_shapes(grown)} (freed axes grown by {SPATIAL_STEP})")
    return checker


def _set_dim(value: "onnx.ValueInfoProto", axis: int, dim: Dim) -> None:
    d = value.type.tensor_type.shape.dim[axis]
    if isinstance(dim, int):
        d.dim_value = dim
    else:
        d.dim_param = dim


def _fix_output_dims(
    model: "onnx.ModelProto", checker: _Checker, before: tuple[TensorSpec, ...], *, batch: bool, spatial: bool
) -> None:
    """Check inferred output dims against every ONNX Runtime run, and fill the ones the runs prove.

    All-static model: every dim comes from the run. Batch freed: an unknown axis
    0 that followed the batch in every run is named ``batch``. Only the batch
    freed: an unknown dim is the original static size when every run (batch B
    and 2B) agrees with it.
    """
    inputs, outputs = io_specs(model)
    static_model = not any(s.is_dynamic for s in inputs)
    old = {s.name: s for s in before}
    for value, spec in zip(model.graph.output, outputs):
        shapes = [run[spec.name].shape for run in checker.runs]
        if shapes and not value.type.tensor_type.HasField("shape"):  # inference gave up: start from unknown dims
            for _ in shapes[0]:
                value.type.tensor_type.shape.dim.add()
            spec = io_specs(model)[1][list(model.graph.output).index(value)]
        for actual in shapes:
            if len(actual) != spec.rank or any(isinstance(d, int) and d != g for d, g in zip(spec.shape, actual)):
                raise ReshapeError(
                    f"output {spec.name!r}: shape inference says {spec.display_shape()} but ONNX Runtime returned "
                    f"{format_shape(actual)}; a node hard-codes a size. {checker.hint}"
                )
        if not shapes or not spec.rank:
            continue
        if static_model:
            for axis, d in enumerate(shapes[0]):
                _set_dim(value, axis, int(d))
            continue
        if batch and isinstance(spec.shape[0], str) and len({s[0] for s in shapes}) > 1:
            _set_dim(value, 0, "batch")
        prior = old.get(spec.name)
        if spatial or not batch or prior is None or prior.rank != spec.rank:
            continue
        for axis, dim in enumerate(spec.shape[1:], start=1):
            if isinstance(dim, str) and isinstance(prior.shape[axis], int) and {s[axis] for s in shapes} == {prior.shape[axis]}:
                _set_dim(value, axis, prior.shape[axis])


def _hint(original: "onnx.ModelProto", inputs: tuple[TensorSpec, ...], plan: Mapping[str, tuple[Dim, ...]]) -> str:
    old_batch = {s.shape[0] for s in inputs if s.name in plan and s.rank and isinstance(s.shape[0], int)
                 and isinstance(plan[s.name][0], str)}
    sizes = {d for s in inputs if s.name in plan for a, d in enumerate(s.shape)
             if a > 0 and isinstance(d, int) and isinstance(plan[s.name][a], str) and d > 1}
    found = suspects(original, batch=next(iter(old_batch)) if old_batch else None, sizes=sizes)
    where = f"Nodes that hard-code the old size: {'; '.join(found[:8])}. " if found else ""
    return (where + "The graph bakes in the export shape; re-export it from the framework with dynamic axes "
            "(e.g. `trtkit export ... --dynamic-batch`), or keep the static shape")


_ENGINE_MAGICS = (b"ftrt", b"vtrt")  # TensorRT engine headers (TensorRT, TensorRT-RTX) in the first bytes


def _refuse_engine(path: str | os.PathLike[str]) -> None:
    """A TensorRT engine is compiled for fixed profiles; the ONNX parser would only call it corrupt."""
    from ..backends import ENGINE_SUFFIXES

    p = os.fspath(path)
    if not os.path.isfile(p):
        return  # load_onnx words a missing path
    with open(p, "rb") as fh:
        head = fh.read(32)
    if p.lower().endswith(ENGINE_SUFFIXES) or any(m in head for m in _ENGINE_MAGICS):
        raise ModelLoadError(
            f"{p!r} is a TensorRT engine, not an ONNX model; reshape works on ONNX. Reshape the .onnx the engine "
            "was built from, then build a new engine from the result (trtkit build); an engine's shapes are set "
            "by the optimization profiles it was built with"
        )


def reshape(model_path: str | os.PathLike[str], output: str | os.PathLike[str], *, config: ReshapeConfig) -> ReshapeReport:
    """Make inputs static or dynamic, re-infer shapes, verify with ONNX Runtime, write ``output`` atomically."""
    onnx = require("onnx")
    target = check_output_path(output, what="reshape output", inputs=(model_path,))
    _refuse_engine(model_path)
    original = load_onnx(model_path)
    inputs, outputs_before = io_specs(original)
    plan = _plan_dynamic(inputs, config) if config.frees_axes else _plan_static(inputs, config)
    model = onnx.ModelProto()
    model.CopyFrom(original)
    rewrites: list[str] = []
    if config.frees_axes:
        known = static_shapes(original)
        if any(isinstance(d[0], str) for d in plan.values() if d):
            rewrites += rewrite_reshapes(model, known)
        rewrites += rewrite_resizes(model, known)
    _set_dims(model, plan)
    _clear_output_shapes(model)
    model = infer(model)
    checker = _check(original, model, plan, config, _hint(original, inputs, plan))
    freed = [a for s in inputs if s.name in plan for a, d in enumerate(plan[s.name])
             if isinstance(d, str) and isinstance(s.shape[a], int)]
    _fix_output_dims(model, checker, outputs_before, batch=0 in freed, spatial=any(a > 0 for a in freed))
    new_inputs, new_outputs = io_specs(model)
    save_onnx(model, target)
    return ReshapeReport(
        output=str(target),
        inputs_before=inputs,
        inputs=new_inputs,
        outputs=new_outputs,
        rewrites=tuple(rewrites),
        checks=tuple(checker.checks),
        errors=tuple(checker.errors),
    )
