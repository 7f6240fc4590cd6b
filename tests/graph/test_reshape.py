"""``trtkit reshape`` on the real asset models, checked independently with ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tests.conftest import asset_model, assert_clean_error
from tests.models import save_concat_const_batch, save_two_inputs
from trtkit.errors import ReshapeError, ShapeError, SpecError
from trtkit.graph.onnx_io import io_specs, load_onnx
from trtkit.graph.reshape import ReshapeConfig, reshape


def _run(path, feeds):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _dims(path, which="input"):
    model = onnx.load(str(path))
    values = model.graph.input if which == "input" else model.graph.output
    return [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values]


def test_efficientnet_static_batch_4_then_dynamic_again(cli, tmp_path):
    src = asset_model("efficientnet_lite0")
    static = tmp_path / "b4.onnx"
    result = cli("reshape", src, "-o", static, "--shapes", "input:4x3x224x224")
    assert result.code == 0, result
    assert _dims(static) == [[4, 3, 224, 224]]
    assert _dims(static, "output") == [[4, 1000]]
    x = np.random.default_rng(1).standard_normal((4, 3, 224, 224)).astype(np.float32)
    np.testing.assert_allclose(_run(static, {"input": x})[0], _run(src, {"input": x})[0], atol=1e-4, rtol=1e-3)

    dynamic = tmp_path / "dyn.onnx"
    report = reshape(static, dynamic, config=ReshapeConfig(dynamic_batch=True))
    assert _dims(dynamic) == [["batch", 3, 224, 224]]
    assert _dims(dynamic, "output") == [["batch", 1000]]
    assert any("first half of the batch vs the original run alone" in c for c in report.checks)
    assert any("second half of the batch vs the original run alone" in c for c in report.checks)
    y = np.random.default_rng(2).standard_normal((3, 3, 224, 224)).astype(np.float32)
    np.testing.assert_allclose(_run(dynamic, {"input": y})[0], _run(src, {"input": y})[0], atol=1e-4, rtol=1e-3)


def test_scrfd_dynamic_batch(tmp_path):
    src = asset_model("scrfd")
    out = tmp_path / "scrfd_dyn.onnx"
    report = reshape(src, out, config=ReshapeConfig(dynamic_batch=True))
    # The exporter baked batch 1 into Reshape targets and Resize sizes; both are rewritten and listed.
    assert any(r.startswith("Reshape") for r in report.rewrites)
    assert any(r.startswith("Resize") for r in report.rewrites)
    assert _dims(out) == [["batch", 3, 640, 640]]
    assert all(dims[0] == "batch" for dims in _dims(out, "output"))
    assert [s.shape for s in report.outputs][0] == ("batch", 12800, 1)
    rng = np.random.default_rng(3)
    a, b = (rng.standard_normal((1, 3, 640, 640)).astype(np.float32) for _ in range(2))
    both = _run(out, {"input.1": np.concatenate([a, b])})
    ref_a, ref_b = _run(src, {"input.1": a}), _run(src, {"input.1": b})
    for got, ra, rb in zip(both, ref_a, ref_b):
        assert got.shape[0] == 2
        np.testing.assert_allclose(got[:1], ra, atol=1e-4, rtol=1e-3)
        np.testing.assert_allclose(got[1:], rb, atol=1e-4, rtol=1e-3)


def test_ppocr_det_dynamic_hw_to_static(cli, tmp_path):
    src = asset_model("ppocr_det")
    out = tmp_path / "det_320.onnx"
    result = cli("reshape", src, "-o", out, "--shapes", "x:1x3x320x320")
    assert result.code == 0, result
    assert "checked" in result.out
    assert _dims(out) == [[1, 3, 320, 320]]
    assert _dims(out, "output") == [[1, 1, 320, 320]]


@pytest.mark.parametrize(
    "key, spec, out_shape",
    [
        ("ppocr_rec", "x:2x3x48x160", [2, 20, 6625]),
        ("ppocr_cls", "x:1x3x48x192", [1, 2]),
        ("yolov8n", "images:1x3x320x320", [1, 22, 2100]),
    ],
)
def test_static_shapes_on_dynamic_assets(tmp_path, key, spec, out_shape):
    name, _, dims = spec.partition(":")
    out = tmp_path / "static.onnx"
    reshape(asset_model(key), out, config=ReshapeConfig(shapes={name: tuple(int(d) for d in dims.split("x"))}))
    inputs, outputs = io_specs(load_onnx(out))
    assert not inputs[0].is_dynamic
    assert list(outputs[0].shape) == out_shape


def test_refuses_graph_that_bakes_in_the_batch(cli, tmp_path):
    src = save_concat_const_batch(tmp_path / "baked.onnx")
    out = tmp_path / "out.onnx"
    with pytest.raises(ReshapeError) as err:
        reshape(src, out, config=ReshapeConfig(dynamic_batch=True))
    assert "concat_pad" in str(err.value) and "re-export" in str(err.value)
    assert not out.exists()
    result = cli("reshape", src, "-o", out, "--dynamic-batch")
    assert_clean_error(result, "concat_pad")
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["baked.onnx"]


def test_names_with_dots_and_colons(tmp_path):
    src = save_two_inputs(tmp_path / "two.onnx")
    out = tmp_path / "fixed.onnx"
    reshape(src, out, config=ReshapeConfig(shapes={"images.0": (2, 3, 8, 8), "scale:0": (2, 1)}))
    assert _dims(out) == [[2, 3, 8, 8], [2, 1]]
    assert _dims(out, "output") == [[2, 3, 8, 8]]


def test_config_conflicts_and_nothing_to_do(tmp_path):
    with pytest.raises(SpecError, match="conflicts"):
        ReshapeConfig(shapes={"x": (1, 3)}, dynamic_batch=True)
    with pytest.raises(SpecError, match="nothing to do"):
        ReshapeConfig()
    with pytest.raises(ReshapeError, match="already dynamic"):
        reshape(asset_model("efficientnet_lite0"), tmp_path / "o.onnx", config=ReshapeConfig(dynamic_batch=True))
    with pytest.raises(ShapeError, match="out of range"):
        reshape(asset_model("scrfd"), tmp_path / "o.onnx", config=ReshapeConfig(dynamic={"input.1": (4,)}))


def test_cli_bad_input(cli, tmp_path):
    src = asset_model("ppocr_cls")
    out = tmp_path / "o.onnx"
    assert_clean_error(cli("reshape", src, "-o", out, "--shapes", "xx:1x3x48x192"), "'x'", "Did you mean 'x'?")
    assert_clean_error(cli("reshape", src, "-o", out, "--shapes", "x:1x3x48"), "rank")
    assert_clean_error(cli("reshape", src, "-o", out, "--shapes", "x:1x4x48x192"), "static 3")
    assert_clean_error(cli("reshape", src, "-o", out, "--shapes", "x=1x3x48x192"), "puts '=' between", "x:1x3x48x192")
    assert_clean_error(cli("reshape", src, "-o", out, "--shapes", "x:1x3", "--dynamic-batch"), "conflicts")
    assert_clean_error(cli("reshape", src, "-o", out, "--dynamic", "nope:0"), "'nope'", "'x'")
    missing_dir = tmp_path / "no" / "such" / "o.onnx"
    assert_clean_error(cli("reshape", src, "-o", missing_dir, "--shapes", "x:1x3x48x192"), "does not exist")
    assert not missing_dir.parent.exists()
    truncated = tmp_path / "half.onnx"
    data = src.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    assert_clean_error(cli("reshape", truncated, "-o", out, "--dynamic-batch"), "half.onnx", "not a valid ONNX model")
    assert not out.exists()


def _copy(key, tmp_path):
    """A writable copy of an asset model: nothing in these tests may ever write next to the shared assets."""
    src = asset_model(key)
    dst = tmp_path / src.name
    dst.write_bytes(src.read_bytes())
    return dst


def test_output_equal_to_input_is_refused(cli, tmp_path):
    model = _copy("ppocr_cls", tmp_path)
    before = model.read_bytes()
    spelled = tmp_path / "." / model.name  # another spelling of the same file
    result = cli("reshape", model, "-o", spelled, "--shapes", "x:1x3x48x192")
    assert_clean_error(result, "is the input file", "new file")
    with pytest.raises(Exception, match="is the input file"):
        reshape(model, model, config=ReshapeConfig(shapes={"x": (1, 3, 48, 192)}))
    assert model.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [model.name]


def test_check_shapes_may_size_a_freed_axis(cli, tmp_path):
    model = _copy("scrfd", tmp_path)
    out = tmp_path / "s.onnx"
    result = cli("reshape", model, "-o", out, "--dynamic", "input.1:0", "--check-shapes", "input.1:4x3x640x640")
    assert result.code == 0, result
    assert "runs at input.1:4x3x640x640 (--check-shapes)" in result.out
    assert _dims(out) == [["batch", 3, 640, 640]]
    # dims that stay static are still checked against the reshaped model
    assert_clean_error(
        cli("reshape", model, "-o", tmp_path / "t.onnx", "--dynamic", "input.1:0", "--check-shapes", "input.1:4x3x320x640"),
        "--check-shapes", "static 640",
    )


def test_negative_tolerance_is_refused(cli, tmp_path):
    with pytest.raises(SpecError, match=r"atol=-1.0 must be a number >= 0"):
        ReshapeConfig(dynamic_batch=True, atol=-1.0)
    with pytest.raises(SpecError, match=r"rtol=nan must be a number >= 0"):
        ReshapeConfig(dynamic_batch=True, rtol=float("nan"))
    model = _copy("ppocr_cls", tmp_path)
    out = tmp_path / "o.onnx"
    assert_clean_error(cli("reshape", model, "-o", out, "--shapes", "x:1x3x48x192", "--atol", "-1"), "atol=-1.0", ">= 0")
    assert not out.exists()


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--shapes", "x:1x3x48x192", "--shapes", "x:2x3x48x192"], ["--shapes", "more than once"]),
        (["--dynamic-batch", "--check-shapes", "x:1x3x48x192", "--check-shapes", "x:2x3x48x192"], ["--check-shapes", "more than once"]),
        (["--shapes", ""], ["empty"]),
        (["--shapes", "x:0x3x48x192"], ["dims must be >= 1"]),
    ],
)
def test_cli_bad_shape_flags(cli, tmp_path, args, needles):
    model = _copy("ppocr_cls", tmp_path)
    out = tmp_path / "o.onnx"
    assert_clean_error(cli("reshape", model, "-o", out, *args), *needles)
    assert not out.exists()


def test_onnxruntime_log_lines_do_not_leak(cli, tmp_path):
    model = _copy("yolov8n", tmp_path)
    result = cli("reshape", model, "-o", tmp_path / "o.onnx", "--dynamic", "images:0", "--dynamic", "images:1")
    assert_clean_error(result, "reshaped model fails in ONNX Runtime", "Conv")
    assert "[E:onnxruntime" not in result.err and result.err.startswith("error:"), result  # ORT's own log line


def test_engine_is_named_as_an_engine_not_a_corrupt_onnx(cli, tmp_path):
    """A real TensorRT-RTX engine, by suffix and (renamed) by its header."""
    pytest.importorskip("tensorrt_rtx")
    src = save_two_inputs(tmp_path / "two.onnx")
    plan = tmp_path / "two.plan"
    built = cli("build", src, "-o", plan, "--shapes", "images.0:1x3x8x8,scale:0:1x1", "--backend", "tensorrt-rtx")
    assert built.code == 0, built
    renamed = tmp_path / "two.bin"
    renamed.write_bytes(plan.read_bytes())
    for engine in (plan, renamed):
        result = cli("reshape", engine, "-o", tmp_path / "out.onnx", "--dynamic-batch")
        assert_clean_error(result, "is a TensorRT engine, not an ONNX model", "reshape works on ONNX", "trtkit build")
        assert "truncated or corrupt" not in result.err
    assert not (tmp_path / "out.onnx").exists()


def test_freed_spatial_axes_show_no_internal_dim_names(cli, tmp_path):
    """Outputs whose size follows from a freed height/width: shape inference names them unk__N; shown as -1."""
    result = cli("reshape", asset_model("scrfd"), "-o", tmp_path / "s.onnx", "--dynamic", "input.1:0,2,3")
    assert result.code == 0, result
    assert "unk__" not in result.out
    assert "output score_8: [batch,-1,1]" in result.out
    assert "(-1: a dynamic size that follows from the dynamic input dims)" in result.out
    assert "first half of the batch vs the original run alone at input.1:1x3x640x640" in result.out
    assert "second half of the batch vs the original run alone at input.1:1x3x640x640" in result.out


@pytest.mark.parametrize("dims", [("batch", 3, 48, 192), (-1, 3, 48, 192), "1x3x48x192"])
def test_config_shape_that_is_not_sizes_is_a_spec_error(dims):
    from trtkit.errors import SpecError
    from trtkit.graph.reshape import ReshapeConfig

    with pytest.raises(SpecError, match="non-negative integers.*dynamic_batch"):
        ReshapeConfig(shapes={"x": dims})
