"""What a repository needs to know about a model, without running it.

``ModelFacts`` holds a model's inputs, outputs, metadata and (engines) its
optimization profiles. It is read once, when the repository is written, from
the model itself (ONNX through ONNX Runtime, engines through the sidecar that
``trtkit build`` writes), and stored as JSON beside the Python-backend steps so
that a preprocess/postprocess step can build its task (which reads only the
model's I/O and metadata) without loading the model a second time.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError
from ..spec import ShapeProfile, ShapeRange, TensorSpec

__all__ = ["ModelFacts", "read_facts", "ENGINE_SUFFIXES"]

ENGINE_SUFFIXES = (".plan", ".engine", ".trt")


@dataclass(frozen=True)
class ModelFacts:
    """A model's I/O and metadata, shaped like a Backend's read-only side (``inputs``,
    ``outputs``, ``metadata``) so that task classes can be built from it."""

    path: Path
    kind: str  # "onnx" | "engine"
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    metadata: dict[str, str] = field(default_factory=dict)
    profiles: tuple[ShapeProfile, ...] = ()
    name: str = "facts"

    def infer(self, feeds: Any) -> Any:  # the Backend protocol; facts never run a model
        raise ModelLoadError(f"model facts of {str(self.path)!r} cannot run the model; load it with trtkit.load")

    def close(self) -> None:
        pass

    @property
    def batch_dynamic(self) -> bool:
        """Every input and output leads with a dynamic axis (so requests can be stacked on axis 0)."""
        return all(s.rank > 0 and isinstance(s.shape[0], str) for s in (*self.inputs, *self.outputs))

    def to_json(self) -> dict[str, Any]:
        def specs(items: tuple[TensorSpec, ...]) -> list[dict[str, Any]]:
            return [{"name": s.name, "dtype": s.dtype, "shape": list(s.shape)} for s in items]

        return {
            "path": self.path.name, "kind": self.kind, "inputs": specs(self.inputs), "outputs": specs(self.outputs),
            "metadata": self.metadata, "profiles": [p.to_json() for p in self.profiles],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], *, base: Path) -> "ModelFacts":
        def specs(items: list[dict[str, Any]]) -> tuple[TensorSpec, ...]:
            return tuple(TensorSpec(d["name"], d["dtype"], tuple(d["shape"])) for d in items)

        return cls(
            path=base / data["path"], kind=data["kind"], inputs=specs(data["inputs"]), outputs=specs(data["outputs"]),
            metadata=dict(data.get("metadata", {})), profiles=tuple(_profile(p) for p in data.get("profiles", [])),
        )


def _profile(data: dict[str, dict[str, list[int]]]) -> ShapeProfile:
    return ShapeProfile(tuple((n, ShapeRange(tuple(r["min"]), tuple(r["opt"]), tuple(r["max"]))) for n, r in data.items()))


def read_facts(path: str | os.PathLike[str]) -> ModelFacts:
    """Facts of an ONNX model (opened with ONNX Runtime) or of an engine (from its sidecar)."""
    p = Path(path)
    if not p.is_file():
        raise ModelLoadError(f"model file {str(p)!r} does not exist or is not a file; check the path")
    suffix = p.suffix.lower()
    if suffix == ".onnx":
        return _onnx_facts(p)
    if suffix in ENGINE_SUFFIXES:
        return _engine_facts(p)
    raise ModelLoadError(
        f"cannot tell what {str(p)!r} is from its extension {suffix or '(none)'!r}; "
        f"give an .onnx model or an engine ({', '.join(ENGINE_SUFFIXES)})"
    )


def _onnx_facts(path: Path) -> ModelFacts:
    import onnx

    from ..backends import load

    with load(path, backend="onnxruntime") as backend:
        inputs, outputs = tuple(backend.inputs), tuple(backend.outputs)
    proto = onnx.load(str(path), load_external_data=False)
    meta = {p.key: p.value for p in proto.metadata_props}
    return ModelFacts(path=path, kind="onnx", inputs=inputs, outputs=outputs, metadata=meta)


def _engine_facts(path: Path) -> ModelFacts:
    from ..engine.info import read_sidecar
    from ..engine.plan_file import read_engine_file

    side = read_sidecar(path)
    if side is None:
        raise ModelLoadError(
            f"engine {str(path)!r} has no valid sidecar ({path.name}.json, missing or describing another engine); "
            "a repository needs the engine's I/O tensors and profiles, which only trtkit build records. "
            "Rebuild it with: trtkit build MODEL.onnx -o " + str(path)
        )

    def specs(items: list[dict[str, Any]]) -> tuple[TensorSpec, ...]:
        return tuple(
            TensorSpec(d["name"], d["dtype"], tuple(f"{d['name']}_{i}" if v == -1 else v for i, v in enumerate(d["shape"])))
            for d in items
        )

    return ModelFacts(
        path=path, kind="engine", inputs=specs(side["inputs"]), outputs=specs(side["outputs"]),
        metadata=_engine_metadata({**(side.get("metadata") or {}), **(read_engine_file(path).metadata or {})}),
        profiles=tuple(_profile(p) for p in side.get("profiles", [])),
    )


def facts_text(facts: ModelFacts) -> str:
    return json.dumps(facts.to_json(), indent=2) + "\n"


def _engine_metadata(meta: dict[str, Any] | None) -> dict[str, str]:
    """The engine's metadata as strings: the source ONNX's metadata_props (which trtkit build records in the
    sidecar) and what the engine file itself stores (Ultralytics engines), as TensorRTBackend.metadata has it."""
    return {str(k): v if isinstance(v, str) else repr(v) for k, v in (meta or {}).items()}
