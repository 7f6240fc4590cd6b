"""Which TensorRT is installed, and what it can do: the ONE place where versions differ.

trtkit supports every TensorRT with the tensor-name API: **TensorRT 8.5 and 8.6, 9.x, 10.x, 11.x**, the
**lean and dispatch runtimes** (``tensorrt_lean``/``tensorrt_dispatch``, run only), and **TensorRT-RTX 1.x**.
Their Python APIs match for everything trtkit calls (``trt_api.py``/``builder.py``); where they differ,
the code asks a :class:`TrtFlavor` property below instead of comparing versions itself, and each property
says why it exists. Sources: NVIDIA/TensorRT ``python/src/infer/pyCore.cpp`` and ``include/NvInfer*.h`` of
release/8.5 .. 11.1, the 11.4 and RTX 1.7 wheels (see docs/build.md, "Supported TensorRT versions").
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from .._optional import available, require
from ..errors import BackendUnavailable, SpecError

__all__ = ["TrtFlavor", "trt_flavor", "TRT_BACKENDS", "RUNTIME_ONLY_BACKENDS", "runtime_only_flavors", "SUPPORTED_RANGE"]

TRT_BACKENDS = ("tensorrt", "tensorrt-rtx")
# Run-only runtimes of full TensorRT (8.6+): they deserialize version-compatible engines only.
RUNTIME_ONLY_BACKENDS = ("tensorrt-lean", "tensorrt-dispatch")
SUPPORTED_RANGE = "TensorRT 8.5 to 11.x (and its lean/dispatch runtimes), TensorRT-RTX 1.x"
_MODULES = {"tensorrt": "tensorrt", "tensorrt-rtx": "tensorrt_rtx"}
# The PyPI bindings wheels of 10.x/11.x install ``tensorrt_lean_bindings``; the ``tensorrt_lean`` name only
# exists with the frontend sdist (or 8.6's wheel). Either spelling is the same module.
_RUNTIME_MODULES = {
    "tensorrt-lean": ("tensorrt_lean", "tensorrt_lean_bindings"),
    "tensorrt-dispatch": ("tensorrt_dispatch", "tensorrt_dispatch_bindings"),
}
_RUNTIME_HINT = {
    "tensorrt-lean": "pip install tensorrt-lean-cu13-bindings tensorrt-lean-cu13-libs (same version as the builder)",
    "tensorrt-dispatch": "pip install tensorrt-dispatch-cu13-bindings tensorrt-dispatch-cu13-libs (same version as the builder)",
}

# trtexec's --hardwareCompatibilityLevel spellings -> HardwareCompatibilityLevel member
HARDWARE_LEVELS = {"none": "NONE", "ampere+": "AMPERE_PLUS", "samecomputecapability": "SAME_COMPUTE_CAPABILITY"}


@dataclass(frozen=True)
class TrtFlavor:
    """The imported TensorRT module and what it can do."""

    backend: str  # "tensorrt", "tensorrt-rtx", "tensorrt-lean" or "tensorrt-dispatch"
    module: ModuleType
    version: str

    # ------------------------------------------------------------------ identity
    @property
    def major(self) -> int:
        return self.version_tuple[0]

    @property
    def version_tuple(self) -> tuple[int, int]:
        parts = (self.version.split(".") + ["0", "0"])[:2]
        return int(parts[0]) if parts[0].isdigit() else 0, int(parts[1]) if parts[1].isdigit() else 0

    @property
    def is_rtx(self) -> bool:
        return self.backend == "tensorrt-rtx"

    @property
    def pretty(self) -> str:
        return {"tensorrt-rtx": "TensorRT-RTX", "tensorrt-lean": "TensorRT lean runtime",
                "tensorrt-dispatch": "TensorRT dispatch runtime"}.get(self.backend, "TensorRT") + f" {self.version}"

    @property
    def can_build(self) -> bool:
        """The lean/dispatch runtimes have no Builder, network or ONNX parser."""
        return hasattr(self.module, "Builder")

    @property
    def runs_only_version_compatible(self) -> bool:
        """The lean and dispatch runtimes deserialize only engines built with --versionCompatible."""
        return self.backend in RUNTIME_ONLY_BACKENDS

    # ------------------------------------------------------------------ network
    @property
    def strongly_typed_only(self) -> bool:
        """TensorRT >= 11 and TensorRT-RTX have no weakly typed mode and no precision flags
        (BuilderFlag.FP16/INT8/BF16 raise AttributeError there)."""
        return self.is_rtx or self.major >= 11

    @property
    def has_strongly_typed_mode(self) -> bool:
        """NetworkDefinitionCreationFlag.STRONGLY_TYPED first appears in 9.0; 8.5/8.6 are weakly typed only."""
        return hasattr(self.module.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")

    def network_flags(self, *, strongly_typed: bool) -> int:
        """Creation flags for ``builder.create_network``.

        < 10: EXPLICIT_BATCH is required: the ONNX parser refuses implicit-batch networks ("only supports
        explicit batch") and dynamic shapes need it. 10.x: explicit batch is the only mode (the flag is
        deprecated and ignored). 11.x: EXPLICIT_BATCH no longer exists. STRONGLY_TYPED: 9.0+; on 11/RTX
        every network is strongly typed whether or not it is set. Bits are ``1 << int(member)``: the enum
        values were renumbered across 9/10/11.
        """
        kinds = self.module.NetworkDefinitionCreationFlag
        flags = 0
        if not self.is_rtx and self.major < 10:
            flags |= 1 << int(kinds.EXPLICIT_BATCH)
        if strongly_typed and self.has_strongly_typed_mode:
            flags |= 1 << int(kinds.STRONGLY_TYPED)
        return flags

    @property
    def io_dtype_settable(self) -> bool:
        """``ITensor.dtype`` is writable up to 10.x (trtexec --inputIOFormats=fp16:chw); read-only in 11/RTX,
        where the I/O types come from the graph."""
        return not self.strongly_typed_only

    # ------------------------------------------------------------------ builder config
    @property
    def has_tf32_flag(self) -> bool:
        """BuilderFlag.TF32 exists in every supported version (RTX too) and is ON by default in a new
        builder config: FP32 layers may use TF32 tensor cores on Ampere and later (10-bit mantissa
        inputs), which is why FP32 engines differ from ONNX Runtime by ~1e-2. trtexec --noTF32 clears it."""
        return hasattr(self.module.BuilderFlag, "TF32")

    @property
    def tactic_sources(self) -> tuple[str, ...]:
        """TacticSource members of this version. 8.5: CUBLAS, CUBLAS_LT, CUDNN, EDGE_MASK_CONVOLUTIONS,
        JIT_CONVOLUTIONS (8.5+); 10.x deprecates the library sources; 11/RTX drop CUBLAS/CUBLAS_LT/CUDNN."""
        members = getattr(self.module.TacticSource, "__members__", {})
        return tuple(members) if members else tuple(n for n in dir(self.module.TacticSource) if n.isupper())

    @property
    def has_progress_monitor(self) -> bool:
        """trt.IProgressMonitor (build progress + cancel by returning False) exists from 9.0 (10.0 on x86
        GA) and in RTX; 8.5/8.6 have none, so a build there is cancelled by abandoning it (builder.py)."""
        return hasattr(self.module, "IProgressMonitor")

    @property
    def has_version_compatibility(self) -> bool:
        """BuilderFlag.VERSION_COMPATIBLE and the lean runtime it embeds: 8.6+. TensorRT-RTX has the flag but
        no lean runtime library (the build fails loading libnvinfer_lean.so.1), and its engines never load
        across RTX releases (NVIDIA's "Engine Compatibility")."""
        return not self.is_rtx and hasattr(self.module.BuilderFlag, "VERSION_COMPATIBLE")

    @property
    def has_exclude_lean_runtime(self) -> bool:
        """BuilderFlag.EXCLUDE_LEAN_RUNTIME (plan without the embedded lean runtime): 9.0+ (not RTX, as above)."""
        return not self.is_rtx and hasattr(self.module.BuilderFlag, "EXCLUDE_LEAN_RUNTIME")

    @property
    def hardware_levels(self) -> tuple[str, ...]:
        """HardwareCompatibilityLevel members (8.6+): NONE, AMPERE_PLUS, SAME_COMPUTE_CAPABILITY (10.x+).
        TensorRT-RTX binds the enum but logs "setHardwareCompatibilityLevel() is unsupported in TensorRT-RTX":
        its portability comes from compute-capability targets instead."""
        levels = getattr(self.module, "HardwareCompatibilityLevel", None)
        if levels is None or self.is_rtx:
            return ()
        members = getattr(levels, "__members__", {})
        return tuple(members) if members else tuple(n for n in dir(levels) if n.isupper())

    @property
    def has_optimization_levels(self) -> bool:
        """IBuilderConfig.builder_optimization_level (0..5): 8.6+; 8.5 has a single level."""
        return self.is_rtx or self.version_tuple >= (8, 6)

    # ------------------------------------------------------------------ contexts
    @property
    def profile_sharing(self) -> str:
        """Whether concurrent execution contexts may use the same optimization profile.

        "always": 10.0+ and RTX (PROFILE_SHARING_0806 is on and cannot be turned off).
        "preview": 8.6 and 9.x, only for engines built with PreviewFeature.PROFILE_SHARING_0806
                   (trtkit build sets it there and records it in the sidecar).
        "never": 8.5: "each execution context in concurrent use must use a separate optimization
                 profile" (NvInferRuntime.h); a second context asking for profile 0 is refused, and the
                 8.5-10.x bindings raise that refusal with the GIL released, which crashes Python
                 (the segfault of contexts=2). So trtkit never asks for a profile it cannot get.
        """
        if self.is_rtx or self.major >= 10:
            return "always"
        preview = getattr(self.module, "PreviewFeature", None)
        if preview is not None and hasattr(preview, "PROFILE_SHARING_0806"):
            return "preview"
        return "never"

    # ------------------------------------------------------------------ runtime
    @property
    def runtime_allows_host_code(self) -> bool:
        """Runtime.engine_host_code_allowed (8.6+) must be True to deserialize a version-compatible plan
        (its lean runtime is host code); Polygraphy sets it for every engine."""
        return hasattr(self.module.Runtime, "engine_host_code_allowed")


def _import_first(names: tuple[str, ...]) -> ModuleType | None:
    for name in names:
        if available(name):
            return importlib.import_module(name)
    return None


def runtime_only_flavors() -> list[TrtFlavor]:
    """The lean/dispatch runtimes that are installed (none is imported when absent)."""
    out = []
    for backend, names in _RUNTIME_MODULES.items():
        mod = _import_first(names)
        if mod is not None:
            out.append(TrtFlavor(backend=backend, module=mod, version=str(getattr(mod, "__version__", "0"))))
    return out


def trt_flavor(backend: str = "auto") -> TrtFlavor:
    """Import TensorRT (``tensorrt``), TensorRT-RTX (``tensorrt-rtx``), a run-only runtime
    (``tensorrt-lean``/``tensorrt-dispatch``) or whichever builder is installed (``auto``, preferring full TensorRT)."""
    if backend == "auto":
        for name in TRT_BACKENDS:
            if available(_MODULES[name]):
                return trt_flavor(name)
        raise BackendUnavailable(
            "neither TensorRT nor TensorRT-RTX is installed; install one: pip install 'trtkit[trt]' "
            "(TensorRT 10/11) or pip install 'trtkit[rtx]' (TensorRT-RTX, builds engines without a GPU)"
        )
    if backend in _RUNTIME_MODULES:
        mod = _import_first(_RUNTIME_MODULES[backend])
        if mod is None:
            raise BackendUnavailable(f"the {backend} runtime is not installed; install it with: {_RUNTIME_HINT[backend]}")
        return TrtFlavor(backend=backend, module=mod, version=str(getattr(mod, "__version__", "0")))
    if backend not in _MODULES:
        raise SpecError(f"unknown TensorRT backend {backend!r}; choose one of: auto, {', '.join(TRT_BACKENDS)}")
    mod = require(_MODULES[backend])
    return TrtFlavor(backend=backend, module=mod, version=str(getattr(mod, "__version__", "0")))
