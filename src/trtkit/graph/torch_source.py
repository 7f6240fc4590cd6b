"""Load a PyTorch model from ``FILE.py:NAME`` or ``package.module:NAME`` (+ optional weights).

Used by ``trtkit export`` and by ``trtkit compare`` against a PyTorch source.
User code runs here, so every failure it can raise is turned into an
ExportError that names the source and what was expected.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._optional import require
from ..errors import ExportError
from ..spec import suggest_name

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["LoadedModule", "load_module", "load_module_with_note", "load_torch_source"]


def _import_file(path: Path) -> Any:
    if not path.is_file():
        raise ExportError(f"model source file {str(path)!r} does not exist; give FILE.py:FACTORY with an existing file")
    name = f"trtkit_source_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ExportError(f"cannot import {str(path)!r} as Python; give a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, str(path.resolve().parent))  # so the file's own sibling imports work
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - user code; any failure becomes a clear ExportError
        sys.modules.pop(name, None)
        raise ExportError(f"importing model source {str(path)!r} raised {type(exc).__name__}: {exc}") from exc
    finally:
        sys.path.remove(str(path.resolve().parent))
    return module


def _import_module(name: str) -> Any:
    """Import ``package.module`` with the current directory on the path, as ``python -m`` has it.

    The ``trtkit`` console script runs with its own bin directory as ``sys.path[0]``, so a
    ``my_model.py`` beside the user would not be found; the directory is added for this import only.
    """
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        raise ExportError(
            f"cannot import module {name!r} ({exc}) from the current directory {cwd!r} or the installed packages; "
            "give an importable package.module:ATTR, or FILE.py:ATTR"
        ) from None
    except Exception as exc:  # noqa: BLE001 - user code
        raise ExportError(f"importing module {name!r} raised {type(exc).__name__}: {exc}") from exc
    finally:
        if added:
            sys.path.remove(cwd)


def _instantiate(obj: Any, source: str, torch: Any) -> "torch.nn.Module":
    if isinstance(obj, torch.nn.Module):
        return obj
    if not callable(obj):
        raise ExportError(f"{source!r} is a {type(obj).__name__}, not an nn.Module or a zero-argument factory")
    try:
        obj = obj()
    except TypeError as exc:
        raise ExportError(
            f"calling {source!r} with no arguments failed ({exc}); point SOURCE at a zero-argument factory "
            "or class, or at a module instance"
        ) from None
    except Exception as exc:  # noqa: BLE001 - user code
        raise ExportError(f"calling {source!r} raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(obj, torch.nn.Module):
        raise ExportError(f"{source!r} returned a {type(obj).__name__}, not a torch.nn.Module")
    return obj


def _state_dict(weights: str, torch: Any) -> tuple[dict[str, Any], str]:
    path = Path(weights)
    if not path.is_file():
        raise ExportError(f"weights file {weights!r} does not exist; check --weights")
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises pickle/zip/runtime errors for bad files
        raise ExportError(
            f"cannot load weights {weights!r} with torch.load(weights_only=True): {type(exc).__name__}: {exc}. "
            "Save a state_dict: torch.save(model.state_dict(), 'weights.pth')"
        ) from None
    note = ""
    if isinstance(data, dict):
        for key in ("state_dict", "model"):
            if isinstance(data.get(key), dict):
                data, note = data[key], f"weights: used the checkpoint's {key!r} entry"
                break
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise ExportError(f"weights {weights!r} hold a {type(data).__name__}, not a state_dict (a dict of tensors)")
    if data and all(k.startswith("module.") for k in data):
        data = {k[len("module."):]: v for k, v in data.items()}
        note = (note + "; " if note else "weights: ") + "stripped the DataParallel 'module.' prefix from every key"
    return data, note


def _load_weights(module: "torch.nn.Module", weights: str, torch: Any) -> str:
    state, note = _state_dict(weights, torch)
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in own
                  if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or mismatched:
        parts = [f"{label} ({len(keys)}): {', '.join(keys[:8])}{', ...' if len(keys) > 8 else ''}"
                 for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)) if keys]
        raise ExportError(f"weights {weights!r} do not fit the model (strict load): " + "; ".join(parts))
    module.load_state_dict(state, strict=True)
    return note


def load_module(source: str, *, weights: str | None = None) -> "torch.nn.Module":
    """``path/to/file.py:factory`` or ``package.module:attr`` -> an nn.Module in eval mode.

    ``attr`` may be a module instance, a class, or a zero-argument factory.
    ``weights`` is a state_dict file (or a checkpoint with 'state_dict'/'model'),
    loaded strictly.
    """
    return load_module_with_note(source, weights=weights)[0]


@dataclass(frozen=True)
class LoadedModule:
    """A loaded source. ``fresh``: NAME is a class and no weights were given, so its weights are its random init."""

    module: "torch.nn.Module"
    note: str = ""
    fresh: bool = False


def load_module_with_note(source: str, *, weights: str | None = None) -> tuple["torch.nn.Module", str]:
    loaded = load_torch_source(source, weights=weights)
    return loaded.module, loaded.note


def load_torch_source(source: str, *, weights: str | None = None) -> LoadedModule:
    """Like :func:`load_module`, and says whether the module is freshly constructed (random weights)."""
    torch = require("torch", purpose="trtkit export")
    where, sep, attr = source.rpartition(":")
    if not sep or not where or not attr:
        raise ExportError(f"model source {source!r} must be FILE.py:NAME or package.module:NAME, e.g. model.py:build_model")
    is_file = where.endswith(".py") or os.sep in where or Path(where).exists()
    module = _import_file(Path(where)) if is_file else _import_module(where)
    if not hasattr(module, attr):
        names = [n for n, v in vars(module).items() if not n.startswith("_") and callable(v) or isinstance(v, torch.nn.Module)]
        raise ExportError(f"{where!r} has no attribute {attr!r}.{suggest_name(attr, names)} Available: {', '.join(names[:20])}")
    obj = getattr(module, attr)
    model = _instantiate(obj, source, torch)
    note = _load_weights(model, weights, torch) if weights else ""
    return LoadedModule(model.eval(), note, fresh=isinstance(obj, type) and not weights)
