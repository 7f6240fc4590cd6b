"""The engine sidecar (``model.plan.json``) and ``trtkit inspect`` for engines.

A TensorRT engine is opaque without a GPU and the exact runtime that built it.
``trtkit build`` therefore writes a JSON sidecar next to each engine: source
ONNX hash, backend and version, device, profiles, precision, I/O tensors, and
the engine's own sha256. The sha256 ties the sidecar to one engine file: a
sidecar whose hash does not match the engine beside it is *stale* (the engine
was replaced by something else) and is not trusted.

Sidecar format ``trtkit-engine/1``::

    {"format", "trtkit_version", "engine_sha256", "source": {"path", "sha256"},
     "backend": "tensorrt"|"tensorrt-rtx", "backend_version",
     "device": {"name", "compute_capability"} | null, "device_note",
     "precision", "flags", "profiles": [ShapeProfile.to_json()...],
     "inputs": [{"name","dtype","shape"}], "outputs": [...],
     "build_seconds", "created", "cache_key"}
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import write_text_atomic
from ..errors import EngineError, ModelLoadError

# Variable name in this module -> TensorRT class it holds (checked against the real bindings, see trt_api).
ROLES: dict[str, str] = {"trt": "<module>", "engine": "ICudaEngine", "inspector": "EngineInspector"}

__all__ = [
    "SIDECAR_FORMAT",
    "sidecar_path",
    "write_sidecar",
    "sidecar_text",
    "read_sidecar",
    "file_sha256",
    "detect_gpu",
    "EngineInfo",
    "inspect_engine",
]

SIDECAR_FORMAT = "trtkit-engine/1"
_log = logging.getLogger("trtkit.engine.info")


def sidecar_path(engine: str | os.PathLike[str]) -> Path:
    """``model.plan`` -> ``model.plan.json``."""
    p = Path(engine)
    return p.with_name(p.name + ".json")


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sidecar_text(data: dict[str, Any]) -> str:
    """Indented JSON with each shape list kept on one line (readable profiles)."""
    text = json.dumps(data, indent=2)
    return re.sub(r"\[\s*(-?\d+(?:,\s*-?\d+)*)\s*\]", lambda m: "[" + ", ".join(re.split(r",\s*", m.group(1))) + "]", text) + "\n"


def write_sidecar(engine: str | os.PathLike[str], data: dict[str, Any]) -> Path:
    """Write the sidecar of ``engine`` atomically."""
    return write_text_atomic(sidecar_path(engine), sidecar_text(data), what="engine sidecar")


def _load_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EngineError(
            f"engine sidecar {str(path)!r} is not readable JSON ({exc}); delete it and rebuild the engine with trtkit build"
        ) from None
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
        got = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise EngineError(
            f"{str(path)!r} is not a trtkit engine sidecar: expected format {SIDECAR_FORMAT!r}, got {got!r}; "
            "delete it and rebuild the engine with trtkit build"
        )
    return data


def read_sidecar(engine_path: str | os.PathLike[str], *, verify: bool = True) -> dict[str, Any] | None:
    """The sidecar of ``engine_path`` as a dict, or None when there is none.

    With ``verify`` (the default) a stale sidecar, whose ``engine_sha256`` does
    not match the engine file, also gives None (with a warning): it describes
    another engine. A corrupt sidecar raises EngineError.
    """
    path = sidecar_path(engine_path)
    if not path.is_file():
        return None
    data = _load_json(path)
    if verify and Path(engine_path).is_file() and data.get("engine_sha256") != file_sha256(engine_path):
        _log.warning("ignoring stale sidecar %s: it describes a different engine than %s", path, engine_path)
        return None
    return data


# ------------------------------------------------------------------ device

NO_GPU = "built without a GPU"


def detect_gpu(device_id: int = 0) -> tuple[dict[str, Any] | None, str]:
    """({"name", "compute_capability"}, "") for a usable GPU, else (None, why there is none).

    Uses cuda-python directly rather than :mod:`trtkit.backends.cuda` because "no GPU" is an
    answer here, not an error: TensorRT-RTX builds engines on machines without one.
    """
    from .._optional import available

    if not available("cuda.bindings.runtime"):
        return None, "cuda-python is not installed, so no GPU was looked for"
    from cuda.bindings import runtime as rt

    err, count = rt.cudaGetDeviceCount()
    if int(err) != 0 or count == 0:
        name = getattr(err, "name", str(err))
        return None, f"CUDA reports {name if int(err) else 'no devices'}"
    if device_id >= count:
        return None, f"device {device_id} requested, {count} visible"
    err, props = rt.cudaGetDeviceProperties(device_id)
    if int(err) != 0:
        return None, f"cudaGetDeviceProperties failed: {getattr(err, 'name', err)}"
    name = props.name.decode(errors="replace").rstrip("\x00") if isinstance(props.name, bytes) else str(props.name)
    return {"name": name, "compute_capability": f"{props.major}.{props.minor}"}, ""


# ------------------------------------------------------------------ inspect

@dataclass
class EngineInfo:
    """What `trtkit inspect` shows for an engine file."""

    path: str
    size_bytes: int
    sha256: str
    sidecar: dict[str, Any] | None
    sidecar_state: str  # "ok", "missing" or "stale"
    container: str = "plan"  # "plan" or "ultralytics" (metadata JSON in front of the plan)
    flavor: str | None = None  # "tensorrt"/"tensorrt-rtx" from the plan's magic tag, None if unknown
    runtime: dict[str, Any] | None = None  # read from the deserialized engine, when possible
    runtime_note: str = ""
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": "tensorrt-engine",  # same key as ModelInfo.to_json's "onnx"
            "path": self.path,
            "container": self.container,
            "flavor": self.flavor,
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "sidecar_state": self.sidecar_state,
            "sidecar": self.sidecar,
            "engine": self.runtime,
            "engine_note": self.runtime_note,
            "notes": self.notes,
        }

    def render(self) -> str:
        return _render(self)


def _sidecar_state(path: Path, sha: str) -> tuple[dict[str, Any] | None, str]:
    side = sidecar_path(path)
    if not side.is_file():
        return None, "missing"
    data = _load_json(side)
    return data, ("ok" if data.get("engine_sha256") == sha else "stale")


def inspect_engine(path: str | os.PathLike[str]) -> EngineInfo:
    """Describe an engine from its sidecar and, with a GPU and the runtime, from the engine itself."""
    p = Path(path)
    if not p.is_file():
        raise EngineError(f"engine file {str(p)!r} does not exist; check the path or build it with trtkit build")
    container, flavor = _check_engine_file(p)
    sha = file_sha256(p)
    sidecar, state = _sidecar_state(p, sha)
    info = EngineInfo(str(p), p.stat().st_size, sha, sidecar if state == "ok" else None, state,
                      container=container, flavor=flavor)
    if state == "stale":
        info.notes.append(
            f"the sidecar {sidecar_path(p).name} describes a different engine (sha256 mismatch): ignored. "
            "Rebuild with trtkit build to refresh it"
        )
    elif state == "missing":
        info.notes.append(f"no sidecar ({sidecar_path(p).name}) beside the engine, so its source model, precision and "
                          "build flags are unknown: only the engine itself can tell more")
    backend = (sidecar or {}).get("backend", "auto") if state == "ok" else "auto"
    info.runtime, info.runtime_note, refused = _read_engine(p, backend=backend)
    if refused is not None and info.sidecar is None:  # TensorRT itself rejected the plan and nothing else describes it
        raise refused
    if info.runtime is None and info.sidecar is None:
        info.notes.append(f"nothing more is known: {info.runtime_note}")
    return info


def _check_engine_file(path: Path) -> tuple[str, str | None]:
    """The container check ``trtkit run`` applies (size, magic tag), so inspect never calls a
    text file or an ONNX model an engine; an ONNX model gets a rename hint of its own."""
    from .plan_file import read_engine_file

    try:
        ef = read_engine_file(path)
    except ModelLoadError as exc:
        onnx_note = _onnx_description(path)
        if onnx_note:
            raise ModelLoadError(
                f"{str(path)!r} is an ONNX model ({onnx_note}), not a TensorRT engine, despite its "
                f"{path.suffix!r} suffix; rename it to .onnx to inspect it as ONNX "
                f"(mv {path} {path.with_suffix('.onnx')}), or build an engine from it with trtkit build"
            ) from None
        raise exc from None
    return ef.kind, ef.flavor


def _onnx_description(path: Path) -> str:
    """'IR version N, producer P' when ``path`` parses as an ONNX model with a graph, else ''."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, OSError, ValueError, RuntimeError):
        return ""
    if model.ir_version <= 0 or not (model.graph.node or model.graph.input):
        return ""
    producer = " ".join(p for p in (model.producer_name, model.producer_version) if p) or "unknown producer"
    return f"IR version {model.ir_version}, {producer}"


# ------------------------------------------------------- reading the engine

def _profile_json(engine: Any, names: list[str], index: int) -> dict[str, dict[str, list[int]]]:
    out = {}
    for name in names:
        lo, mid, hi = engine.get_tensor_profile_shape(name, index)
        out[name] = {"min": list(lo), "opt": list(mid), "max": list(hi)}
    return out


def _engine_json(engine: Any, trt: Any) -> dict[str, Any]:
    """I/O tensors, profiles and per-layer info of a deserialized engine (TensorRT 8.5 to 11 and RTX share this API)."""
    from .trt_api import dtype_name

    tensors: dict[str, list[dict[str, Any]]] = {"inputs": [], "outputs": []}
    dynamic_inputs = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        shape = [int(d) for d in engine.get_tensor_shape(name)]
        dtype = dtype_name(trt, engine.get_tensor_dtype(name))
        tensors["inputs" if is_input else "outputs"].append({"name": name, "dtype": dtype, "shape": shape})
        if is_input and -1 in shape:
            dynamic_inputs.append(name)
    profiles = [_profile_json(engine, dynamic_inputs, k) for k in range(engine.num_optimization_profiles)]
    inspector = engine.create_engine_inspector()
    layers = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    return {**tensors, "profiles": profiles, "num_layers": engine.num_layers, "layers": layers.get("Layers", layers)}


def layer_information(flavor: Any, plan: bytes, *, what: str) -> tuple[str, str]:
    """(ONELINE text, JSON text) of the engine inspector, as trtexec --dumpLayerInfo/--exportLayerInfo give them."""
    from .trt_api import deserialize

    trt = flavor.module
    _runtime, engine, _logger = deserialize(trt, plan, plugins=(), what=what, allow_host_code=flavor.runtime_allows_host_code)
    inspector = engine.create_engine_inspector()
    return (str(inspector.get_engine_information(trt.LayerInformationFormat.ONELINE)),
            str(inspector.get_engine_information(trt.LayerInformationFormat.JSON)))


def tf32_hint(path: str | os.PathLike[str]) -> str | None:
    """For ``compare``: a hint when ``path`` is an FP32 engine whose sidecar says TF32 was on."""
    try:
        side = read_sidecar(path)
    except EngineError:
        return None
    if not side or side.get("precision") != "fp32" or not (side.get("flags") or {}).get("tf32"):
        return None
    return (f"{Path(path).name} is an FP32 engine built with TF32 on (TensorRT's default on Ampere and later: FP32 "
            "matrix math with 10-bit mantissa inputs, typically ~1e-3..1e-2 off an FP32 reference); rebuild it with "
            "trtkit build --noTF32 to compare at FP32 precision")


def _read_engine(path: Path, *, backend: str) -> tuple[dict[str, Any] | None, str, EngineError | None]:
    """Deserialize the engine and read it; (None, why, None) when this machine cannot, and
    (None, why, the error) when TensorRT rejected the plan (truncated, corrupt, other version).

    Not exercised in CI: deserializing needs a GPU the runtime supports (TensorRT-RTX
    refuses Hopper and there is no GPU on the CI machine).
    """
    from .flavor import trt_flavor
    from ..errors import BackendUnavailable, SpecError

    gpu, why = detect_gpu(0)
    if gpu is None:
        return None, "engine not opened (deserializing needs a usable NVIDIA GPU and driver): " + why, None
    try:
        flavor = trt_flavor(backend if backend in ("tensorrt", "tensorrt-rtx") else "auto")
    except (BackendUnavailable, SpecError) as exc:
        return None, f"engine not opened: {exc}", None
    from .plan_file import read_engine_file
    from .trt_api import deserialize

    try:
        _runtime, engine, _logger = deserialize(flavor.module, read_engine_file(path).plan, plugins=(),
                                                what=f"engine {str(path)!r}", allow_host_code=flavor.runtime_allows_host_code)
    except BackendUnavailable as exc:
        return None, f"engine not opened on {gpu['name']}: {exc}", None
    except EngineError as exc:
        return None, f"engine not opened on {gpu['name']}: {exc}", exc
    return _engine_json(engine, flavor.module), f"read with {flavor.backend} {flavor.version} on {gpu['name']}", None


# ---------------------------------------------------------------- render

def _tensor_rows(title: str, tensors: list[dict[str, Any]]) -> list[str]:
    rows = [f"{title}:"]
    width = max((len(t["name"]) for t in tensors), default=4)
    for t in tensors:
        shape = "[" + ",".join(str(d) for d in t["shape"]) + "]"
        rows.append(f"  {t['name']:<{width}}  {t['dtype']:<8} {shape}")
    return rows


def _profile_rows(profiles: list[dict[str, Any]]) -> list[str]:
    if not profiles or not any(profiles):
        return ["profiles: none (static shapes)"]
    rows = ["profiles:"]
    for k, prof in enumerate(profiles):
        for name, r in prof.items():
            fmt = lambda s: "x".join(str(d) for d in s)  # noqa: E731
            rows.append(f"  {k}: {name}  min {fmt(r['min'])}  opt {fmt(r['opt'])}  max {fmt(r['max'])}")
    return rows


def _sidecar_rows(side: dict[str, Any]) -> list[str]:
    dev = side.get("device")
    device = (
        f"{dev['name']} (compute capability {dev['compute_capability']})"
        if dev
        else f"{side.get('device_note') or 'unknown'} ({side.get('device_detail') or 'no detail'})"
    )
    src = side.get("source", {})
    rows = [
        f"backend:    {side.get('backend')} {side.get('backend_version')}",
        f"device:     {device}",
        f"precision:  {side.get('precision')}{_numerics(side.get('flags') or {})}",
        f"source:     {src.get('path')} (sha256 {str(src.get('sha256'))[:16]}...)",
        f"built:      {side.get('created')} in {side.get('build_seconds')} s by trtkit {side.get('trtkit_version')}",
    ]
    return rows + _tensor_rows("inputs", side.get("inputs", [])) + _tensor_rows("outputs", side.get("outputs", [])) + _profile_rows(
        side.get("profiles", [])
    )


def _numerics(flags: dict[str, Any]) -> str:
    """The recorded options that change numerics or portability, for the precision row."""
    parts = []
    if "tf32" in flags:
        parts.append("TF32 " + ("on" if flags["tf32"] else "off"))
    if flags.get("version_compatible"):
        parts.append("version-compatible" + (" (lean runtime excluded)" if flags.get("exclude_lean_runtime") else ""))
    if flags.get("hardware_compatibility") not in (None, "NONE"):
        parts.append(f"hardware compatibility {flags['hardware_compatibility']}")
    if flags.get("tactic_sources") is not None:
        parts.append("tactic sources " + (",".join(flags["tactic_sources"]) or "none"))
    return f" ({'; '.join(parts)})" if parts else ""


def _render(info: EngineInfo) -> str:
    kind = {"tensorrt": "TensorRT engine", "tensorrt-rtx": "TensorRT-RTX engine"}.get(
        info.flavor or "", "engine file without a known magic tag (only TensorRT can tell whether it is valid)")
    wrapper = " in an Ultralytics container" if info.container == "ultralytics" else ""
    rows = [f"{info.path}: {kind}{wrapper}, {info.size_bytes / 2**20:.1f} MiB, sha256 {info.sha256[:16]}..."]
    if info.sidecar:
        rows += [f"from sidecar {sidecar_path(info.path).name}:"] + ["  " + r for r in _sidecar_rows(info.sidecar)]
    if info.runtime:
        rt = info.runtime
        rows += [f"from the engine ({info.runtime_note}):"]
        rows += ["  " + r for r in _tensor_rows("inputs", rt["inputs"]) + _tensor_rows("outputs", rt["outputs"]) + _profile_rows(rt["profiles"])]
        rows.append(f"  layers: {rt['num_layers']} (per-layer details in --json)")
    else:
        rows.append(info.runtime_note)
    rows += [f"note: {n}" for n in info.notes]
    return "\n".join(rows)
