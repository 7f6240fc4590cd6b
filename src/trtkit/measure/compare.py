"""Compare the outputs of two sources on the same inputs, the way Polygraphy does.

A and B are each an ONNX file, an engine, or a PyTorch source
(``file.py:factory`` / ``pkg.mod:attr``; see :mod:`trtkit.measure.run`). Both get
the same inputs (from files, or generated with a seed). B is the reference:
relative error is measured against ``|B|``.

The check is Polygraphy's default ``elemwise`` check (``CompareFunc.simple``
in polygraphy/comparator/compare.py, ``check_outputs_match``):

    absdiff = |A - B|                       (computed in float64; bool: A xor B)
    reldiff = absdiff / |B'|                (B' = B with exact zeros replaced by 2.22e-16)
    mismatch = (absdiff > atol or absdiff is NaN) and (reldiff > rtol or reldiff is NaN)

An output passes when no element mismatches; so an element fails only when
it exceeds BOTH tolerances, and any NaN (either side) fails, as does Inf
against Inf (Polygraphy's ``infinities_compare_equal=False`` default).
Defaults are Polygraphy's: atol = rtol = 1e-5. Different shapes are a failed
row, not a crash (Polygraphy's default ``check_shapes=True``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from .inputs import generate_inputs, prepare_inputs
from ..errors import DTypeError, ShapeError, SpecError
from .tolerance import check_tolerances, elementwise_errors
from .run import Source, SourceConfig, is_torch_source, open_source
from ..spec import RuntimeConfig, TensorSpec, suggest_name

__all__ = ["CompareConfig", "CompareResult", "OutputComparison", "compare", "compare_arrays", "parse_tolerances", "generate_inputs"]

Tolerances = tuple[tuple[str, float], ...]

# compare checks the models as written: trtkit's ONNX Runtime fusions (exact up to rounding) stay off, in the
# library and the CLI alike. Pass a SourceConfig with RuntimeConfig(fuse=True) to compare what `run` executes.
AS_WRITTEN = RuntimeConfig(fuse=False)


@dataclass(frozen=True)
class CompareConfig:
    """How to open each side, where inputs come from, and the tolerances (default, then per output)."""

    a: SourceConfig = SourceConfig(runtime=AS_WRITTEN)
    b: SourceConfig = SourceConfig(runtime=AS_WRITTEN)
    atol: float = 1e-5
    rtol: float = 1e-5
    output_atol: Tolerances = ()
    output_rtol: Tolerances = ()
    input_files: tuple[str, ...] = ()
    shapes: Mapping[str, tuple[int, ...]] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        check_tolerances([("atol", self.atol), ("rtol", self.rtol), *self.output_atol, *self.output_rtol])

    def tolerance(self, name: str) -> tuple[float, float]:
        return dict(self.output_atol).get(name, self.atol), dict(self.output_rtol).get(name, self.rtol)


def parse_tolerances(values: Sequence[str], *, flag: str, default: float = 1e-5) -> tuple[float, Tolerances]:
    """``["1e-3", "logits:1e-2"]`` -> (1e-3, (("logits", 0.01),)). NAME:VALUE splits at the last colon."""
    bare: list[float] = []
    named: dict[str, float] = {}
    for text in values:
        name, sep, value = text.rpartition(":")
        try:
            number = float(value)
        except ValueError:
            raise SpecError(f"{flag} {text!r}: expected a number or NAME:NUMBER, e.g. {flag} 1e-3 or {flag} logits:1e-2") from None
        if not sep:
            bare.append(number)
        elif name in named:
            raise SpecError(f"{flag} gives output {name!r} twice; give each output once")
        else:
            named[name] = number
    if len(bare) > 1:
        raise SpecError(f"{flag} gives {len(bare)} default values ({', '.join(map(str, bare))}); give one, plus NAME:VALUE per output")
    return (bare[0] if bare else default), tuple(named.items())


@dataclass(frozen=True)
class OutputComparison:
    """One row of the report. Error statistics are None where they cannot be computed (missing, shape mismatch)."""

    name: str
    name_b: str | None
    shape_a: tuple[int, ...] | None
    shape_b: tuple[int, ...] | None
    dtype_a: str | None
    dtype_b: str | None
    atol: float
    rtol: float
    max_abs: float | None = None
    mean_abs: float | None = None
    max_rel: float | None = None
    mean_rel: float | None = None
    mismatches: int = 0
    total: int = 0
    nan_a: int = 0
    inf_a: int = 0
    nan_b: int = 0
    inf_b: int = 0
    passed: bool = False
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        for key in ("shape_a", "shape_b"):
            out[key] = None if out[key] is None else list(out[key])
        for key in ("max_abs", "mean_abs", "max_rel", "mean_rel"):
            out[key] = _json_float(out[key])
        return out


def _json_float(value: float | None) -> float | str | None:
    if value is None or np.isfinite(value):
        return value
    return str(value)  # "inf"/"nan": JSON has no literal for them


def _nonfinite(arr: np.ndarray) -> tuple[int, int]:
    if not np.issubdtype(arr.dtype, np.floating):
        return 0, 0
    return int(np.isnan(arr).sum()), int(np.isinf(arr).sum())


def _nan_stats(values: np.ndarray) -> tuple[float | None, float | None]:
    """max and mean over the non-NaN values (NaNs are counted separately)."""
    valid = values[~np.isnan(values)]
    if valid.size == 0:
        return None, None
    return float(valid.max()), float(valid.mean())


def compare_arrays(name: str, a: np.ndarray, b: np.ndarray, *, atol: float = 1e-5, rtol: float = 1e-5) -> OutputComparison:
    """Polygraphy's elementwise check of A against reference B (see the module docstring)."""
    a, b = np.asarray(a), np.asarray(b)
    nan_a, inf_a = _nonfinite(a)
    nan_b, inf_b = _nonfinite(b)
    row = dict(name=name, name_b=None, shape_a=tuple(a.shape), shape_b=tuple(b.shape), dtype_a=str(a.dtype),
               dtype_b=str(b.dtype), atol=atol, rtol=rtol, nan_a=nan_a, inf_a=inf_a, nan_b=nan_b, inf_b=inf_b)
    if a.shape != b.shape:
        return OutputComparison(**row, note="shapes differ")  # type: ignore[arg-type]
    if a.size == 0:
        return OutputComparison(**row, passed=True, note="empty")  # type: ignore[arg-type]
    absdiff, reldiff, mismatch = elementwise_errors(a, b, atol=atol, rtol=rtol)
    max_abs, mean_abs = _nan_stats(absdiff)
    max_rel, mean_rel = _nan_stats(reldiff)
    count = int(mismatch.sum())
    note = "" if a.dtype == b.dtype else f"dtypes differ ({a.dtype} vs {b.dtype}); compared in float64"
    return OutputComparison(
        **row, max_abs=max_abs, mean_abs=mean_abs, max_rel=max_rel, mean_rel=mean_rel,  # type: ignore[arg-type]
        mismatches=count, total=int(a.size), passed=count == 0 and nan_a == nan_b == 0, note=note,
    )


@dataclass(frozen=True)
class CompareResult:
    """Rows per output, the inputs both sides got, and the verdict."""

    a: str
    b: str
    a_runtime: str
    b_runtime: str
    rows: tuple[OutputComparison, ...]
    inputs: dict[str, np.ndarray]
    origins: dict[str, str]
    defaulted: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    hints: tuple[str, ...] = ()  # likely causes, shown when the comparison fails

    @property
    def passed(self) -> bool:
        return bool(self.rows) and all(r.passed for r in self.rows)

    @property
    def failed(self) -> tuple[OutputComparison, ...]:
        return tuple(r for r in self.rows if not r.passed)

    def summary(self) -> str:
        if not self.rows:
            return "FAILED: no outputs to compare"
        if self.passed:
            return f"PASSED: all {len(self.rows)} outputs within tolerance"
        return f"FAILED: {len(self.failed)} of {len(self.rows)} outputs out of tolerance ({', '.join(r.name for r in self.failed)})"

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "a": {"source": self.a, "runtime": self.a_runtime},
            "b": {"source": self.b, "runtime": self.b_runtime},
            "inputs": {n: {"shape": list(x.shape), "dtype": str(x.dtype), "source": self.origins[n]} for n, x in self.inputs.items()},
            "outputs": [r.to_json() for r in self.rows],
            "warnings": list(self.warnings),
            "hints": [] if self.passed else list(self.hints),
            "summary": self.summary(),
        }

    def render(self) -> str:
        lines = [f"A: {self.a}  [{self.a_runtime}]", f"B: {self.b}  [{self.b_runtime}]  (reference)", "inputs:"]
        lines += [f"  {n}  {x.dtype} [{','.join(map(str, x.shape))}]  {self.origins[n]}" for n, x in self.inputs.items()]
        head = ["output", "shape", "max abs", "mean abs", "max rel", "mean rel", "out of tol", "NaN A/B", "Inf A/B", "atol/rtol", "result"]
        rows = [head] + [_render_row(r) for r in self.rows]
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        lines += [f"note: {r.name}: {r.note}" for r in self.rows if r.note]
        return "\n".join(lines)


def _g(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _shape_text(r: OutputComparison) -> str:
    def fmt(s: tuple[int, ...] | None) -> str:
        return "(missing)" if s is None else "[" + ",".join(map(str, s)) + "]"

    return fmt(r.shape_a) if r.shape_a == r.shape_b else f"{fmt(r.shape_a)} vs {fmt(r.shape_b)}"


def _render_row(r: OutputComparison) -> list[str]:
    pct = 100 * r.mismatches / r.total if r.total else 0.0
    share = f"{r.mismatches} ({pct:.1f}%)" if pct >= 0.1 or not r.mismatches else f"{r.mismatches} ({pct:.1g}%)"
    share = share if r.total else "-"
    name = r.name if r.name_b is None or r.name_b == r.name else f"{r.name} ~ {r.name_b}"
    return [name, _shape_text(r), _g(r.max_abs), _g(r.mean_abs), _g(r.max_rel), _g(r.mean_rel), share,
            f"{r.nan_a}/{r.nan_b}", f"{r.inf_a}/{r.inf_b}", f"{r.atol:g}/{r.rtol:g}", "PASS" if r.passed else "FAIL"]


# ------------------------------------------------------------------ matching

Outputs = list[tuple[str | None, np.ndarray]]
_Pair = tuple[str | None, np.ndarray | None, str | None, np.ndarray | None, str]


def _match_outputs(out_a: Outputs, out_b: Outputs) -> list[_Pair]:
    """By name when both sides name their outputs and share names; otherwise by position."""
    names_a, names_b = [n for n, _ in out_a], [n for n, _ in out_b]
    named = all(n is not None for n in names_a + names_b)
    if named and set(names_a) & set(names_b):
        b = dict(out_b)
        pairs: list[_Pair] = [(n, x, n if n in b else None, b.get(n), "") for n, x in out_a]
        return pairs + [(None, None, n, x, "") for n, x in out_b if n not in dict(out_a)]
    note = "matched by position" if named else ""
    pairs = [(na, xa, nb, xb, note) for (na, xa), (nb, xb) in zip(out_a, out_b)]
    pairs += [(n, x, None, None, "") for n, x in out_a[len(out_b):]]
    return pairs + [(None, None, n, x, "") for n, x in out_b[len(out_a):]]


def _row(index: int, pair: _Pair, config: CompareConfig) -> OutputComparison:
    name_a, xa, name_b, xb, note = pair
    name = name_a or name_b or f"output {index}"
    atol, rtol = config.tolerance(name)
    if xa is None or xb is None:
        have, side, other = ("A", xa, "B") if xb is None else ("B", xb, "A")
        arr = np.asarray(side)
        nan, inf = _nonfinite(arr)
        return OutputComparison(
            name, None, tuple(arr.shape) if xa is not None else None, tuple(arr.shape) if xb is not None else None,
            str(arr.dtype) if xa is not None else None, str(arr.dtype) if xb is not None else None, atol, rtol,
            nan_a=nan if xa is not None else 0, inf_a=inf if xa is not None else 0,
            nan_b=nan if xb is not None else 0, inf_b=inf if xb is not None else 0,
            note=f"only {have} has this output; {other} has no output to match it",
        )
    row = compare_arrays(name, xa, xb, atol=atol, rtol=rtol)
    notes = "; ".join(n for n in (note, row.note) if n)
    return OutputComparison(**{**row.__dict__, "name_b": name_b if name_b != name else None, "note": notes})


def _check_tolerance_names(config: CompareConfig, rows: Sequence[OutputComparison]) -> None:
    known = {r.name for r in rows} | {r.name_b for r in rows if r.name_b}
    for flag, given in (("--atol", config.output_atol), ("--rtol", config.output_rtol)):
        for name, _ in given:
            if name not in known:
                raise SpecError(
                    f"{flag} names output {name!r}, which neither side has. Outputs: "
                    f"{', '.join(repr(n) for n in sorted(known))}.{suggest_name(name, known)} Fix the name in {flag} NAME:VALUE"
                )


# -------------------------------------------------------------------- inputs

def _no_specs(a: str, b: str) -> SpecError:
    return SpecError(
        f"both {a!r} and {b!r} are PyTorch sources, so nothing says what the inputs are; "
        "make one side an ONNX model or engine (export it with `trtkit export`)"
    )


def _input_specs(sa: Source, sb: Source) -> tuple[TensorSpec, ...]:
    """A's input specs (B's if A is PyTorch); dynamic dims filled from the other side's static ones."""
    if sa.specs is None and sb.specs is None:
        raise _no_specs(sa.label, sb.label)
    if sa.specs is None or sb.specs is None:
        return sa.specs or sb.specs or ()
    names_a, names_b = [s.name for s in sa.specs], [s.name for s in sb.specs]
    if sorted(names_a) != sorted(names_b):
        raise ShapeError(f"A {sa.label!r} has inputs {names_a} but B {sb.label!r} has {names_b}; compare needs the same inputs")
    other = {s.name: s for s in sb.specs}
    return tuple(_merge(s, other[s.name], sa.label, sb.label) for s in sa.specs)


def _merge(a: TensorSpec, b: TensorSpec, label_a: str, label_b: str) -> TensorSpec:
    if a.dtype != b.dtype:
        raise DTypeError(
            f"input {a.name!r} is {a.dtype} in A {label_a!r} but {b.dtype} in B {label_b!r}; compare feeds both the "
            "same arrays and never casts. Use models with the same input dtypes (e.g. build the engine with fp32 I/O)"
        )
    if a.rank != b.rank or not all(isinstance(x, str) or isinstance(y, str) or x == y for x, y in zip(a.shape, b.shape)):
        raise ShapeError(f"input {a.name!r} is {a.display_shape()} in A {label_a!r} but {b.display_shape()} in B {label_b!r}; they cannot take the same array")
    return TensorSpec(a.name, a.dtype, tuple(y if isinstance(x, str) else x for x, y in zip(a.shape, b.shape)))


def compare(a: str, b: str, *, config: CompareConfig = CompareConfig(), inputs: Mapping[str, np.ndarray] | None = None) -> CompareResult:
    """Run A and B on the same inputs and compare every output; B is the reference."""
    if is_torch_source(str(a)) and is_torch_source(str(b)):
        raise _no_specs(str(a), str(b))
    with open_source(str(a), config=config.a) as sa, open_source(str(b), config=config.b) as sb:
        specs = _input_specs(sa, sb)
        prepared = prepare_inputs(specs, files=config.input_files, arrays=inputs, shapes=config.shapes, seed=config.seed)
        out_a, out_b = sa.run(prepared.arrays), sb.run(prepared.arrays)
        runtimes = sa.description, sb.description
        hints = tuple(_fresh_hint(side, src) for side, src in (("A", sa), ("B", sb)) if src.fresh)
    rows = tuple(_row(i, pair, config) for i, pair in enumerate(_match_outputs(out_a, out_b)))
    _check_tolerance_names(config, rows)
    return CompareResult(str(a), str(b), *runtimes, rows, prepared.arrays, prepared.origins, prepared.defaulted,
                         prepared.warnings, hints)


def _fresh_hint(side: str, source: Source) -> str:
    return (
        f"{side} {source.label!r} is a freshly constructed module (random weights?) — "
        f"pass --weights-{side.lower()} FILE (a state_dict) if it should hold trained weights"
    )
