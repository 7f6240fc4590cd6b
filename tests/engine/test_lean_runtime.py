"""The TensorRT lean/dispatch runtime path of trtkit.load, with the real 11.4 lean runtime wheel
(tensorrt-lean-cu13-bindings + -libs, 45 MB from PyPI) where installed. Without a GPU only what
precedes deserialization can run: the import, the class checks, the refusal of a plan that is not
version-compatible, and the CUDA check that must come before any Runtime (one made without a usable
driver segfaults when touched)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

import trtkit
from tests.conftest import HAS_GPU
from trtkit.backends.tensorrt import choose_flavors
from trtkit.engine.flavor import runtime_only_flavors, trt_flavor
from trtkit.engine.plan_file import read_engine_file
from trtkit.errors import BackendUnavailable, EngineError

LEAN = [f for f in runtime_only_flavors() if f.backend == "tensorrt-lean"]
pytestmark = pytest.mark.skipif(not LEAN, reason="no lean runtime installed (pip install tensorrt-lean-cu13-bindings tensorrt-lean-cu13-libs)")


def _full_trt_installed() -> bool:
    try:
        trt_flavor("tensorrt")
    except BackendUnavailable:
        return False
    return True


@pytest.fixture(scope="module")
def full_plan(tmp_path_factory) -> Path:
    """A plan with full TensorRT's magic: a real RTX-built plan whose first four bytes say "ftrt"."""
    from tests.gpu._engines import build_relu_engine

    rtx = build_relu_engine(tmp_path_factory.mktemp("lean") / "relu.engine")
    out = rtx.with_name("full.plan")
    out.write_bytes(b"ftrt" + rtx.read_bytes()[4:])
    return out


def _sidecar(plan: Path, *, version_compatible: bool) -> None:
    side = {"format": "trtkit-engine/1", "engine_sha256": hashlib.sha256(plan.read_bytes()).hexdigest(),
            "backend": "tensorrt", "backend_version": "10.13.0.35", "precision": "fp32",
            "flags": {"version_compatible": version_compatible, "tf32": True}}
    Path(str(plan) + ".json").write_text(json.dumps(side))


def test_lean_module_is_a_runtime_without_a_builder():
    lean = LEAN[0]
    assert lean.module.__name__ in ("tensorrt_lean", "tensorrt_lean_bindings")
    assert not lean.can_build and lean.runs_only_version_compatible and lean.runtime_allows_host_code
    for cls in ("Runtime", "ICudaEngine", "IExecutionContext", "IOutputAllocator", "ILogger"):
        assert hasattr(lean.module, cls), cls
    assert not hasattr(lean.module, "OnnxParser")


@pytest.mark.skipif(_full_trt_installed(), reason="full TensorRT is installed: it runs the plan")
def test_non_version_compatible_plan_is_refused_clearly(full_plan):
    _sidecar(full_plan, version_compatible=False)
    with pytest.raises(EngineError, match="not version-compatible.*runs version-compatible engines only.*--versionCompatible"):
        trtkit.load(full_plan)


@pytest.mark.skipif(_full_trt_installed(), reason="full TensorRT is installed: it runs the plan")
@pytest.mark.skipif(HAS_GPU, reason="checks the no-GPU path")
@pytest.mark.parametrize("vc", [True, None])
def test_version_compatible_plan_goes_to_the_lean_runtime_after_the_cuda_check(full_plan, vc):
    side = Path(str(full_plan) + ".json")
    side.unlink(missing_ok=True)
    if vc:
        _sidecar(full_plan, version_compatible=True)
    assert [f.backend for f in choose_flavors(read_engine_file(full_plan))][:1] == ["tensorrt-lean"]
    with pytest.raises(BackendUnavailable, match="no usable NVIDIA GPU/driver for TensorRT lean runtime 11"):
        trtkit.load(full_plan)  # no segfault: CUDA is checked before the lean Runtime is made
