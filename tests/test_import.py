"""``import trtkit`` stays light: no torch, ONNX Runtime, TensorRT, OpenCV or even onnx."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "onnxruntime", "tensorrt", "tensorrt_rtx", "cv2", "onnx")


def test_import_trtkit_pulls_in_no_heavy_dependency():
    code = (
        "import sys, trtkit, trtkit.cli, trtkit.spec, trtkit.errors; "
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "", f"import trtkit imported: {proc.stdout.strip()}"


def test_cli_help_pulls_in_no_heavy_dependency():
    code = (
        "import sys\nfrom trtkit.cli import build_parser\nbuild_parser()\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "", f"building the CLI parser imported: {proc.stdout.strip()}"
