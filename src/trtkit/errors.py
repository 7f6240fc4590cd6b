"""The exceptions trtkit raises.

Every error the library raises on purpose is a ``TrtkitError``. The CLI prints
``error: <message>`` and exits 1 for these; any other exception is a bug and
keeps its traceback. Messages name the object, what was expected, what was
received, and how to fix it.
"""

from __future__ import annotations

import re

from dataclasses import dataclass
from typing import Mapping

__all__ = [
    "Spelling",
    "TrtkitError",
    "ModelLoadError",
    "SpecError",
    "ShapeError",
    "DTypeError",
    "ProfileError",
    "BackendUnavailable",
    "ExportError",
    "ReshapeError",
    "BuildError",
    "EngineError",
    "OutputPathError",
    "ClosedError",
    "TaskError",
    "BenchError",
    "CudaError",
]


# "input_size (--imgsz)": a Python name (dotted allowed) followed by its flag in parentheses
_PAIR = re.compile(r"(?<![\w.-])([A-Za-z_][\w.]*) \((--[A-Za-z][\w-]*)\)")


@dataclass(frozen=True)
class Spelling:
    """One option as the Python API and the command line spell it.

    The same advice reads ``cuda_graph=True`` to a Python caller and ``--cuda-graph`` on the
    command line. An error that names options keeps both spellings (see :class:`TrtkitError`),
    so each audience reads its own words without string patching.
    """

    python: str
    cli: str


class TrtkitError(Exception):
    """Base class of every error trtkit raises on purpose.

    ``message`` is plain text. When it names options, put a ``{key}`` placeholder where each
    option goes and give ``spellings={key: Spelling(python, cli)}``: ``str(exc)`` reads the Python
    spellings, ``exc.render("cli")`` the flags. Only those exact placeholders are replaced (no
    ``str.format``), so other text in the message, braces included, needs no escaping.

    Short form for a field and its flag: ``top_k (--top-k) must be >= 1`` reads ``top_k must be >= 1``
    in Python and ``--top-k must be >= 1`` on the command line (``_PAIR``: a name, a space, the flag in
    parentheses).
    """

    def __init__(self, message: str = "", *, spellings: Mapping[str, Spelling] | None = None) -> None:
        self.template = message
        self.spellings = dict(spellings or {})
        super().__init__(self.render("python"))

    def render(self, audience: str = "python") -> str:
        """The message for ``audience`` ``"python"`` or ``"cli"``."""
        if audience not in ("python", "cli"):
            raise ValueError(f"audience must be 'python' or 'cli', got {audience!r}")
        text = self.template
        for key, spelling in self.spellings.items():
            text = text.replace("{" + key + "}", getattr(spelling, audience))
        return _PAIR.sub(lambda m: m.group(1) if audience == "python" else m.group(2), text)


class ModelLoadError(TrtkitError):
    """A model file is missing, truncated, corrupt or not of the expected format."""


class SpecError(TrtkitError):
    """A shape spec or other option string is malformed (syntax, not semantics)."""


class ShapeError(TrtkitError):
    """A shape does not fit the model: unknown name, wrong rank, or a static dim contradicted."""


class DTypeError(TrtkitError):
    """An input array has a different dtype than the model expects (never cast silently)."""


class ProfileError(ShapeError):
    """An optimization profile is invalid (min > opt, opt > max) or no profile fits a shape."""


class BackendUnavailable(TrtkitError):
    """An optional dependency (torch, TensorRT, ONNX Runtime, CUDA, a GPU) is not installed or usable."""


class ExportError(TrtkitError):
    """Exporting a PyTorch model to ONNX failed or its parity check did not pass."""


class ReshapeError(TrtkitError):
    """A model cannot be made static or dynamic safely."""


class BuildError(TrtkitError):
    """Building a TensorRT engine failed (parser error, builder error, bad option)."""


class EngineError(TrtkitError):
    """An engine file cannot be deserialized or does not fit this runtime or GPU."""


class OutputPathError(TrtkitError):
    """An output path cannot be written (missing directory, not writable, is a directory)."""


class ClosedError(TrtkitError):
    """A backend or buffer was used after ``close()``."""


class TaskError(TrtkitError):
    """A task's model or image does not fit the task (wrong output layout, unreadable image)."""


class BenchError(TrtkitError):
    """A benchmark cannot produce trustworthy figures with the given options."""


class CudaError(TrtkitError):
    """A CUDA runtime call failed."""
