"""Loading, saving and running ONNX models with errors a user can act on.

``onnx.load`` reports a truncated file, a JPEG renamed to ``.onnx`` and a
missing external-data file as protobuf or checker internals; :func:`load_onnx`
turns each into a :class:`~trtkit.errors.ModelLoadError` that names the file
and the fix. :func:`io_specs` is the one place that maps graph inputs/outputs
to :class:`~trtkit.spec.TensorSpec`, so every command shows the same table.

``onnx`` is imported inside functions: this module is imported by commands
that ``import trtkit`` may reach.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

import numpy as np

from .._optional import require
from ..atomic import atomic_output
from ..measure.tolerance import elementwise_errors
from ..errors import ModelLoadError
from ..spec import TensorSpec, format_shape

if TYPE_CHECKING:  # pragma: no cover
    import onnx

__all__ = [
    "load_onnx",
    "io_specs",
    "save_onnx",
    "iter_tensors",
    "graph_constants",
    "run_onnxruntime",
    "OutputError",
    "compare_outputs",
]

# protobuf cannot serialize a single message above 2 GiB; bigger models need external data.
_PROTO_LIMIT = 2**31 - 2**20


def _check_file(path: Path) -> None:
    if not path.exists():
        raise ModelLoadError(f"ONNX model {str(path)!r} does not exist; check the path")
    if path.is_dir():
        raise ModelLoadError(f"ONNX model path {str(path)!r} is a directory; give the .onnx file inside it")
    if path.stat().st_size == 0:
        raise ModelLoadError(f"ONNX model {str(path)!r} is empty (0 bytes); re-export or re-download it")


def _sniff(path: Path) -> str:
    """Name a few common non-ONNX formats so the error says what the file really is."""
    with path.open("rb") as fh:
        head = fh.read(16)
    kinds = {
        b"\xff\xd8\xff": "a JPEG image",
        b"\x89PNG": "a PNG image",
        b"PK\x03\x04": "a zip archive (a PyTorch .pt/.pth checkpoint is a zip; export it with `trtkit export`)",
        b"ftrt": "a TensorRT engine",
        b"\x7fELF": "an ELF binary",
        b"%PDF": "a PDF document",
    }
    for magic, kind in kinds.items():
        if head.startswith(magic) or (magic == b"ftrt" and magic in head):
            return kind
    if head[:1] in (b"{", b"[", b"<") or (head and all(32 <= b < 127 or b in (9, 10, 13) for b in head)):
        return "a text file"
    return ""


def _not_onnx(path: Path, detail: str) -> ModelLoadError:
    kind = _sniff(path)
    what = f"it looks like {kind}" if kind else f"it is truncated or corrupt ({detail})"
    return ModelLoadError(
        f"{str(path)!r} ({path.stat().st_size} bytes) is not a valid ONNX model: {what}; "
        "check that the download or export finished, and that this is the .onnx file"
    )


def iter_tensors(graph: "onnx.GraphProto") -> Iterator["onnx.TensorProto"]:
    """Every TensorProto in ``graph``: initializers and Constant/attribute tensors, subgraphs included."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from iter_tensors(attr.g)
            for sub in attr.graphs:
                yield from iter_tensors(sub)


def graph_constants(graph: "onnx.GraphProto") -> dict[str, np.ndarray]:
    """Values of the initializers held in the file and of the Constant nodes (``value`` attribute)."""
    from onnx import numpy_helper

    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer if t.data_location != 1}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
    return values


def _external_location(tensor: "onnx.TensorProto") -> str | None:
    if tensor.data_location != 1:  # onnx.TensorProto.EXTERNAL
        return None
    return next((e.value for e in tensor.external_data if e.key == "location"), None)


def _check_external_files(model: "onnx.ModelProto", path: Path) -> None:
    base = path.resolve().parent
    missing: dict[str, str] = {}
    for tensor in iter_tensors(model.graph):
        loc = _external_location(tensor)
        if loc is not None and not (base / loc).is_file():
            missing.setdefault(loc, tensor.name)
    if missing:
        loc, name = next(iter(missing.items()))
        raise ModelLoadError(
            f"ONNX model {str(path)!r} keeps its weights in external data file(s) "
            f"{', '.join(repr(m) for m in missing)}, but {str(base / loc)!r} (tensor {name!r}) is missing; "
            "copy the data file(s) next to the .onnx file, keeping their names"
        )


def load_onnx(path: str | os.PathLike[str], *, external_data: bool = True) -> "onnx.ModelProto":
    """Load an ONNX model, turning every way it can be broken into a ModelLoadError.

    With ``external_data=False`` the weights stored in external files are not
    read (fast for inspection), but the files must still exist.
    """
    onnx = require("onnx")
    from google.protobuf.message import DecodeError

    p = Path(path)
    _check_file(p)
    try:
        model = onnx.load(str(p), load_external_data=False)
    except (DecodeError, RuntimeWarning, ValueError) as exc:
        raise _not_onnx(p, str(exc)) from None
    if model.ir_version <= 0 or not model.HasField("graph") or not model.opset_import:
        raise _not_onnx(p, "no IR version, graph or opset")
    _check_external_files(model, p)
    if external_data:
        from onnx.external_data_helper import load_external_data_for_model

        try:
            load_external_data_for_model(model, str(p.resolve().parent))
        except (OSError, ValueError, onnx.checker.ValidationError) as exc:
            raise ModelLoadError(f"cannot read the external data of ONNX model {str(p)!r}: {exc}") from None
    return model


def _spec(value: "onnx.ValueInfoProto") -> TensorSpec:
    from onnx import helper

    ttype = value.type.tensor_type
    try:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(ttype.elem_type)).name
    except (KeyError, TypeError, ValueError):
        dtype = "unknown"
    if ttype.elem_type == 16:  # BFLOAT16: numpy has no name for it
        dtype = "bfloat16"
    dims: list[int | str] = []
    if ttype.HasField("shape"):
        for d in ttype.shape.dim:
            if d.HasField("dim_value") and d.dim_value >= 0:
                dims.append(int(d.dim_value))
            else:
                dims.append(d.dim_param or "?")
    return TensorSpec(value.name, dtype, tuple(dims))


def io_specs(model: "onnx.ModelProto") -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """(inputs, outputs) of the main graph. Initializers listed as inputs (IR < 4 style) are left out."""
    weights = {t.name for t in model.graph.initializer}
    inputs = tuple(_spec(v) for v in model.graph.input if v.name not in weights)
    outputs = tuple(_spec(v) for v in model.graph.output)
    return inputs, outputs


def save_onnx(model: "onnx.ModelProto", path: str | os.PathLike[str]) -> Path:
    """Write ``model`` atomically; above protobuf's 2 GiB limit the weights go to ``<name>.data``."""
    onnx = require("onnx")
    target = Path(path)
    with atomic_output(target, what="ONNX output") as tmp:
        if model.ByteSize() < _PROTO_LIMIT:
            tmp.write_bytes(model.SerializeToString())
        else:
            onnx.save_model(
                model, str(tmp), save_as_external_data=True, all_tensors_to_one_file=True, location=f"{target.name}.data"
            )
    return target


# ------------------------------------------------------------------ running


def run_onnxruntime(model: "onnx.ModelProto | str | os.PathLike[str]", feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run once with ONNX Runtime on the CPU. Raises ``onnxruntime``'s own errors; callers word them."""
    ort = require("onnxruntime")
    opts = ort.SessionOptions()
    # Fatal only: every ORT failure is re-raised by the caller with its message, so ORT's own
    # colored "[E:onnxruntime:...]" log line would print the same error twice, before ours.
    opts.log_severity_level = 4
    source: Any = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    session = ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, dict(feeds))))


@dataclass(frozen=True)
class OutputError:
    """How far one output is from its reference: max |a-b| and max |a-b| / |b|."""

    name: str
    shape: tuple[int, ...]
    max_abs: float
    max_rel: float
    ok: bool
    expected_shape: tuple[int, ...] | None = None  # the reference's shape, when it differs

    def describe(self) -> str:
        if self.expected_shape is not None and self.expected_shape != self.shape:
            return f"{self.name}: shape [{format_shape(self.shape)}], expected [{format_shape(self.expected_shape)}]  MISMATCH"
        flag = "ok" if self.ok else "MISMATCH"
        return f"{self.name} [{format_shape(self.shape)}]: max abs {self.max_abs:.3g}, max rel {self.max_rel:.3g}  {flag}"


def compare_outputs(
    reference: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray], *, atol: float, rtol: float
) -> tuple[OutputError, ...]:
    """Per-output errors, judged by trtkit's one tolerance rule (:mod:`trtkit.measure.tolerance`, Polygraphy's)."""
    errors = []
    for name, ref in reference.items():
        ref = np.asarray(ref)
        out = np.asarray(got[name])
        if out.shape != ref.shape:
            errors.append(OutputError(name, tuple(out.shape), float("inf"), float("inf"), False, tuple(ref.shape)))
            continue
        if ref.size == 0:
            errors.append(OutputError(name, tuple(out.shape), 0.0, 0.0, True))
            continue
        diff, rel, mismatch = elementwise_errors(out, ref, atol=atol, rtol=rtol)
        errors.append(OutputError(name, tuple(out.shape), float(np.nanmax(diff)), float(np.nanmax(rel)), not mismatch.any()))
    return tuple(errors)
