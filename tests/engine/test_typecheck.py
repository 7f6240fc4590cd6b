"""mypy on the GPU runtime against TensorRT's real Python API.

``tensorrt-stubs`` exists on PyPI (10.8 to 10.13) but depends on the full
``tensorrt`` package, which cannot be installed here, and installing its
``tensorrt/`` stub folder would make ``import tensorrt`` succeed as an empty
namespace package. So stubs are generated here from the installed
``tensorrt_rtx`` bindings with mypy's stubgen (into a temp dir, test-only) and
exposed under the name ``tensorrt``, which is what the runtime annotates against.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNTIME_FILES = [
    "src/trtkit/engine/trt_api.py",
    "src/trtkit/engine/builder.py",
    "src/trtkit/engine/info.py",
    "src/trtkit/engine/flavor.py",
    "src/trtkit/backends/tensorrt.py",
    "src/trtkit/engine/profiles.py",
    "src/trtkit/backends/_device_io.py",
    "src/trtkit/backends/ort_cuda.py",
    "src/trtkit/backends/cuda.py",
    "src/trtkit/engine/plan_file.py",
]


def _split_params(text: str) -> list[str]:
    parts, depth, buf = [], 0, ""
    for ch in text:
        depth += ch in "[("
        depth -= ch in "])"
        if ch == "," and depth == 0:
            parts.append(buf)
            buf = ""
        else:
            buf += ch
    return parts + ([buf] if buf.strip() else [])


def _fix_defaults(line: str) -> str:
    """stubgen writes ``a: T = ..., b: U`` for some pybind11 overloads; give later params a default too."""
    m = re.match(r"^(\s*def \w+\()(.*)(\) -> .*)$", line)
    if not m or "= ..." not in m.group(2):
        return line
    params, seen = _split_params(m.group(2)), False
    for i, p in enumerate(params):
        if "= ..." in p:
            seen = True
        elif seen and ":" in p and not p.strip().startswith("*"):
            params[i] = p + " = ..."
    return m.group(1) + ",".join(params) + m.group(3)


@pytest.fixture(scope="module")
def trt_stubs(tmp_path_factory) -> Path:
    pytest.importorskip("tensorrt_rtx")
    pytest.importorskip("mypy")
    out = tmp_path_factory.mktemp("stubs")
    subprocess.run(
        [sys.executable, "-c", "import sys; from mypy.stubgen import main; main(sys.argv[1:])", "-p", "tensorrt_rtx_bindings", "-o", str(out)],
        check=True, capture_output=True, text=True, timeout=300,
    )
    pkg = out / "tensorrt"
    pkg.mkdir()
    src = out / "tensorrt_rtx_bindings"
    (pkg / "__init__.pyi").write_text((src / "__init__.pyi").read_text())
    body = (src / "tensorrt_rtx.pyi").read_text().splitlines()
    # The module's ``bool: DataType`` shadows the builtin in every ``-> bool`` of the stub.
    body = ["import builtins as _builtins"] + [
        line if line.startswith("bool:") else re.sub(r"(->\s*|:\s*)bool\b", r"\1_builtins.bool", line) for line in body
    ]
    (pkg / "tensorrt_rtx.pyi").write_text("\n".join(_fix_defaults(line) for line in body) + "\n")
    return out


def _mypy(stubs: Path, *files: str) -> list[str]:
    """mypy errors in ``files`` only (stubgen's output has errors of its own that do not concern us)."""
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "--follow-imports=silent", "--cache-dir", str(stubs / ".mypy_cache"), *files],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "MYPYPATH": str(stubs)},
    )
    assert "Found" in proc.stdout or "Success" in proc.stdout, proc.stdout + proc.stderr
    return [line for line in proc.stdout.splitlines() if ": error:" in line and not line.startswith(str(stubs))]


def test_runtime_type_checks_against_tensorrt_api(trt_stubs, tmp_path):
    # Control first: a misspelt method and a wrong argument count must be caught, or the check is vacuous.
    bad = tmp_path / "bad_calls.py"
    bad.write_text(
        "import tensorrt as trt\n"
        "def f(context: trt.IExecutionContext, engine: trt.ICudaEngine) -> None:\n"
        "    context.execute_async_v2(0)\n"
        "    engine.get_tensor_profile_shape('x')\n"
    )
    control = _mypy(trt_stubs, str(bad))
    assert any("execute_async_v2" in e for e in control) and any("get_tensor_profile_shape" in e for e in control), control
    assert _mypy(trt_stubs, *RUNTIME_FILES) == []
