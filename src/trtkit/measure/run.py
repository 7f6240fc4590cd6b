"""What `run` and `compare` execute: a model file (ONNX or engine) or a PyTorch source.

A *source* is a path to ``.onnx``/``.plan``/``.engine``/``.trt`` (opened with
:func:`trtkit.load`) or a PyTorch module reference, ``file.py:factory`` or
``pkg.mod:attr`` (loaded with ``trtkit.graph.torch_source.load_torch_source``, run in eval mode
under ``torch.no_grad()`` on CPU). Every source runs on numpy arrays and
returns ``[(name or None, array), ...]`` in output order.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .._optional import require
from ..atomic import atomic_output, check_output_path
from .inputs import ArrayStats, array_stats, prepare_inputs
from ..backends import resolve_backend
from ..errors import SpecError
from ..spec import RuntimeConfig, TensorSpec

__all__ = [
    "SourceConfig",
    "Source",
    "open_source",
    "is_torch_source",
    "RunConfig",
    "RunResult",
    "run_model",
    "check_save_path",
]

_MODULE_REF = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


@dataclass(frozen=True)
class SourceConfig:
    """How to open one source. ``weights`` applies to PyTorch sources only."""

    backend: str = "auto"  # "auto" or a name/alias of trtkit.backends.BACKENDS
    weights: str | None = None
    runtime: RuntimeConfig = RuntimeConfig()

    def __post_init__(self) -> None:
        if self.backend != "auto":
            resolve_backend(self.backend)  # raises SpecError naming the choices


def is_torch_source(text: str) -> bool:
    """``file.py:factory`` or ``pkg.mod:attr`` that is not an existing file."""
    if Path(text).exists() or ":" not in text:
        return False
    head, _, attr = text.rpartition(":")
    return bool(attr) and (head.endswith(".py") or bool(_MODULE_REF.match(text)))


class Source:
    """One runnable side of a comparison. ``specs`` is None for PyTorch sources (they take the other side's).

    ``fresh`` is True for a PyTorch class constructed without weights: its
    outputs come from a random init, the usual reason a comparison fails.
    """

    label: str
    specs: tuple[TensorSpec, ...] | None = None
    description: str = ""
    fresh: bool = False

    def run(self, arrays: Mapping[str, np.ndarray]) -> list[tuple[str | None, np.ndarray]]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _ModelSource(Source):
    def __init__(self, path: str, config: SourceConfig) -> None:
        from ..backends import load, runtime_for

        if config.weights:
            raise SpecError(
                f"weights {config.weights!r} were given for {path!r}, a model file that already holds its "
                "weights; --weights applies to PyTorch sources (file.py:factory) only"
            )
        name, runtime = runtime_for(config.backend, base=config.runtime)
        self.label = path
        self.backend = load(path, backend=name, config=runtime)
        self.specs = tuple(self.backend.inputs)
        self.description = f"{self.backend.name} ({getattr(self.backend, 'device', runtime.device)})"
        fusions = getattr(self.backend, "fusions", None)
        if fusions is not None and fusions.total:
            self.description += f", fused: {fusions}"

    def run(self, arrays: Mapping[str, np.ndarray]) -> list[tuple[str | None, np.ndarray]]:
        return [(n, np.asarray(v)) for n, v in self.backend.infer(dict(arrays)).items()]

    def close(self) -> None:
        self.backend.close()


class _TorchSource(Source):
    def __init__(self, ref: str, config: SourceConfig) -> None:
        if config.backend != "auto":
            raise SpecError(
                f"backend {config.backend!r} was given for PyTorch source {ref!r}; PyTorch sources run in torch "
                "on the CPU, so drop the backend option for that side"
            )
        self.torch = require("torch", purpose=f"running PyTorch source {ref!r}")
        from ..graph.torch_source import load_torch_source  # imports torch lazily

        self.label = ref
        loaded = load_torch_source(ref, weights=config.weights)
        self.module, self.fresh = loaded.module, loaded.fresh
        self.module.eval()
        self.description = f"torch {self.torch.__version__} (cpu, eval, no_grad)"

    def run(self, arrays: Mapping[str, np.ndarray]) -> list[tuple[str | None, np.ndarray]]:
        # Copies: a module may modify its inputs in place, and the other side needs them intact.
        args = [self.torch.from_numpy(np.array(a, copy=True)) for a in arrays.values()]
        with self.torch.no_grad():
            result = self.module(*args)
        return _flatten(result, self.torch, self.label)


def _flatten(value: Any, torch: Any, label: str, name: str | None = None) -> list[tuple[str | None, np.ndarray]]:
    """Tensor -> one output; list/tuple -> in order; dict -> by key. None entries are dropped, as ONNX export does."""
    if value is None:
        return []
    if isinstance(value, torch.Tensor):
        return [(name, value.detach().cpu().numpy())]
    if isinstance(value, Mapping):
        out: list[tuple[str | None, np.ndarray]] = []
        for key, item in value.items():
            out += _flatten(item, torch, label, str(key))
        return out
    if isinstance(value, (list, tuple)):
        return [entry for item in value for entry in _flatten(item, torch, label)]
    if isinstance(value, (int, float, bool, np.ndarray)):
        return [(name, np.asarray(value))]
    raise SpecError(
        f"PyTorch source {label!r} returned a {type(value).__name__}; compare needs tensors, "
        "or a tuple/list/dict of tensors"
    )


def open_source(text: str, *, config: SourceConfig = SourceConfig()) -> Source:
    """Open a model file or a PyTorch source for running."""
    if is_torch_source(text):
        return _TorchSource(text, config)
    return _ModelSource(text, config)


# ------------------------------------------------------------------ run

@dataclass(frozen=True)
class RunConfig:
    """What `trtkit run` does: which backend, where inputs come from, which shapes and seed."""

    source: SourceConfig = SourceConfig()
    input_files: tuple[str, ...] = ()  # NAME=FILE.npy, NAME=FILE.npz or FILE.npz
    shapes: Mapping[str, tuple[int, ...]] | None = None
    seed: int = 0


@dataclass(frozen=True)
class RunResult:
    """Inputs used and outputs produced by one run, with summaries for printing."""

    model: str
    backend: str
    inputs: dict[str, np.ndarray]
    origins: dict[str, str]
    outputs: dict[str, np.ndarray]
    defaulted: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "backend": self.backend,
            "inputs": {n: {**array_stats(a).to_json(), "source": self.origins[n]} for n, a in self.inputs.items()},
            "outputs": {n: array_stats(a).to_json() for n, a in self.outputs.items()},
            "defaulted_batch": list(self.defaulted),
            "warnings": list(self.warnings),
        }

    def render(self) -> str:
        lines = [f"model: {self.model}  [{self.backend}]", "inputs:"]
        lines += _table([_stats_row(n, array_stats(a), self.origins[n]) for n, a in self.inputs.items()], source=True)
        lines.append("outputs:")
        lines += _table([_stats_row(n, array_stats(a)) for n, a in self.outputs.items()], source=False)
        return "\n".join(lines)

    def save(self, path: str | Path) -> Path:
        """Write the outputs to an .npz (keys = output names), atomically."""
        target = check_save_path(path)
        with atomic_output(target, what="--save") as tmp:
            _write_npz(tmp, self.outputs)
        return target


def _write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """What np.savez does, written out: savez(file, **arrays) breaks on an output named 'file'."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, arr in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.asanyarray(arr), allow_pickle=False)


def check_save_path(path: str | Path) -> Path:
    """Validate a --save path before running anything."""
    p = Path(path)
    if p.suffix.lower() != ".npz":
        raise SpecError(f"--save {str(p)!r}: outputs are saved as a numpy .npz archive; name the file OUT.npz")
    return check_output_path(p, what="--save")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def _stats_row(name: str, st: ArrayStats, origin: str | None = None) -> list[str]:
    row = [name, st.dtype, "[" + ",".join(map(str, st.shape)) + "]", _fmt(st.min), _fmt(st.max), _fmt(st.mean),
           str(st.nan), str(st.inf)]
    return row + ([origin] if origin is not None else [])


def _table(rows: list[list[str]], *, source: bool) -> list[str]:
    head = ["name", "dtype", "shape", "min", "max", "mean", "NaN", "Inf"] + (["from"] if source else [])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows]]


def run_model(model: str, *, config: RunConfig = RunConfig(), arrays: Mapping[str, np.ndarray] | None = None) -> RunResult:
    """Run a model file once on given, loaded or generated inputs (see :mod:`trtkit.measure.inputs`)."""
    if is_torch_source(model):
        raise SpecError(f"`run` takes a model file (.onnx or an engine), got PyTorch source {model!r}; use `trtkit compare`")
    with open_source(model, config=config.source) as src:
        prepared = prepare_inputs(src.specs or (), files=config.input_files, arrays=arrays, shapes=config.shapes, seed=config.seed)
        outputs = {str(n): a for n, a in src.run(prepared.arrays)}
        return RunResult(model, src.description, prepared.arrays, prepared.origins, outputs, prepared.defaulted, prepared.warnings)
