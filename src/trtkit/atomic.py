"""Atomic output files: write a temp file beside the target, then rename it.

A failure or Ctrl-C never leaves a half-written engine, model or report, and
an output path that cannot be written is reported before any slow work starts.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from .errors import OutputPathError

__all__ = ["check_output_path", "atomic_output", "write_bytes_atomic", "write_text_atomic"]

PathLike = str | os.PathLike[str]


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output_path(path: PathLike, *, what: str = "output", inputs: Iterable[PathLike] = ()) -> Path:
    """Fail early, before any work, when ``path`` cannot be written or would overwrite an input.

    Writability is proven by creating and removing a probe file in the target's
    directory (``os.access`` says yes to root even on read-only file systems).
    """
    p = Path(path)
    if p.is_dir():
        raise OutputPathError(f"{what} path {str(p)!r} is a directory; give a file path, e.g. {str(p / 'out')!r}")
    for source in inputs:
        if _same_file(p, Path(source)) or p.resolve() == Path(source).resolve():
            raise OutputPathError(
                f"{what} path {str(p)!r} is the input file {str(source)!r}; writing it would destroy the input. "
                "Write to a new file, e.g. add a suffix"
            )
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise OutputPathError(
            f"{what} path {str(p)!r}: directory {str(parent)!r} does not exist; create it first (mkdir -p {parent})"
        )
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".probe", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputPathError(
            f"{what} path {str(p)!r}: cannot write in directory {str(parent)!r} ({exc.strerror or exc}); "
            "choose another path"
        ) from exc
    return p


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_output(path: PathLike, *, what: str = "output", inputs: Iterable[PathLike] = ()) -> Iterator[Path]:
    """Yield a temporary path in the target's directory; rename it onto ``path`` on success.

    On any exception (KeyboardInterrupt included) the temp file is removed and
    ``path`` is left untouched. OS errors while creating or renaming (disk full,
    read-only file system) become OutputPathError.
    """
    target = check_output_path(path, what=what, inputs=inputs)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
    except OSError as exc:
        raise OutputPathError(f"{what} path {str(target)!r}: cannot create a file there ({exc.strerror or exc}); choose another path") from exc
    tmp_path = Path(tmp)
    try:
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give outputs the usual mode
        yield tmp_path
        os.replace(tmp_path, target)
    except OSError as exc:
        raise OutputPathError(f"{what} path {str(target)!r}: writing failed ({exc.strerror or exc}); nothing was written") from exc
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(path: PathLike, data: bytes, *, what: str = "output") -> Path:
    with atomic_output(path, what=what) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: PathLike, text: str, *, what: str = "output") -> Path:
    with atomic_output(path, what=what) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
