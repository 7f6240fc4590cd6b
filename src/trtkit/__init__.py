"""trtkit: from a trained model to a fast TensorRT engine, and running it in production.

The public API is flat: ``trtkit.load``, ``trtkit.export``, ``trtkit.build``...
Importing trtkit imports no heavy dependency (torch, TensorRT, ONNX Runtime,
CUDA); each is imported where it is used, with an install hint if missing.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import (
    BackendUnavailable,
    BenchError,
    BuildError,
    ClosedError,
    CudaError,
    DTypeError,
    EngineError,
    ExportError,
    ModelLoadError,
    OutputPathError,
    ProfileError,
    ReshapeError,
    ShapeError,
    SpecError,
    TaskError,
    TrtkitError,
)
from .spec import (
    BuildConfig,
    RuntimeConfig,
    ShapeProfile,
    ShapeRange,
    TensorSpec,
    format_shapes,
    parse_axes,
    parse_shapes,
)

__version__ = "0.1.0"

# Public names that live in modules with heavier imports: resolved on first use.
_LAZY: dict[str, str] = {
    "load": "trtkit.backends:load",
    "Backend": "trtkit.backends.base:Backend",
    "export": "trtkit.export:export",
    "ExportConfig": "trtkit.export:ExportConfig",
    "inspect_model": "trtkit.inspect:inspect_model",
    "ModelInfo": "trtkit.inspect:ModelInfo",
    "reshape": "trtkit.reshape:reshape",
    "ReshapeConfig": "trtkit.reshape:ReshapeConfig",
    "ReshapeReport": "trtkit.reshape:ReshapeReport",
    "ExportReport": "trtkit.export:ExportReport",
    "BuildReport": "trtkit.build:BuildReport",
    "QuantizeConfig": "trtkit.build:QuantizeConfig",
    "build": "trtkit.build:build",
    "quantize": "trtkit.build:quantize",
    "fuse_model": "trtkit.fusion:fuse_model",
    "FusionReport": "trtkit.fusion:FusionReport",
    "compare": "trtkit.compare:compare",
    "CompareConfig": "trtkit.compare:CompareConfig",
    "CompareResult": "trtkit.compare:CompareResult",
    "generate_inputs": "trtkit.datagen:generate_inputs",
    "run_model": "trtkit.sources:run_model",
    "RunConfig": "trtkit.sources:RunConfig",
    "RunResult": "trtkit.sources:RunResult",
    "benchmark": "trtkit.bench:benchmark",
    "BenchConfig": "trtkit.bench:BenchConfig",
    "BenchResult": "trtkit.bench:BenchResult",
    "Classifier": "trtkit.tasks.classification:Classifier",
    "Detector": "trtkit.tasks.detection:Detector",
    "FaceDetector": "trtkit.tasks.face:FaceDetector",
    "OcrPipeline": "trtkit.tasks.ocr:OcrPipeline",
    "add_nms": "trtkit.tasks.nms_graph:add_nms",
}

__all__ = [
    "__version__",
    # errors
    "TrtkitError",
    "BackendUnavailable",
    "BenchError",
    "BuildError",
    "ClosedError",
    "CudaError",
    "DTypeError",
    "EngineError",
    "ExportError",
    "ModelLoadError",
    "OutputPathError",
    "ProfileError",
    "ReshapeError",
    "ShapeError",
    "SpecError",
    "TaskError",
    # value objects
    "BuildConfig",
    "RuntimeConfig",
    "ShapeProfile",
    "ShapeRange",
    "TensorSpec",
    "parse_shapes",
    "parse_axes",
    "format_shapes",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'trtkit' has no attribute {name!r}")
    module, _, attr = target.partition(":")
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
