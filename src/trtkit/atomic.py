"""Atomic output files: write a temp file beside the target, then rename it.

A failure or Ctrl-C never leaves a half-written engine, model or report.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import OutputPathError

__all__ = ["check_output_path", "atomic_output", "write_bytes_atomic", "write_text_atomic"]


def check_output_path(path: str | os.PathLike[str], *, what: str = "output") -> Path:
    """Fail early, before any work, when ``path`` cannot be written."""
    p = Path(path)
    if p.is_dir():
        raise OutputPathError(f"{what} path {str(p)!r} is a directory; give a file path, e.g. {str(p / 'out')!r}")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise OutputPathError(
            f"{what} path {str(p)!r}: directory {str(parent)!r} does not exist; create it first (mkdir -p {parent})"
        )
    if not os.access(parent, os.W_OK):
        raise OutputPathError(f"{what} path {str(p)!r}: directory {str(parent)!r} is not writable; choose another path")
    return p


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], *, what: str = "output") -> Iterator[Path]:
    """Yield a temporary path in the target's directory; rename it onto ``path`` on success.

    On any exception (KeyboardInterrupt included) the temp file is removed and
    ``path`` is left untouched.
    """
    target = check_output_path(path, what=what)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or ".")
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give outputs the usual mode
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes, *, what: str = "output") -> Path:
    with atomic_output(path, what=what) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike[str], text: str, *, what: str = "output") -> Path:
    with atomic_output(path, what=what) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
