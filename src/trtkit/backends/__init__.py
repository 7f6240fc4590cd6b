"""Backend registry and :func:`load`.

A new backend is one module plus one line in ``BACKENDS``. Each entry maps a
backend name to ``"module:callable"``; the callable takes ``(path, *, config)``
and returns a Backend.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError, SpecError
from ..spec import RuntimeConfig
from .base import Backend, BackendBase, normalize_feeds

__all__ = ["BACKENDS", "ENGINE_SUFFIXES", "load", "backend_class", "Backend", "BackendBase", "normalize_feeds"]

BACKENDS: dict[str, str] = {
    "onnxruntime": "trtkit.backends.onnxruntime:open_onnxruntime",
    "tensorrt": "trtkit.backends.tensorrt:TensorRTBackend",
}

ENGINE_SUFFIXES = (".plan", ".engine", ".trt")


def backend_class(name: str) -> Any:
    if name not in BACKENDS:
        raise SpecError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")
    module, _, attr = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def _pick(path: Path, backend: str) -> str:
    if backend != "auto":
        return backend
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return "onnxruntime"
    if suffix in ENGINE_SUFFIXES:
        return "tensorrt"
    raise ModelLoadError(
        f"cannot tell which backend runs {str(path)!r} from its extension {suffix or '(none)'!r}; "
        f"expected .onnx or one of {', '.join(ENGINE_SUFFIXES)}, or pass backend= explicitly"
    )


def load(path: str | os.PathLike[str], *, backend: str = "auto", config: RuntimeConfig | None = None) -> Backend:
    """Open a model for inference and return a Backend.

    ``.onnx`` opens with ONNX Runtime; ``.plan``/``.engine``/``.trt`` with
    TensorRT or TensorRT-RTX. ``config`` picks the device, threads and so on.
    """
    p = Path(path)
    if not p.exists():
        raise ModelLoadError(f"model file {str(p)!r} does not exist; check the path")
    if p.is_dir():
        raise ModelLoadError(f"model path {str(p)!r} is a directory; give the .onnx or engine file inside it")
    cls = backend_class(_pick(p, backend))
    return cls(p, config=config or RuntimeConfig())
