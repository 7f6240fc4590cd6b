"""Reading TensorRT engine files: plain plans and Ultralytics ``.engine`` files.

Ultralytics writes ``<uint32 little-endian length><JSON metadata><plan>``; the
metadata (class names, imgsz, stride, task) is worth keeping, and the plan
after it is an ordinary TensorRT plan. A plain plan starts with a 4-byte magic
tag: ``ptrt`` for TensorRT 8.5 (seen on the H200), ``ftrt`` for TensorRT 10,
``vtrt`` for TensorRT-RTX (seen in real engines).
This module reads bytes only; it needs neither TensorRT nor a GPU.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError

__all__ = ["EngineFile", "read_engine_file", "PLAN_MAGIC", "flavor_from_magic", "declared_plan_size"]

# First four bytes of a serialized plan -> which runtime wrote it.
PLAN_MAGIC: dict[bytes, str] = {b"ptrt": "tensorrt", b"ftrt": "tensorrt", b"vtrt": "tensorrt-rtx"}
_MIN_PLAN_BYTES = 64  # a plan header alone is 64 bytes in TensorRT 10 / RTX 1.x
_MAX_META_BYTES = 16 << 20


@dataclass(frozen=True)
class EngineFile:
    """The plan bytes, the metadata stored in front of it (Ultralytics) and the container kind.

    ``kind`` is ``"plan"`` (a bare serialized engine) or ``"ultralytics"``.
    ``flavor`` is ``"tensorrt"``/``"tensorrt-rtx"`` from the plan's magic tag, or None if unknown.
    """

    path: Path
    plan: bytes = field(repr=False)
    metadata: dict[str, Any] | None
    kind: str
    flavor: str | None


def flavor_from_magic(plan: bytes) -> str | None:
    return PLAN_MAGIC.get(bytes(plan[:4]))


def declared_plan_size(plan: bytes) -> int | None:
    """The plan size its header states, or None when the header is not one we know.

    Seen in TensorRT-RTX 1.x plans: magic, then a little-endian uint64 at byte 16 holding the length of
    the whole plan. TensorRT itself checks it when deserializing; reading it here lets ``inspect`` and
    ``run`` call a truncated file truncated without a GPU. Full TensorRT's header (``ptrt``/``ftrt``) is
    not documented and not read: only a GPU run can call such a plan truncated.
    """
    if bytes(plan[:4]) != b"vtrt" or len(plan) < 24:
        return None
    (size,) = struct.unpack_from("<Q", plan, 16)
    return int(size) if size >= _MIN_PLAN_BYTES else None


def _ultralytics_split(data: bytes) -> tuple[dict[str, Any], bytes] | None:
    """Return (metadata, plan) when ``data`` is an Ultralytics engine, else None."""
    if len(data) < 8 or flavor_from_magic(data) is not None:
        return None
    (length,) = struct.unpack("<I", data[:4])
    if not 2 <= length <= min(_MAX_META_BYTES, len(data) - 4):
        return None
    head = data[4 : 4 + length]
    if head[:1] != b"{":
        return None
    try:
        meta = json.loads(head.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(meta, dict):
        return None
    return meta, data[4 + length :]


def read_engine_file(path: str | os.PathLike[str]) -> EngineFile:
    """Read an engine file; raise ModelLoadError for a missing, empty, truncated or non-engine file.

    The plan itself is validated by TensorRT at deserialization; here only the
    container is checked, so the error can say "not an engine" rather than
    TensorRT's serialization assertion.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelLoadError(f"engine file {str(p)!r} does not exist or is not a file; check the path")
    data = p.read_bytes()
    split = _ultralytics_split(data)
    meta, plan, kind = (split[0], split[1], "ultralytics") if split else (None, data, "plan")
    if len(plan) < _MIN_PLAN_BYTES:
        raise ModelLoadError(
            f"engine file {str(p)!r} holds {len(plan)} bytes of plan data, too few for a TensorRT engine "
            f"(at least {_MIN_PLAN_BYTES}); the file is truncated or not an engine. Rebuild it with trtkit build"
        )
    flavor = flavor_from_magic(plan)
    declared = declared_plan_size(plan)
    if declared is not None and declared > len(plan):
        raise ModelLoadError(
            f"engine file {str(p)!r} is truncated: its header declares {declared} bytes of plan, the file holds "
            f"{len(plan)}. The copy or download was cut short; copy it again or rebuild it with trtkit build"
        )
    if flavor is None and _looks_like_text_or_onnx(plan) and p.suffix.lower() == ".onnx":
        raise ModelLoadError(
            f"{str(p)!r} is an ONNX model, and the TensorRT backend runs engines: build one from it with "
            "trtkit build, or run the ONNX model with ONNX Runtime (--backend onnxruntime, or auto)"
        )
    if flavor is None and _looks_like_text_or_onnx(plan):
        raise ModelLoadError(
            f"{str(p)!r} is not a TensorRT engine (it starts with {bytes(plan[:8])!r}, expected the "
            f"magic {' or '.join(repr(m) for m in PLAN_MAGIC)}); if it is an ONNX model, rename it to .onnx "
            "or build an engine from it with trtkit build"
        )
    return EngineFile(path=p, plan=plan, metadata=meta, kind=kind, flavor=flavor)


def _looks_like_text_or_onnx(plan: bytes) -> bool:
    """ONNX protobufs start with field 1 (ir_version, tag 0x08); text files are printable."""
    head = bytes(plan[:64])
    return head[:1] == b"\x08" or all(32 <= b < 127 or b in (9, 10, 13) for b in head)
