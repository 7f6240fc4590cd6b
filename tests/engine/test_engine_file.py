"""engine_file.read_engine_file on real engines built by tensorrt_rtx here (the builder needs no GPU)."""

from __future__ import annotations

import json
import struct

import pytest

from trtkit.engine.plan_file import read_engine_file
from trtkit.errors import ModelLoadError
from tests.conftest import asset_model

pytest.importorskip("tensorrt_rtx")


@pytest.fixture(scope="module")
def relu_engine(tmp_path_factory):
    from tests.gpu._engines import build_relu_engine

    return build_relu_engine(tmp_path_factory.mktemp("eng") / "relu.plan")


def test_plain_rtx_plan(relu_engine):
    ef = read_engine_file(relu_engine)
    assert ef.kind == "plan" and ef.metadata is None
    assert ef.flavor == "tensorrt-rtx"
    assert ef.plan == relu_engine.read_bytes()


def test_ultralytics_container_keeps_metadata_and_plan(relu_engine, tmp_path):
    meta = {"names": {"0": "person"}, "imgsz": [640, 640], "stride": 32, "task": "detect"}
    blob = json.dumps(meta).encode()
    path = tmp_path / "yolo.engine"
    path.write_bytes(struct.pack("<I", len(blob)) + blob + relu_engine.read_bytes())
    ef = read_engine_file(path)
    assert ef.kind == "ultralytics" and ef.metadata == meta
    assert ef.plan == relu_engine.read_bytes() and ef.flavor == "tensorrt-rtx"


@pytest.mark.parametrize("cut", [0, 10, 63])
def test_truncated_file_is_a_clear_error(relu_engine, tmp_path, cut):
    path = tmp_path / "cut.engine"
    path.write_bytes(relu_engine.read_bytes()[:cut])
    with pytest.raises(ModelLoadError, match="truncated or not an engine"):
        read_engine_file(path)


def test_onnx_and_text_files_are_not_engines(tmp_path):
    with pytest.raises(ModelLoadError, match="not a TensorRT engine.*ONNX"):
        read_engine_file(_copy_head(asset_model("scrfd"), tmp_path / "model.engine"))
    text = tmp_path / "notes.plan"
    text.write_text("this is a text file, not an engine " * 10)
    with pytest.raises(ModelLoadError, match="not a TensorRT engine"):
        read_engine_file(text)
    with pytest.raises(ModelLoadError, match="does not exist"):
        read_engine_file(tmp_path / "missing.engine")


def _copy_head(src, dst):
    dst.write_bytes(src.read_bytes()[:4096])
    return dst
