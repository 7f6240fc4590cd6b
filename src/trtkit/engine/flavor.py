"""Choosing between TensorRT and TensorRT-RTX. Their Python APIs match, so one
adapter serves both; the differences that matter are recorded here.

- TensorRT 10.x: weakly typed networks by default; FP16/BF16/INT8 builder flags exist.
- TensorRT 11.x and TensorRT-RTX: networks are always strongly typed; precision
  comes from the ONNX graph, and the precision builder flags are gone.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

from .._optional import available, require
from ..errors import BackendUnavailable, SpecError

__all__ = ["TrtFlavor", "trt_flavor", "TRT_BACKENDS"]

TRT_BACKENDS = ("tensorrt", "tensorrt-rtx")
_MODULES = {"tensorrt": "tensorrt", "tensorrt-rtx": "tensorrt_rtx"}


@dataclass(frozen=True)
class TrtFlavor:
    """The imported TensorRT module and what it can do."""

    backend: str  # "tensorrt" or "tensorrt-rtx"
    module: ModuleType
    version: str

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    @property
    def is_rtx(self) -> bool:
        return self.backend == "tensorrt-rtx"

    @property
    def strongly_typed_only(self) -> bool:
        """TensorRT >= 11 and TensorRT-RTX have no weakly typed mode and no precision flags."""
        return self.is_rtx or self.major >= 11


def trt_flavor(backend: str = "auto") -> TrtFlavor:
    """Import TensorRT (``tensorrt``), TensorRT-RTX (``tensorrt-rtx``) or whichever is installed (``auto``,
    preferring full TensorRT)."""
    if backend == "auto":
        for name in TRT_BACKENDS:
            if available(_MODULES[name]):
                return trt_flavor(name)
        raise BackendUnavailable(
            "neither TensorRT nor TensorRT-RTX is installed; install one: pip install 'trtkit[trt]' "
            "(TensorRT 10/11) or pip install 'trtkit[rtx]' (TensorRT-RTX, builds engines without a GPU)"
        )
    if backend not in _MODULES:
        raise SpecError(f"unknown TensorRT backend {backend!r}; choose one of: auto, {', '.join(TRT_BACKENDS)}")
    mod = require(_MODULES[backend])
    return TrtFlavor(backend=backend, module=mod, version=str(getattr(mod, "__version__", "0")))
