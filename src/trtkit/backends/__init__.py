"""The backend table and :func:`load`.

One table (``BACKENDS``) holds every backend name, its aliases, the file suffixes it opens when
``backend="auto"``, and the device it implies; CLI choices and help are derived from it. A new
backend is one module plus one line here: an entry whose ``factory`` is ``"module:callable"``,
the callable taking ``(path, *, config)`` and returning a Backend.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError, SpecError, Spelling
from ..spec import RuntimeConfig
from .base import Backend, BackendBase, normalize_feeds

__all__ = [
    "BACKENDS",
    "BackendEntry",
    "ENGINE_SUFFIXES",
    "load",
    "backend_class",
    "resolve_backend",
    "backend_for_path",
    "backend_choices",
    "backend_help",
    "runtime_for",
    "Backend",
    "BackendBase",
    "normalize_feeds",
]


@dataclass(frozen=True)
class BackendEntry:
    """One row of the backend table."""

    name: str
    factory: str  # "module:callable", called as callable(path, config=RuntimeConfig)
    device: str  # the device it runs on: "cpu" or "cuda"
    help: str
    suffixes: tuple[str, ...] = ()  # files it opens under backend="auto"
    aliases: tuple[str, ...] = ()


BACKENDS: dict[str, BackendEntry] = {e.name: e for e in (
    BackendEntry("onnxruntime", "trtkit.backends.onnxruntime:open_onnxruntime", "cpu", "ONNX Runtime on the CPU",
                 suffixes=(".onnx",), aliases=("ort-cpu",)),
    BackendEntry("ort-cuda", "trtkit.backends.onnxruntime:open_onnxruntime", "cuda",
                 "ONNX Runtime's CUDA execution provider (IO binding, pinned buffers)"),
    BackendEntry("tensorrt", "trtkit.backends.tensorrt:TensorRTBackend", "cuda",
                 "a TensorRT or TensorRT-RTX engine", suffixes=(".plan", ".engine", ".trt")),
)}

ENGINE_SUFFIXES = BACKENDS["tensorrt"].suffixes


def backend_choices() -> list[str]:
    """Every name the CLI accepts for --backend: auto, each backend, each alias."""
    return ["auto", *BACKENDS, *(a for e in BACKENDS.values() for a in e.aliases)]


def backend_help() -> str:
    """One line for --backend's help, from the table."""
    rows = [f"{'/'.join((e.name, *e.aliases))} ({e.help})" for e in BACKENDS.values()]
    return "runtime: auto (by file extension), " + ", ".join(rows)


def resolve_backend(choice: str) -> BackendEntry:
    """The table entry for a backend name or alias."""
    for entry in BACKENDS.values():
        if choice == entry.name or choice in entry.aliases:
            return entry
    raise SpecError(f"unknown backend {choice!r}; choose one of: {', '.join(backend_choices())}")


def backend_for_path(path: Path) -> BackendEntry:
    """The entry that opens ``path`` under backend="auto", by file suffix."""
    suffix = path.suffix.lower()
    for entry in BACKENDS.values():
        if suffix in entry.suffixes:
            return entry
    known = ", ".join(s for e in BACKENDS.values() for s in e.suffixes)
    names = "|".join(BACKENDS)
    raise ModelLoadError(
        f"cannot tell which backend runs {str(path)!r} from its extension {suffix or '(none)'!r}: expected one of "
        f"{known}. Give a model file, rename it, or choose a backend with {{backend}}",
        spellings={"backend": Spelling(python=f"backend='{names}'", cli=f"--backend {names}")},
    )


def runtime_for(choice: str, *, base: RuntimeConfig = RuntimeConfig()) -> tuple[str, RuntimeConfig]:
    """A backend choice ("auto", a name or an alias) -> (choice for :func:`load`, RuntimeConfig on its device)."""
    if choice == "auto":
        return choice, base
    entry = resolve_backend(choice)
    return entry.name, dataclasses.replace(base, device=entry.device)


def backend_class(name: str) -> Any:
    module, _, attr = resolve_backend(name).factory.partition(":")
    return getattr(importlib.import_module(module), attr)


def load(path: str | os.PathLike[str], *, backend: str = "auto", config: RuntimeConfig | None = None) -> Backend:
    """Open a model for inference and return a Backend.

    ``backend="auto"`` picks by suffix: ``.onnx`` opens with ONNX Runtime, ``.plan``/``.engine``/``.trt``
    with TensorRT or TensorRT-RTX. A backend that runs on the GPU (``ort-cuda``, ``tensorrt``) sets
    ``config.device`` to ``"cuda"``; ``config`` picks threads, device id, contexts and so on.
    """
    p = Path(path)
    if not p.exists():
        raise ModelLoadError(f"model file {str(p)!r} does not exist; check the path")
    if p.is_dir():
        raise ModelLoadError(f"model path {str(p)!r} is a directory; give the .onnx or engine file inside it")
    entry = backend_for_path(p) if backend == "auto" else resolve_backend(backend)
    config = config or RuntimeConfig()
    if entry.device == "cuda":
        config = dataclasses.replace(config, device="cuda")
    module, _, attr = entry.factory.partition(":")
    return getattr(importlib.import_module(module), attr)(p, config=config)
