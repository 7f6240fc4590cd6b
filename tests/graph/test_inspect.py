"""``trtkit inspect`` and ``trtkit.graph.onnx_io.load_onnx`` on every real asset model and on broken files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.conftest import ASSET_MODELS, asset_model, assert_clean_error
from trtkit.errors import ModelLoadError
from trtkit.graph.inspection import inspect_model
from trtkit.graph.onnx_io import io_specs, load_onnx

# What the asset README promises about each model's IO (names, ranks, dynamic axes).
EXPECTED_INPUTS = {
    "efficientnet_lite0": ("input", [-1, 3, 224, 224]),
    "scrfd": ("input.1", [1, 3, 640, 640]),
    "yolov8n": ("images", [-1, 3, -1, -1]),
    "ppocr_det": ("x", [-1, 3, -1, -1]),
    "ppocr_rec": ("x", [-1, 3, -1, -1]),
    "ppocr_cls": ("x", [-1, 3, -1, -1]),
}


@pytest.mark.parametrize("key", sorted(ASSET_MODELS))
def test_inspect_api_on_assets(key):
    path = asset_model(key)
    info = inspect_model(path)
    model = onnx.load(str(path))
    name, shape = EXPECTED_INPUTS[key]
    assert [s.name for s in info.inputs] == [name]
    assert info.inputs[0].json_shape() == shape
    assert [s.name for s in info.outputs] == [o.name for o in model.graph.output]
    assert info.node_count >= len(model.graph.node)
    assert sum(n for _, n in info.op_histogram) == info.node_count
    from onnx import numpy_helper

    tensors = [numpy_helper.to_array(t) for t in model.graph.initializer] + [
        numpy_helper.to_array(a.t) for n in model.graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"
    ]
    assert info.param_count == sum(t.size for t in tensors) > 10_000
    assert info.param_bytes == sum(t.nbytes for t in tensors)
    text = info.render()
    assert name in text and info.outputs[0].name in text
    if -1 in shape:
        assert info.build_flags and "--minShapes=" in info.build_flags and "--maxShapes=" in info.build_flags
        assert f"{name}:8x3" in info.build_flags  # max batch 8
    else:
        assert info.build_flags is None and "static" in text


@pytest.mark.parametrize("key", ["efficientnet_lite0", "scrfd", "ppocr_rec"])
def test_inspect_cli_json(cli, key):
    path = asset_model(key)
    result = cli("inspect", path, "--json")
    assert result.code == 0, result
    data = json.loads(result.out)
    model = onnx.load(str(path), load_external_data=False)
    assert [i["name"] for i in data["inputs"]] == [i.name for i in model.graph.input]
    assert [o["name"] for o in data["outputs"]] == [o.name for o in model.graph.output]
    for item, value in zip(data["inputs"] + data["outputs"], list(model.graph.input) + list(model.graph.output)):
        dims = value.type.tensor_type.shape.dim
        assert item["shape"] == [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in dims]
        assert item["dtype"] == "float32"


def test_inspect_text_shows_symbolic_dims(cli):
    result = cli("inspect", asset_model("efficientnet_lite0"))
    assert result.code == 0, result
    assert "[batch,3,224,224]" in result.out
    assert "--maxShapes=input:8x3x224x224" in result.out


def test_external_data_model_from_another_cwd(cli, tmp_path):
    model = onnx.load(str(asset_model("efficientnet_lite0")))
    folder = tmp_path / "ext"
    folder.mkdir()
    onnx.save(model, str(folder / "m.onnx"), save_as_external_data=True, location="m.weights")
    assert (folder / "m.onnx").stat().st_size < 200_000  # the weights really are outside
    other = tmp_path / "elsewhere"
    other.mkdir()
    result = cli("inspect", "../ext/m.onnx", "--json", cwd=other)
    assert result.code == 0, result
    data = json.loads(result.out)
    assert data["inputs"][0]["shape"] == [-1, 3, 224, 224]
    assert data["external_data"] == ["m.weights"]
    assert data["param_count"] == inspect_model(asset_model("efficientnet_lite0")).param_count
    loaded = load_onnx(folder / "m.onnx")  # the API reads the external weights too
    big = max(loaded.graph.initializer, key=lambda t: len(t.raw_data))
    assert len(big.raw_data) > 1_000_000


def test_missing_external_data(cli, tmp_path):
    model = onnx.load(str(asset_model("efficientnet_lite0")))
    onnx.save(model, str(tmp_path / "m.onnx"), save_as_external_data=True, location="m.weights")
    (tmp_path / "m.weights").unlink()
    assert_clean_error(cli("inspect", tmp_path / "m.onnx"), "m.weights", "missing")
    with pytest.raises(ModelLoadError, match="external data"):
        load_onnx(tmp_path / "m.onnx")


def test_io_specs_excludes_initializers():
    model = load_onnx(asset_model("scrfd"))
    inputs, outputs = io_specs(model)
    assert [s.name for s in inputs] == ["input.1"]
    assert inputs[0].shape == (1, 3, 640, 640) and inputs[0].dtype == "float32"
    assert len(outputs) == 9 and outputs[0].shape == (1, 12800, 1)


def test_bad_files(cli, tmp_path):
    real = asset_model("scrfd").read_bytes()
    truncated = tmp_path / "half.onnx"
    truncated.write_bytes(real[: len(real) // 2])
    text = tmp_path / "notes.onnx"
    text.write_text("this is not a model\n")
    jpeg = tmp_path / "photo.onnx"
    jpeg.write_bytes(b"\xff\xd8\xff\xe0" + bytes(np.random.default_rng(0).integers(0, 255, 4000, dtype=np.uint8)))
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    assert_clean_error(cli("inspect", tmp_path / "missing.onnx"), "missing.onnx", "does not exist")
    assert_clean_error(cli("inspect", tmp_path), "directory")
    assert_clean_error(cli("inspect", truncated), "half.onnx", "truncated or corrupt")
    assert_clean_error(cli("inspect", text), "notes.onnx", "text file")
    assert_clean_error(cli("inspect", jpeg), "photo.onnx", "JPEG")
    assert_clean_error(cli("inspect", empty), "empty")


# ---------------------------------------------------------- review fixes

def test_engine_suffix_needs_an_engine(cli, tmp_path):
    """inspect applies run's container check: a text, empty or ONNX file named .plan is no engine."""
    text = tmp_path / "text.plan"
    text.write_text("hello\n")
    empty = tmp_path / "empty.engine"
    empty.write_bytes(b"")
    renamed = tmp_path / "scrfd.plan"
    shutil.copy(asset_model("scrfd"), renamed)
    assert_clean_error(cli("inspect", text), "text.plan", "too few for a TensorRT engine")
    assert_clean_error(cli("inspect", empty), "empty.engine", "0 bytes")
    assert_clean_error(cli("inspect", renamed), "is an ONNX model", "rename it to .onnx", str(tmp_path / "scrfd.onnx"))
    with pytest.raises(ModelLoadError, match="not a TensorRT engine"):
        inspect_model(renamed)


def test_json_uses_format_key(cli):
    data = json.loads(cli("inspect", asset_model("scrfd"), "--json").out)
    assert data["format"] == "onnx" and "kind" not in data


def test_suggested_sizes_come_from_metadata_or_say_placeholder():
    yolo = inspect_model(asset_model("yolov8n"))  # Ultralytics metadata imgsz [320, 320]
    assert "--maxShapes=images:8x3x320x320" in yolo.build_flags and "imgsz" in yolo.build_flags_note
    assert "640" not in yolo.build_flags
    rec = inspect_model(asset_model("ppocr_rec"))  # PaddleOCR recognizer: H 48, variable W
    assert "--optShapes=x:1x3x48x320" in rec.build_flags and "--maxShapes=x:8x3x48x1280" in rec.build_flags
    det = inspect_model(asset_model("ppocr_det"))  # no size recorded anywhere
    assert "x:1x3x640x640" in det.build_flags and "PLACEHOLDER" in det.build_flags_note
    assert "PLACEHOLDER" in det.render()
