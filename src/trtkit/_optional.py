"""The one place heavy optional dependencies are imported.

``import trtkit`` must not import torch, TensorRT, ONNX Runtime or CUDA. Modules
call :func:`require` at the point of use; a missing package raises
:class:`~trtkit.errors.BackendUnavailable` with the exact install command.
Nothing is ever installed automatically.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import BackendUnavailable

__all__ = ["require", "available", "INSTALL_HINTS"]

# module name -> (what it is for, how to install it)
INSTALL_HINTS: dict[str, tuple[str, str]] = {
    "torch": ("PyTorch (needed by export and by compare against a PyTorch source)", "pip install 'trtkit[torch]'"),
    "onnx": ("the onnx package", "pip install onnx"),
    "onnxruntime": ("ONNX Runtime", "pip install onnxruntime  (or onnxruntime-gpu for the CUDA EP: pip install 'trtkit[gpu]')"),
    "onnxslim": ("onnxslim (graph simplification)", "pip install onnxslim"),
    "onnxscript": ("onnxscript (the torch.export-based ONNX exporter)", "pip install onnxscript"),
    "onnxconverter_common": ("onnxconverter-common (FP16 graph conversion)", "pip install 'trtkit[quant]'"),
    "tensorrt": ("NVIDIA TensorRT", "pip install 'trtkit[trt]'  (TensorRT 10 or 11; see NVIDIA's install guide)"),
    "tensorrt_rtx": ("NVIDIA TensorRT-RTX", "pip install 'trtkit[rtx]'  (tensorrt-rtx-cu13)"),
    "cuda.bindings.runtime": ("cuda-python (CUDA runtime bindings)", "pip install 'trtkit[gpu]'  (cuda-python)"),
    "cv2": ("OpenCV", "pip install 'trtkit[vision]'  (opencv-python-headless)"),
    "PIL": ("Pillow", "pip install 'trtkit[vision]'  (pillow)"),
    "pyclipper": ("pyclipper (polygon offsetting for OCR text boxes)", "pip install 'trtkit[vision]'  (pyclipper)"),
    "matplotlib": ("matplotlib (bench --plot)", "pip install 'trtkit[plot]'"),
}


def require(name: str, *, purpose: str | None = None) -> ModuleType:
    """Import and return module ``name``, or raise BackendUnavailable with an install hint."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        what, hint = INSTALL_HINTS.get(name, (name, f"pip install {name.split('.')[0]}"))
        need = f" for {purpose}" if purpose else ""
        raise BackendUnavailable(
            f"{what} is required{need} but cannot be imported ({exc}). Install it with: {hint}"
        ) from exc


def available(name: str) -> bool:
    """True when ``name`` imports. Never raises for a missing package."""
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True
