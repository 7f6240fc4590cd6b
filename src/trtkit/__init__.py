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
    BatchProfile,
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
    "export": "trtkit.graph.export:export",
    "ExportConfig": "trtkit.graph.export:ExportConfig",
    "inspect_model": "trtkit.graph.inspection:inspect_model",
    "ModelInfo": "trtkit.graph.inspection:ModelInfo",
    "reshape": "trtkit.graph.reshape:reshape",
    "ReshapeConfig": "trtkit.graph.reshape:ReshapeConfig",
    "ReshapeReport": "trtkit.graph.reshape:ReshapeReport",
    "ExportReport": "trtkit.graph.export:ExportReport",
    "BuildReport": "trtkit.engine.build:BuildReport",
    "QuantizeConfig": "trtkit.engine.build:QuantizeConfig",
    "build": "trtkit.engine.build:build",
    "quantize": "trtkit.engine.build:quantize",
    "fuse_model": "trtkit.graph.fusion:fuse_model",
    "FusionReport": "trtkit.graph.fusion:FusionReport",
    "compare": "trtkit.measure.compare:compare",
    "CompareConfig": "trtkit.measure.compare:CompareConfig",
    "CompareResult": "trtkit.measure.compare:CompareResult",
    "generate_inputs": "trtkit.measure.inputs:generate_inputs",
    "run_model": "trtkit.measure.run:run_model",
    "RunConfig": "trtkit.measure.run:RunConfig",
    "RunResult": "trtkit.measure.run:RunResult",
    "benchmark": "trtkit.measure.bench:benchmark",
    "BenchConfig": "trtkit.measure.bench:BenchConfig",
    "BenchResult": "trtkit.measure.bench:BenchResult",
    "Classifier": "trtkit.tasks.classification:Classifier",
    "Detector": "trtkit.tasks.detection:Detector",
    "FaceDetector": "trtkit.tasks.face:FaceDetector",
    "OcrPipeline": "trtkit.tasks.ocr.pipeline:OcrPipeline",
    "add_nms": "trtkit.graph.nms:add_nms",
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
    "BatchProfile",
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
