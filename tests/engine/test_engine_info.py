"""Engine sidecar and `trtkit inspect` on engines, with an engine really built by TensorRT-RTX."""

from __future__ import annotations

import json

import pytest

from tests.conftest import HAS_GPU, asset_model, assert_clean_error

pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is not installed (pip install 'trtkit[rtx]')")

from trtkit import BuildConfig  # noqa: E402
from trtkit.engine.build import build  # noqa: E402
from trtkit.engine.info import file_sha256, inspect_engine, read_sidecar, sidecar_path  # noqa: E402
from trtkit.errors import EngineError  # noqa: E402


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    out = tmp_path_factory.mktemp("engine") / "scrfd.plan"
    build(asset_model("scrfd"), out, config=BuildConfig(backend="tensorrt-rtx", optimization_level=0))
    return out


def test_sidecar_path():
    assert sidecar_path("a/model.plan").name == "model.plan.json"


def test_read_sidecar(engine):
    side = read_sidecar(engine)
    assert side is not None and side["backend"] == "tensorrt-rtx"
    assert side["engine_sha256"] == file_sha256(engine)


def test_read_sidecar_missing_and_stale(engine, tmp_path):
    copy = tmp_path / "copy.plan"
    copy.write_bytes(engine.read_bytes())
    assert read_sidecar(copy) is None  # no sidecar
    sidecar_path(copy).write_text(sidecar_path(engine).read_text())
    assert read_sidecar(copy) is not None  # same bytes, same sha: valid
    copy.write_bytes(engine.read_bytes() + b"x")
    assert read_sidecar(copy) is None  # describes another engine
    assert read_sidecar(copy, verify=False) is not None


def test_corrupt_sidecar_is_an_engine_error(engine, tmp_path):
    copy = tmp_path / "c.plan"
    copy.write_bytes(engine.read_bytes())
    sidecar_path(copy).write_text("{not json")
    with pytest.raises(EngineError, match="not readable JSON"):
        read_sidecar(copy)
    sidecar_path(copy).write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(EngineError, match="trtkit-engine/1"):
        read_sidecar(copy)


def test_inspect_engine_from_sidecar(engine):
    info = inspect_engine(engine)
    data = info.to_json()
    assert data["sidecar_state"] == "ok" and data["sha256"] == file_sha256(engine)
    assert [t["name"] for t in data["sidecar"]["outputs"]][:3] == ["score_8", "score_16", "score_32"]
    text = info.render()
    assert "tensorrt-rtx" in text and "input.1" in text and "[1,3,640,640]" in text
    if not HAS_GPU:  # the engine itself cannot be opened here; say why instead of failing
        assert data["engine"] is None and "engine not opened" in text


def test_inspect_stale_and_missing(engine, tmp_path):
    copy = tmp_path / "s.plan"
    copy.write_bytes(engine.read_bytes() + b"x")
    sidecar_path(copy).write_text(sidecar_path(engine).read_text())
    info = inspect_engine(copy)
    assert info.sidecar_state == "stale" and info.sidecar is None
    assert any("describes a different engine" in n for n in info.notes)
    sidecar_path(copy).unlink()
    assert inspect_engine(copy).sidecar_state == "missing"


def test_inspect_cli_json(engine, cli):
    res = cli("inspect", engine, "--json")
    assert res.code == 0, res
    data = json.loads(res.out)
    assert data["sidecar"]["inputs"][0]["shape"] == [1, 3, 640, 640]
    assert data["format"] == "tensorrt-engine" and "kind" not in data  # same key as ONNX's "format": "onnx"
    assert data["container"] == "plan" and data["flavor"] == "tensorrt-rtx"


def test_inspect_missing_engine(tmp_path):
    with pytest.raises(EngineError, match="does not exist"):
        inspect_engine(tmp_path / "nope.plan")


@pytest.mark.gpu
def test_inspect_reads_engine_with_gpu(engine):
    """Only where the runtime can deserialize (a GPU TensorRT-RTX supports): per-layer info from IEngineInspector."""
    info = inspect_engine(engine)
    assert info.runtime is not None, info.runtime_note
    assert info.runtime["inputs"][0]["name"] == "input.1" and info.runtime["layers"]


def test_inspect_truncated_plan_fails(engine, tmp_path, cli):
    cut = tmp_path / "cut.plan"
    cut.write_bytes(engine.read_bytes()[:1000])
    assert_clean_error(cli("inspect", cut), "truncated", "header declares", "holds 1000")


def test_inspect_without_sidecar_says_only_what_is_missing(engine, tmp_path):
    bare = tmp_path / "bare.plan"
    bare.write_bytes(engine.read_bytes())
    notes = " ".join(inspect_engine(bare).notes)
    assert "no sidecar (bare.plan.json)" in notes and "not built by trtkit" not in notes
