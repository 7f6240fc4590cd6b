"""``trtkit export``: PyTorch module -> ONNX, checked against PyTorch before it is kept.

The exported file is only written (atomically) after ``onnx.checker`` passes
and ONNX Runtime (CPU) reproduces PyTorch's outputs on seeded random inputs at
the export shape and, for dynamic axes, at a second shape (batch 2, freed
spatial axes +32). A mismatch raises ExportError and leaves no file behind.

Exporter choice. torch 2.13 has two exporters:

* ``torchscript`` (``dynamo=False``, the default here): traces the module.
  On EfficientNet-Lite0 it exports in ~8 s on 2 CPU cores, honours
  ``--opset`` exactly and names dynamic dims as asked.
* ``dynamo`` (``torch.export``-based, torch's own default since 2.9): ~45 s for
  the same model, and it cannot emit opsets below 18 (asking for 17 gives 18
  after a failed down-conversion, with a traceback in the log), while older
  TensorRT parsers and tools expect 17. It handles data-dependent control flow
  better, so it stays one flag away (``--exporter dynamo``, opset 18 by
  default; an explicit lower ``--opset`` is refused).

Both pass the parity check on the test models and EfficientNet-Lite0.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from .._optional import require
from ..atomic import atomic_output, check_output_path
from ..errors import ExportError, ShapeError, SpecError
from ..measure.inputs import generate_at_shapes
from ..measure.tolerance import check_tolerances
from .onnx_io import OutputError, compare_outputs, io_specs, load_onnx, run_onnxruntime
from ..spec import Shape, TensorSpec, format_shapes, suggest_name
from .torch_source import load_module, load_module_with_note

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["ExportConfig", "ExportReport", "ParityCheck", "export", "load_module", "EXPORTERS", "DEFAULT_OPSET"]

EXPORTERS = ("torchscript", "dynamo")
DEFAULT_OPSET = 17  # widely supported by TensorRT 8.6-11 and ONNX Runtime
DYNAMO_MIN_OPSET = 18  # the dynamo exporter's lowest opset; below it torch tries (and fails) a down-conversion
SPATIAL_STEP = 32


def _pairs(value: Any, cast: Any) -> tuple[tuple[str, Any], ...]:
    items = value.items() if isinstance(value, Mapping) else value
    return tuple((str(n), cast(v)) for n, v in items)


def _ints(v: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in v)


def _dtype_name(v: Any) -> str:
    try:
        return np.dtype(v).name
    except TypeError:
        raise SpecError(f"input dtype {v!r} is not a numpy dtype name; use e.g. float32, float16, int64, int32, bool") from None


@dataclass(frozen=True)
class ExportConfig:
    """How to export. ``inputs`` gives every forward() argument's name and export shape, in order."""

    inputs: tuple[tuple[str, Shape], ...]  # a dict {name: shape} is accepted too
    input_dtypes: tuple[tuple[str, str], ...] = ()  # default float32; dicts are accepted for every pair field
    dynamic_batch: bool = False
    dynamic: tuple[tuple[str, tuple[int, ...]], ...] = ()
    opset: int | None = None  # None: DEFAULT_OPSET
    output_names: tuple[str, ...] = ()
    simplify: bool = False
    exporter: str = "torchscript"
    weights: str | None = None
    atol: float = 1e-4
    rtol: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", _pairs(self.inputs, _ints))
        object.__setattr__(self, "input_dtypes", _pairs(self.input_dtypes, _dtype_name))
        object.__setattr__(self, "dynamic", _pairs(self.dynamic, _ints))
        object.__setattr__(self, "output_names", tuple(self.output_names))
        check_tolerances([("atol", self.atol), ("rtol", self.rtol)])
        if not self.inputs:
            raise SpecError("export needs the input shapes, e.g. --input images:1x3x224x224")
        if self.exporter not in EXPORTERS:
            raise SpecError(f"exporter {self.exporter!r} is unknown; choose one of: {', '.join(EXPORTERS)}")
        if self.opset is not None and not 7 <= self.opset <= 25:
            raise SpecError(f"--opset {self.opset} is out of range; use 7..25 (default {DEFAULT_OPSET})")
        if self.exporter == "dynamo" and self.opset is not None and self.opset < DYNAMO_MIN_OPSET:
            raise SpecError(
                f"--opset {self.opset} conflicts with --exporter dynamo, which writes opset {DYNAMO_MIN_OPSET} or newer; "
                f"use --exporter torchscript for opset {self.opset}"
            )
        specs = self.specs()
        names = [s.name for s in specs]
        for flag, name in [("--input-dtype", n) for n, _ in self.input_dtypes] + [("--dynamic", n) for n, _ in self.dynamic]:
            if name not in names:
                raise ShapeError(
                    f"{flag} names input {name!r}, which --input does not give. "
                    f"Inputs: {', '.join(repr(n) for n in names)}.{suggest_name(name, names)}"
                )
        for name, axes in self.dynamic:
            rank = len(dict(self.inputs)[name])
            bad = [a for a in axes if not 0 <= a < rank]
            if bad:
                raise ShapeError(f"--dynamic {name}: axis {bad[0]} is out of range for rank-{rank} input {name!r}; use 0..{rank - 1}")

    def specs(self) -> tuple[TensorSpec, ...]:
        dtypes = dict(self.input_dtypes)
        return tuple(TensorSpec(n, dtypes.get(n, "float32"), s) for n, s in self.inputs)

    def dynamic_axes(self) -> dict[str, tuple[int, ...]]:
        """input name -> sorted axes that are exported dynamic."""
        axes: dict[str, set[int]] = {}
        for name, shape in self.inputs:
            if self.dynamic_batch and len(shape):
                axes.setdefault(name, set()).add(0)
        for name, wanted in self.dynamic:
            axes.setdefault(name, set()).update(wanted)
        return {n: tuple(sorted(a)) for n, a in axes.items()}


@dataclass(frozen=True)
class ParityCheck:
    """PyTorch vs ONNX Runtime at one set of input shapes."""

    shapes: str
    errors: tuple[OutputError, ...]

    @property
    def ok(self) -> bool:
        return all(e.ok for e in self.errors)


@dataclass(frozen=True)
class ExportReport:
    output: str
    exporter: str
    opset: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    checks: tuple[ParityCheck, ...]
    notes: tuple[str, ...] = ()

    @property
    def errors(self) -> tuple[OutputError, ...]:
        """Per-output errors of every parity check, in check order."""
        return tuple(e for c in self.checks for e in c.errors)

    def render(self) -> str:
        lines = [f"wrote {self.output} ({self.exporter} exporter, opset {self.opset})"]
        lines += [f"  input  {s.name}: {s.dtype} {s.display_shape()}" for s in self.inputs]
        lines += [f"  output {s.name}: {s.dtype} {s.display_shape()}" for s in self.outputs]
        for check in self.checks:
            lines.append(f"parity vs PyTorch (ONNX Runtime CPU) at {check.shapes}:")
            lines += [f"  {e.describe()}" for e in check.errors]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)




# ------------------------------------------------------------------ export


def _flatten(out: Any, torch: Any) -> list[Any]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        return [t for item in out for t in _flatten(item, torch)]
    if isinstance(out, dict):
        return [t for item in out.values() for t in _flatten(item, torch)]
    raise ExportError(f"forward() returned a {type(out).__name__}; ONNX export needs tensors (or tuples/lists/dicts of them)")


def _run_torch(model: Any, feeds: Mapping[str, np.ndarray], torch: Any) -> list[np.ndarray]:
    args = tuple(torch.from_numpy(a) for a in feeds.values())
    try:
        with torch.no_grad():
            out = model(*args)
    except Exception as exc:  # noqa: BLE001 - user code; a wrong --input is the usual cause
        shapes = ", ".join(f"{n} {a.dtype}[{'x'.join(map(str, a.shape))}]" for n, a in feeds.items())
        ints = [n for n, a in feeds.items() if a.dtype.kind in "iu"]
        range_note = (
            f" Integer inputs ({', '.join(ints)}) are generated uniform in [0, 25) (Polygraphy's default, as in "
            "trtkit run and compare): a model whose ids must stay below 25 cannot be checked on generated data"
            if ints and isinstance(exc, IndexError) else ""
        )
        raise ExportError(
            f"running the PyTorch model on {shapes} raised {type(exc).__name__}: {exc}. "
            "Check that --input gives forward()'s arguments in order with the right shapes and --input-dtype."
            + range_note
        ) from exc
    return [t.detach().cpu().numpy() for t in _flatten(out, torch)]


def _identifier(text: str) -> str:
    return re.sub(r"\W", "_", text) or "dim"


def _input_dim_names(config: ExportConfig) -> dict[str, dict[int, str]]:
    specs = config.specs()
    several = len(specs) > 1
    names: dict[str, dict[int, str]] = {}
    for spec in specs:
        for axis in config.dynamic_axes().get(spec.name, ()):
            if axis == 0:
                label = "batch"
            else:
                base = {2: "height", 3: "width"}.get(axis) if spec.rank == 4 else None
                label = f"{_identifier(spec.name)}_{base}" if base and several else base or f"{_identifier(spec.name)}_dim{axis}"
            names.setdefault(spec.name, {})[axis] = label
    return names


def _second_shapes(config: ExportConfig) -> dict[str, Shape] | None:
    """Batch + 1 and spatial + 32 on every dynamic axis: the parity check's second point."""
    axes = config.dynamic_axes()
    if not axes:
        return None
    return {
        n: tuple(d + (1 if a == 0 else SPATIAL_STEP) if a in axes.get(n, ()) else d for a, d in enumerate(s))
        for n, s in config.inputs
    }


def _output_names(config: ExportConfig, count: int) -> list[str]:
    if config.output_names:
        if len(config.output_names) != count:
            raise ExportError(
                f"--output-names gives {len(config.output_names)} name(s) ({', '.join(config.output_names)}) "
                f"but forward() returns {count} tensor(s); give exactly {count}"
            )
        return list(config.output_names)
    return ["output"] if count == 1 else [f"output{i}" for i in range(count)]


def _output_dim_names(names: Sequence[str], first: list[np.ndarray], second: list[np.ndarray] | None,
                      batch: bool) -> dict[str, dict[int, str]]:
    """Output axes whose size changed between the two PyTorch runs are dynamic."""
    if second is None:
        return {}
    out: dict[str, dict[int, str]] = {}
    for name, a, b in zip(names, first, second):
        for axis, (x, y) in enumerate(zip(a.shape, b.shape)):
            if x != y:
                out.setdefault(name, {})[axis] = "batch" if axis == 0 and batch else f"{_identifier(name)}_dim{axis}"
    return out


def _call_exporter(model: Any, args: tuple[Any, ...], path: Path, *, config: ExportConfig, in_names: list[str],
                   out_names: list[str], axes: dict[str, dict[int, str]], torch: Any) -> list[str]:
    """Run torch.onnx.export; return the TracerWarnings it raised (hints when parity fails)."""
    opset = config.opset or (DEFAULT_OPSET if config.exporter == "torchscript" else DYNAMO_MIN_OPSET)
    kwargs: dict[str, Any] = {"input_names": in_names, "output_names": out_names, "opset_version": opset}
    if config.exporter == "torchscript":
        kwargs.update(dynamo=False, dynamic_axes=axes or None, do_constant_folding=True)
    else:
        dims: dict[str, Any] = {}
        shapes = tuple(
            {a: dims.setdefault(label, torch.export.Dim(label)) for a, label in axes.get(n, {}).items()} or None
            for n in in_names
        )
        kwargs.update(dynamo=True, dynamic_shapes=shapes if any(shapes) else None, optimize=True)
    sink = io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(sink):
        warnings.simplefilter("always")
        try:
            torch.onnx.export(model, args, str(path), **kwargs)
        except Exception as exc:  # noqa: BLE001 - exporter internals raise many types; all become ExportError
            other = "dynamo" if config.exporter == "torchscript" else "torchscript"
            raise ExportError(
                f"torch.onnx.export ({config.exporter} exporter, opset {opset}) failed: {type(exc).__name__}: "
                f"{str(exc).strip()[:2000]}. Try --exporter {other}, or another --opset"
            ) from exc
    return sorted({str(w.message).splitlines()[0] for w in caught if w.category.__name__ == "TracerWarning"})


def _check_and_simplify(path: Path, *, simplify: bool) -> str | None:
    """onnx.checker, then (``--simplify``) onnxslim; returns a note saying what onnxslim did."""
    onnx = require("onnx")
    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the exported ONNX model fails onnx.checker: {exc}") from None
    if simplify:
        slim = require("onnxslim", purpose="--simplify")
        before = len(onnx.load(str(path), load_external_data=False).graph.node)
        slimmed = slim.slim(str(path))
        if slimmed is None:
            raise ExportError("onnxslim could not simplify the exported model; export without --simplify")
        path.write_bytes(slimmed.SerializeToString())
        return f"simplified with onnxslim: {before} -> {len(slimmed.graph.node)} nodes"
    return None


def _parity(path: Path, model: Any, feeds: dict[str, np.ndarray], ref: list[np.ndarray], out_names: list[str],
            config: ExportConfig) -> ParityCheck:
    try:
        got = run_onnxruntime(path, feeds)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises several pybind types
        raise ExportError(f"ONNX Runtime cannot run the exported model at {format_shapes({n: a.shape for n, a in feeds.items()})}: {exc}") from None
    errors = compare_outputs(dict(zip(out_names, ref)), got, atol=config.atol, rtol=config.rtol)
    return ParityCheck(format_shapes({n: a.shape for n, a in feeds.items()}), errors)


def _parity_error(check: ParityCheck, tracer: list[str], config: ExportConfig) -> ExportError:
    table = "; ".join(e.describe() for e in check.errors if not e.ok)
    hint = f" PyTorch warned while tracing: {' | '.join(tracer[:3])}." if tracer else ""
    return ExportError(
        f"ONNX Runtime does not reproduce PyTorch at {check.shapes} (atol {config.atol}, rtol {config.rtol}): {table}.{hint} "
        "If the module turns shapes into Python numbers, export with a static shape or --exporter dynamo; "
        "if the differences are numerical noise, raise --atol/--rtol"
    )


def _source_files(source: str, config: ExportConfig) -> tuple[str, ...]:
    """The files export reads (FILE.py of the source, --weights): the output must not overwrite them."""
    where = source.rpartition(":")[0]
    files = [where] if where and Path(where).is_file() else []
    return tuple(files + ([config.weights] if config.weights else []))


def export(source: str, output: str | os.PathLike[str], *, config: ExportConfig) -> ExportReport:
    """Export ``source`` (FILE.py:NAME or package.module:NAME) to ONNX at ``output``, verified against PyTorch."""
    target = check_output_path(output, what="ONNX output", inputs=_source_files(source, config))
    torch = require("torch", purpose="trtkit export")
    model, note = load_module_with_note(source, weights=config.weights)
    specs = config.specs()
    first = generate_at_shapes(specs, dict(config.inputs), seed=config.seed)
    second_shapes = _second_shapes(config)
    second = generate_at_shapes(specs, second_shapes, seed=config.seed + 1) if second_shapes else None
    ref1 = _run_torch(model, first, torch)
    ref2 = _run_torch(model, second, torch) if second else None
    out_names = _output_names(config, len(ref1))
    in_names = [s.name for s in specs]
    batch = any(0 in a for a in config.dynamic_axes().values())
    axes = {**_input_dim_names(config), **_output_dim_names(out_names, ref1, ref2, batch)}
    args = tuple(torch.from_numpy(a) for a in first.values())
    with atomic_output(target, what="ONNX output") as tmp:
        tracer = _call_exporter(model, args, tmp, config=config, in_names=in_names, out_names=out_names, axes=axes, torch=torch)
        slim_note = _check_and_simplify(tmp, simplify=config.simplify)
        checks = [_parity(tmp, model, first, ref1, out_names, config)]
        if second is not None and ref2 is not None:
            checks.append(_parity(tmp, model, second, ref2, out_names, config))
        for check in checks:
            if not check.ok:
                raise _parity_error(check, tracer, config)
        onnx_model = load_onnx(tmp, external_data=False)
    inputs, outputs = io_specs(onnx_model)
    opset = next((o.version for o in onnx_model.opset_import if o.domain in ("", "ai.onnx")), 0)
    notes = [n for n in (note, slim_note) if n] + [f"PyTorch TracerWarning: {w}" for w in tracer[:3]]
    if config.opset and opset != config.opset:
        notes.append(f"the {config.exporter} exporter wrote opset {opset}, not the requested {config.opset}")
    return ExportReport(str(target), config.exporter, int(opset), inputs, outputs, tuple(checks), tuple(notes))
