"""trtexec's numerics/portability flags of `trtkit build`, Ctrl-C during a build, and the version table
(flavor.py), with the real TensorRT-RTX builder (CPU) and the real 11.4 lean runtime wheel when installed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import asset_model, assert_clean_error

trt = pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is not installed (pip install 'trtkit[rtx]')")

from trtkit.engine.build_options import parse_io_formats, parse_tactic_sources  # noqa: E402
from trtkit.engine.flavor import TrtFlavor, trt_flavor  # noqa: E402
from trtkit.errors import SpecError  # noqa: E402

FAST = ("--builderOptimizationLevel", "0", "--backend", "tensorrt-rtx")


def _flags(engine: Path) -> dict:
    return json.loads(Path(str(engine) + ".json").read_text())["flags"]


def test_sidecar_records_tf32_and_tactic_sources(tmp_path, cli):
    on = tmp_path / "on.plan"
    assert cli("build", asset_model("scrfd"), "-o", on, *FAST).code == 0
    assert _flags(on)["tf32"] is True  # TensorRT's default
    off = tmp_path / "off.plan"
    res = cli("build", asset_model("scrfd"), "-o", off, *FAST, "--noTF32", "--tacticSources=-JIT_CONVOLUTIONS",
              "--workspace=512", "--skipInference")
    assert res.code == 0, res
    flags = _flags(off)
    assert flags["tf32"] is False and flags["workspace_bytes"] == 512 * 2**20
    assert "JIT_CONVOLUTIONS" in _flags(on)["tactic_sources"] and "JIT_CONVOLUTIONS" not in flags["tactic_sources"]
    assert {"version_compatible", "exclude_lean_runtime", "hardware_compatibility", "profile_sharing"} <= set(flags)
    shown = cli("inspect", off)
    assert shown.code == 0 and "TF32 off" in shown.out and "tactic sources EDGE_MASK_CONVOLUTIONS" in shown.out, shown


@pytest.mark.parametrize("args, needles", [
    (("--tacticSources=-CUBLAS",), ("CUBLAS is not a tactic source", "JIT_CONVOLUTIONS")),
    (("--tacticSources=CUDNN",), ("+NAME or -NAME",)),
    (("--inputIOFormats=fp16:chw",), ("strongly typed", "keep_io_types=False")),
    (("--inputIOFormats=fp16:hwc8",), ("only chw",)),
    (("--versionCompatible",), ("cannot build version-compatible engines", "RTX release")),
    (("--excludeLeanRuntime",), ("add --versionCompatible",)),
    (("--hardwareCompatibilityLevel=ampere+",), ("compute capabilities",)),
    (("--hardwareCompatibilityLevel=turing",), ("none, ampere+ or sameComputeCapability",)),
    (("--dumpLayerInfo",), ("needs a GPU", "trtkit inspect")),
    (("--workspace=8", "--memPoolSize=workspace:8"), ("give one",)),
])
def test_refusals_before_any_build(tmp_path, cli, args, needles):
    if "--dumpLayerInfo" in args and os.environ.get("TRTKIT_HAS_GPU"):
        pytest.skip("a GPU is present")
    out = tmp_path / "x.plan"
    assert_clean_error(cli("build", asset_model("scrfd"), "-o", out, *FAST, *args), *needles)
    assert not out.exists() and not Path(str(out) + ".json").exists()


def test_strongly_typed_is_explained_on_rtx(tmp_path, cli):
    res = cli("build", asset_model("scrfd"), "-o", tmp_path / "s.plan", *FAST, "--stronglyTyped")
    assert res.code == 0 and "builds every network strongly typed; the flag changes nothing" in res.err, res


def test_device_note_says_what_the_sidecar_records(tmp_path, cli):
    out = tmp_path / "d.plan"
    res = cli("build", asset_model("scrfd"), "-o", out, *FAST, "--device", "1")
    assert res.code == 0, res
    device = json.loads(Path(str(out) + ".json").read_text())["device"]
    expected = "the sidecar records no device" if device is None else f"the sidecar records device 0 ({device['name']})"
    assert expected in res.err, res


def test_parsers():
    assert parse_tactic_sources("-cublas, +CUDNN", ("CUBLAS", "CUDNN")) == (("CUBLAS", False), ("CUDNN", True))
    assert parse_io_formats("fp16:chw,fp32:CHW", flag="--inputIOFormats") == ("float16", "float32")
    with pytest.raises(SpecError, match="TYPE:FORMAT"):
        parse_io_formats("fp16", flag="--inputIOFormats")
    with pytest.raises(SpecError, match="INT8/BF16/FP8 I/O"):
        parse_io_formats("int8:chw", flag="--outputIOFormats")


# ---------------------------------------------------------------- Ctrl-C

def _interrupt_build(cmd: list[str], marker: str, tmp_path: Path) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    seen = ""
    deadline = time.monotonic() + 120
    while marker not in seen and time.monotonic() < deadline:
        ch = proc.stderr.read(1)
        if not ch:
            break
        seen += ch
    assert marker in seen, seen
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, seen + err)


def test_ctrl_c_cancels_a_build_through_the_progress_monitor(tmp_path):
    """RTX has IProgressMonitor: Ctrl-C makes step_complete return False, the build stops, nothing is written."""
    out = tmp_path / "eff.plan"
    cmd = [sys.executable, "-m", "trtkit", "build", str(asset_model("efficientnet_lite0")), "-o", str(out),
           "--backend", "tensorrt-rtx", "--dynamic-batch", "1:8:32", "--progress", "--force"]
    res = _interrupt_build(cmd, "[", tmp_path)  # the progress line has started: the builder is running
    assert res.returncode == 130, res
    assert "error: interrupted; no partial output was written" in res.stderr and "Traceback" not in res.stderr
    assert list(tmp_path.iterdir()) == [], list(tmp_path.iterdir())


def test_ctrl_c_abandons_a_build_without_progress_monitor(tmp_path):
    """TensorRT 8.5/8.6 have no IProgressMonitor: the same real build with the monitor withheld exercises that path."""
    out = tmp_path / "eff.plan"
    script = (
        "import sys, trtkit.engine.builder as b\n"
        "def none(*a, **k):\n    print('BUILD-START', file=sys.stderr, flush=True)\n    return None\n"
        "b.progress_monitor = none\n"
        "from trtkit.cli import main\n"
        f"sys.exit(main(['build', {str(asset_model('efficientnet_lite0'))!r}, '-o', {str(out)!r}, '--backend', "
        "'tensorrt-rtx', '--dynamic-batch', '1:8:32', '--force']))\n"
    )
    res = _interrupt_build([sys.executable, "-c", script], "BUILD-START", tmp_path)
    assert res.returncode == 130, res
    assert "error: interrupted; no partial output was written" in res.stderr and "Traceback" not in res.stderr
    assert list(tmp_path.iterdir()) == [], list(tmp_path.iterdir())


# ---------------------------------------------------------------- the version table

class _Fake:
    """A stand-in *module* carrying only the attributes a version has (names from the real headers)."""

    def __init__(self, **attrs):
        self.__dict__.update(attrs)


def _enum(*names):
    return type("E", (), {n: i for i, n in enumerate(names)} | {"__members__": {n: i for i, n in enumerate(names)}})


def test_network_flags_per_version():
    """Bits are 1 << member: 8.5 needs EXPLICIT_BATCH, 10 needs nothing, 11 has no EXPLICIT_BATCH."""
    v85 = TrtFlavor("tensorrt", _Fake(NetworkDefinitionCreationFlag=_enum("EXPLICIT_BATCH", "EXPLICIT_PRECISION")), "8.5.3.1")
    v10 = TrtFlavor("tensorrt", _Fake(NetworkDefinitionCreationFlag=_enum("EXPLICIT_BATCH", "STRONGLY_TYPED")), "10.13.0")
    v11 = TrtFlavor("tensorrt", _Fake(NetworkDefinitionCreationFlag=_enum("STRONGLY_TYPED", "PREFER_JIT_PYTHON_PLUGINS")), "11.4.0")
    assert v85.network_flags(strongly_typed=False) == 1 and not v85.has_strongly_typed_mode
    assert v10.network_flags(strongly_typed=False) == 0 and v10.network_flags(strongly_typed=True) == 2
    assert v11.network_flags(strongly_typed=True) == 1 and v11.strongly_typed_only
    rtx = trt_flavor("tensorrt-rtx")
    assert rtx.network_flags(strongly_typed=True) == 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def test_profile_sharing_per_version():
    assert TrtFlavor("tensorrt", _Fake(PreviewFeature=_enum("FASTER_DYNAMIC_SHAPES_0805")), "8.5.3.1").profile_sharing == "never"
    assert TrtFlavor("tensorrt", _Fake(PreviewFeature=_enum("PROFILE_SHARING_0806")), "8.6.1").profile_sharing == "preview"
    assert TrtFlavor("tensorrt", _Fake(), "10.0.1").profile_sharing == "always"
    assert trt_flavor("tensorrt-rtx").profile_sharing == "always"


def test_rtx_capabilities_match_its_bindings():
    rtx = trt_flavor("tensorrt-rtx")
    assert rtx.has_tf32_flag and rtx.has_progress_monitor and rtx.strongly_typed_only and rtx.can_build
    assert not rtx.has_version_compatibility and rtx.hardware_levels == ()
    assert set(rtx.tactic_sources) == {"EDGE_MASK_CONVOLUTIONS", "JIT_CONVOLUTIONS"}
