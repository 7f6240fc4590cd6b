"""trtkit.load: dispatch by extension, clear errors before any backend is imported."""

from __future__ import annotations

import pytest

import trtkit
from trtkit.errors import ModelLoadError, SpecError


def test_unknown_extension_names_the_choices(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"\0" * 16)
    with pytest.raises(ModelLoadError, match=r"expected one of \.onnx, \.plan, \.engine, \.trt.*backend='onnxruntime\|ort-cuda\|tensorrt'") as info:
        trtkit.load(path)
    assert "--backend" not in str(info.value)  # Python callers read the keyword; the CLI prints the flag
    assert "choose a backend with --backend onnxruntime|ort-cuda|tensorrt" in info.value.render("cli")


def test_missing_file(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        trtkit.load(tmp_path / "nope.onnx")


def test_directory(tmp_path):
    with pytest.raises(ModelLoadError, match="is a directory"):
        trtkit.load(tmp_path)


def test_unknown_backend_name(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"x")
    with pytest.raises(SpecError, match="unknown backend 'openvino'; choose one of: auto, onnxruntime, ort-cuda, tensorrt, ort-cpu"):
        trtkit.load(path, backend="openvino")


def test_public_api_names_resolve():
    # Every lazily exported name must point at something that exists.
    for name in trtkit.__all__:
        assert getattr(trtkit, name) is not None, name
