"""ONNX Runtime backend: the CPU reference runtime, and the CUDA EP fallback.

``open_onnxruntime`` is the registry entry. On ``device="cuda"`` it prefers
``trtkit.backends.ort_cuda.OrtCudaBackend`` (IO binding, pinned/device
buffers), which subclasses :class:`OnnxRuntimeBackend`; without that module it
runs this class with the CUDA execution provider.

``infer`` is kept thin on purpose: input validation (``normalize_feeds``) plus
one ``session.run`` with precomputed output names. See
``benchmarks/ort_overhead.py`` for the measured cost against raw ``session.run``.
"""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from .._optional import require
from ..errors import BackendUnavailable, ModelLoadError, ShapeError, SpecError, Spelling
from ..graph.fusion import FusionReport, fuse_file
from ..spec import RuntimeConfig, TensorSpec
from .base import BackendBase, Feeds, normalize_feeds

__all__ = ["open_onnxruntime", "OnnxRuntimeBackend", "ort_errors"]

# ONNX Runtime type strings -> numpy dtype names. Types numpy cannot hold
# (bfloat16, float8, int4) are absent; see _input_spec for what happens then.
_ORT_TYPES: dict[str, str] = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(uint8)": "uint8",
    "tensor(uint16)": "uint16",
    "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
    "tensor(string)": "object",
}

_CUDA_EP = "CUDAExecutionProvider"
_CPU_EP = "CPUExecutionProvider"
_CUDA_MODULE = "trtkit.backends.ort_cuda"
_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ")
_ORT_SOURCE = re.compile(r"/onnxruntime_src/\S+:\d+ [\w:~<>]+\(.*?\) ")  # C++ file:line and signature


def ort_errors() -> tuple[type[BaseException], ...]:
    """The exception types ONNX Runtime raises (its pybind11 state module), for narrow ``except``."""
    state = importlib.import_module("onnxruntime.capi.onnxruntime_pybind11_state")
    names = (
        "Fail", "InvalidArgument", "NoSuchFile", "NoModel", "EngineError", "RuntimeException",
        "InvalidProtobuf", "ModelLoaded", "NotImplemented", "InvalidGraph", "EPFail", "NotFound",
    )
    return tuple(getattr(state, n) for n in names if hasattr(state, n))


def open_onnxruntime(path: str | os.PathLike[str], *, config: RuntimeConfig) -> "OnnxRuntimeBackend":
    """Registry entry: the CPU backend, or the CUDA one (IO-binding subclass when installed)."""
    if config.device == "cuda":
        try:
            module = importlib.import_module(_CUDA_MODULE)
        except ModuleNotFoundError as exc:
            if exc.name != _CUDA_MODULE:
                raise
        else:
            return module.OrtCudaBackend(path, config=config)  # type: ignore[no-any-return]
    _reject_unsupported(config)
    return OnnxRuntimeBackend(path, config=config)


def _reject_unsupported(config: RuntimeConfig) -> None:
    """Options this class cannot honour raise instead of being ignored."""
    unsupported = {
        "plugins": Spelling(python=f"plugins={list(config.plugins)}", cli=f"--plugins {' '.join(config.plugins)}")
        if config.plugins else None,
        "cuda_graph": Spelling(python="cuda_graph=True", cli="--cuda-graph") if config.cuda_graph else None,
        "contexts": Spelling(python=f"contexts={config.contexts}", cli=f"--streams {config.contexts}")
        if config.contexts != 1 else None,
        "outputs_on_device": Spelling(python="outputs_on_device=True", cli="outputs kept on the GPU")
        if config.outputs_on_device else None,
    }
    given = {k: v for k, v in unsupported.items() if v is not None}
    if given:
        raise SpecError(
            f"the ONNX Runtime backend ({config.device}) does not support "
            + ", ".join(f"{{{k}}}" for k in given)
            + "; drop these options, or run a TensorRT engine ({tensorrt}) where they apply",
            spellings={**given, "tensorrt": Spelling(python="backend='tensorrt'", cli="--backend tensorrt")},
        )


def _dtype_name(ort_type: str) -> str | None:
    return _ORT_TYPES.get(ort_type)


def _spec(node: Any, *, model: str, role: str) -> TensorSpec:
    """TensorSpec from an ORT NodeArg; ORT gives dynamic dims as str (symbolic) or None."""
    dtype = _dtype_name(node.type)
    if dtype is None:
        if role == "input":
            raise ModelLoadError(
                f"model {model!r}: input {node.name!r} has type {node.type}, which numpy cannot hold; "
                f"trtkit's ONNX Runtime backend feeds numpy tensors of: {', '.join(sorted(set(_ORT_TYPES.values())))}"
            )
        dtype = node.type.removeprefix("tensor(").rstrip(")")  # reported only; ORT converts on return
    shape = tuple(node.shape) if node.shape is not None else ()
    return TensorSpec(node.name, dtype, shape)


class OnnxRuntimeBackend(BackendBase):
    """Runs an ONNX model with ONNX Runtime. Subclasses override ``_providers`` and ``infer``."""

    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike[str], *, config: RuntimeConfig | None = None) -> None:
        self.path = Path(path)
        self.config = config or RuntimeConfig()
        self.device = self.config.device
        self._ort = require("onnxruntime", purpose="running ONNX models")
        self.session = self._create_session()
        model = str(self.path)
        self._inputs = tuple(_spec(n, model=model, role="input") for n in self.session.get_inputs())
        self._outputs = tuple(_spec(n, model=model, role="output") for n in self.session.get_outputs())
        self._output_names = [s.name for s in self._outputs]

    # ------------------------------------------------------------ creation

    def _providers(self) -> list[Any]:
        """Execution providers in priority order; CUDA is checked to be installed first."""
        if self.device == "cpu":
            return [_CPU_EP]
        available = self._ort.get_available_providers()
        if _CUDA_EP not in available:
            raise BackendUnavailable(
                f"ONNX Runtime's CUDA execution provider is not available (installed providers: "
                f"{', '.join(available)}; the CPU-only 'onnxruntime' package is installed). "
                "Install the GPU build instead: pip uninstall onnxruntime && pip install onnxruntime-gpu"
            )
        return [(_CUDA_EP, {"device_id": self.config.device_id}), _CPU_EP]

    def _session_options(self) -> Any:
        opts = self._ort.SessionOptions()
        threads = self.config.threads
        if threads is not None:
            if threads < 1:
                raise SpecError(f"threads must be >= 1 (or None for ONNX Runtime's default), got {threads}")
            opts.intra_op_num_threads = threads
        # Fatal only: ORT warnings (graph cleanup) are noise on the CLI, and every ORT error is re-raised
        # as a TrtkitError carrying its message, so ORT logging it too would print it twice.
        opts.log_severity_level = 4
        return opts

    def _create_session(self) -> Any:
        if not self.path.is_file():
            raise ModelLoadError(f"ONNX model {str(self.path)!r} does not exist or is not a file; check the path")
        providers = self._providers()
        fused, self.fusions = fuse_file(self.path) if self.config.fuse else (None, FusionReport(skipped="fuse=False"))
        try:
            session = self._ort.InferenceSession(
                fused if fused is not None else str(self.path), sess_options=self._session_options(), providers=providers
            )
        except ort_errors() as exc:
            message = _ort_message(exc)
            raise ModelLoadError(f"ONNX Runtime cannot load {str(self.path)!r}: {message}. {_load_hint(message)}") from exc
        if self.device == "cuda" and _CUDA_EP not in session.get_providers():
            raise BackendUnavailable(
                f"ONNX Runtime fell back to {session.get_providers()} for {str(self.path)!r}: the CUDA execution "
                "provider failed to initialise (CUDA or cuDNN libraries missing or mismatched). Install the CUDA "
                "and cuDNN versions your onnxruntime-gpu build needs (see onnxruntime.ai CUDA EP requirements)"
            )
        return session

    # ------------------------------------------------------------ protocol

    def infer(self, feeds: Feeds) -> dict[str, np.ndarray]:
        """Run once; returns ``{output name: array}`` in the model's output order."""
        self._check_open()
        arrays = normalize_feeds(self._inputs, feeds)
        try:
            results = self.session.run(self._output_names, arrays)
        except ort_errors() as exc:
            raise self._run_error(arrays, exc) from exc
        return dict(zip(self._output_names, results))

    def _run_error(self, arrays: dict[str, Any], exc: BaseException) -> ShapeError:
        shapes = ", ".join(f"{n} {list(a.shape)}" for n, a in arrays.items())
        expected = ", ".join(f"{s.name} {s.display_shape()}" for s in self._inputs)
        return ShapeError(
            f"ONNX Runtime failed to run {str(self.path)!r} with inputs {shapes} (model inputs: {expected}): "
            f"{_ort_message(exc)}. Most often a dynamic dim has a size this model cannot take; "
            "pick sizes the model was designed for (e.g. a multiple of its stride)"
        )

    def _release(self) -> None:
        self.session = None

    def __repr__(self) -> str:
        return f"OnnxRuntimeBackend({str(self.path)!r}, device={self.device!r})"


def _load_hint(message: str) -> str:
    lowered = message.lower()
    if "ir version" in lowered or "opset" in lowered:
        version = importlib.import_module("onnxruntime").__version__
        return (
            f"The model is newer than this ONNX Runtime ({version}) supports: upgrade it "
            "(pip install -U onnxruntime) or re-export with an older opset"
        )
    return (
        "The file may be truncated, corrupt, not an ONNX model, or use an operator this ONNX Runtime "
        "does not support; check it with `trtkit inspect` or re-export it"
    )


def _ort_message(exc: BaseException) -> str:
    """ORT prefixes '[ONNXRuntimeError] : 7 : INVALID_PROTOBUF : '; keep the readable tail."""
    return _ORT_SOURCE.sub("", _ORT_PREFIX.sub("", str(exc).strip()))
