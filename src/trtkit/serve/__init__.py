"""Deploying on NVIDIA Triton Inference Server.

* :func:`~trtkit.serve.repository.write_repository` (``trtkit triton``) writes a
  model repository: native ``tensorrt_plan`` / ``onnxruntime_onnx`` configs, or
  trtkit in the Python backend, and task pipelines as ensembles.
* :class:`~trtkit.serve.server.TritonServer` (``trtkit serve``) runs a real
  ``tritonserver`` on it.

Nothing heavy is imported here; the submodules import what they need.
"""

from __future__ import annotations

__all__ = ["write_repository", "TritonOptions", "TritonServer", "ServerConfig"]


def __getattr__(name: str):  # type: ignore[no-untyped-def]
    if name == "write_repository":
        from .repository import write_repository

        return write_repository
    if name == "TritonOptions":
        from .config import TritonOptions

        return TritonOptions
    if name in ("TritonServer", "ServerConfig"):
        from . import server

        return getattr(server, name)
    raise AttributeError(f"module 'trtkit.serve' has no attribute {name!r}")
