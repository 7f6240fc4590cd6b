"""`trtkit run` and input preparation (trtkit.measure.inputs) with real ONNX Runtime and real asset models."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from trtkit.measure.inputs import generate_inputs, plan_shapes, prepare_inputs
from trtkit.errors import DTypeError, ShapeError, SpecError
from trtkit.spec import TensorSpec

from tests.conftest import asset_model, assert_clean_error
from tests.data import tiny_onnx

# Each asset model with the shape it runs at (None: static, or a dynamic batch defaulted to 1).
ASSET_SHAPES = {
    "efficientnet_lite0": None,
    "scrfd": None,
    "yolov8n": "images:1x3x320x320",
    "ppocr_det": "x:1x3x320x320",
    "ppocr_rec": "x:1x3x48x320",
    "ppocr_cls": "x:1x3x48x192",
}


def _graph_outputs(path) -> list[str]:
    return [o.name for o in onnx.load(str(path), load_external_data=False).graph.output]


@pytest.mark.parametrize("key", list(ASSET_SHAPES))
def test_every_asset_model_runs(cli, tmp_path, key):
    model = asset_model(key)
    out = tmp_path / "out.npz"
    args = ["run", model, "--json", "--save", out] + (["--shapes", ASSET_SHAPES[key]] if ASSET_SHAPES[key] else [])
    res = cli(*args)
    assert res.code == 0, res
    report = json.loads(res.out)
    names = _graph_outputs(model)
    assert list(report["outputs"]) == names
    with np.load(out) as saved:
        assert sorted(saved.files) == sorted(names)
        for name in names:
            assert list(saved[name].shape) == report["outputs"][name]["shape"]
            assert report["outputs"][name]["nan"] == int(np.isnan(saved[name]).sum()) == 0
    if key == "efficientnet_lite0":  # dynamic batch, no --shapes: defaulted to 1 and announced
        assert "using shape input:1x3x224x224" in res.err
        assert report["defaulted_batch"] == ["input"]


def test_table_output(cli):
    res = cli("run", asset_model("scrfd"))
    assert res.code == 0, res
    for needle in ("input.1", "float32", "[1,3,640,640]", "generated (seed 0)", "score_8", "[1,12800,1]", "NaN"):
        assert needle in res.out


def test_dynamic_dims_need_shapes(cli):
    res = cli("run", asset_model("yolov8n"))
    assert_clean_error(res, "'images'", "--shapes images:1x3x")


def test_input_file_gives_the_same_outputs_as_onnxruntime(cli, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = tiny_onnx.affine(tmp_path / "affine.onnx")
    x = np.random.default_rng(3).standard_normal((3, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "s.npz", s=np.array([0.5], np.float32))
    res = cli("run", model, "--input", f"x={tmp_path / 'x.npy'}", "--input", tmp_path / "s.npz", "--save", tmp_path / "o.npz")
    assert res.code == 0, res
    expected = ort.InferenceSession(str(model)).run(None, {"x": x, "s": np.array([0.5], np.float32)})
    with np.load(tmp_path / "o.npz") as saved:
        np.testing.assert_array_equal(saved["z"], expected[0])
        np.testing.assert_array_equal(saved["y"], expected[1])
    assert str(tmp_path / "x.npy") in res.out


def test_npz_with_wrong_key(cli, tmp_path):
    model = tiny_onnx.affine(tmp_path / "affine.onnx")
    np.savez(tmp_path / "in.npz", xx=np.zeros((1, 4), np.float32))
    res = cli("run", model, "--input", tmp_path / "in.npz")
    assert_clean_error(res, "'xx'", "Model inputs: 'x', 's'", "Did you mean 'x'?")


def test_input_with_unknown_name(cli, tmp_path):
    model = tiny_onnx.affine(tmp_path / "affine.onnx")
    np.save(tmp_path / "a.npy", np.zeros((1, 4), np.float32))
    res = cli("run", model, "--input", f"q={tmp_path / 'a.npy'}")
    assert_clean_error(res, "no input 'q'", "'x', 's'")


def test_missing_input_file(cli, tmp_path):
    model = tiny_onnx.affine(tmp_path / "affine.onnx")
    res = cli("run", model, "--input", f"x={tmp_path / 'nope.npy'}")
    assert_clean_error(res, "nope.npy", "does not exist")


def test_trtexec_name_colon_file_is_pointed_at_name_equals_file(cli, tmp_path):
    """trtexec's --loadInputs=x:a.npy spelling: not "file 'x:a.npy' does not exist" but the trtkit form."""
    model = tiny_onnx.affine(tmp_path / "affine.onnx")
    np.save(tmp_path / "a.npy", np.zeros((1, 4), np.float32))
    res = cli("run", model, "--input", "x:a.npy", cwd=tmp_path)
    assert_clean_error(res, "NAME:FILE is trtexec's --loadInputs spelling", "--input x=a.npy")
    assert cli("run", model, "--input", "x=a.npy", cwd=tmp_path).code == 0


def test_corrupt_input_file(cli, tmp_path):
    model = tiny_onnx.affine(tmp_path / "affine.onnx")
    (tmp_path / "bad.npy").write_text("not numpy")
    res = cli("run", model, "--input", f"x={tmp_path / 'bad.npy'}")
    assert_clean_error(res, "bad.npy", "is not a valid .npy/.npz file", "np.save")
    assert "pickled" not in res.err  # numpy's own words for a non-numpy file mislead


def test_input_that_is_a_directory(cli, tmp_path):
    model = tiny_onnx.affine(tmp_path / "affine.onnx")
    (tmp_path / "outdir").mkdir()
    res = cli("run", model, "--input", f"x={tmp_path / 'outdir'}")
    assert_clean_error(res, "outdir", "is a directory")
    assert "does not exist" not in res.err


def test_huge_shapes_are_refused_before_allocating(cli, tmp_path):
    model = tiny_onnx.affine(tmp_path / "affine.onnx")
    res = cli("run", model, "--shapes", "x:100000000000x4,s:1")
    assert_clean_error(res, "'x'", "100000000000x4", "GiB", "smaller --shapes")
    with pytest.raises(ShapeError, match="GiB"):
        generate_inputs((TensorSpec("images", "float32", (1, 3, "h", "w")),), shapes={"images": (1, 3, 100000, 100000)})


@pytest.mark.parametrize("command", ["run", "compare", "bench"])
def test_repeated_shapes_flag_is_an_error(cli, tmp_path, command):
    model = tiny_onnx.affine(tmp_path / "affine.onnx")
    models = [model, model] if command == "compare" else [model]
    res = cli(command, *models, "--shapes", "x:2x4", "--shapes", "s:1")
    assert_clean_error(res, "--shapes", "more than once", "x:2x4,s:1")


@pytest.mark.parametrize("spec, needle", [("", "empty"), ("x:0x4", "dims must be >= 1")])
def test_empty_spec_and_zero_dims_are_refused(cli, tmp_path, spec, needle):
    model = tiny_onnx.affine(tmp_path / "affine.onnx")
    assert_clean_error(cli("run", model, "--shapes", spec), needle)


def test_generated_floats_are_drawn_without_a_float64_copy():
    import tracemalloc

    spec = TensorSpec("x", "float32", (1024, 1024))
    tracemalloc.start()
    try:
        data = generate_inputs((spec,), seed=0)["x"]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert data.dtype == np.float32 and 0.0 <= data.min() and data.max() < 1.0
    assert abs(float(data.mean()) - 0.5) < 0.01  # still uniform on [0, 1)
    assert peak < 1.5 * data.nbytes, (peak, data.nbytes)  # a float64 draw + cast peaks at 3x


def test_input_dtype_mismatch_names_the_fix(cli, tmp_path):
    model = tiny_onnx.affine(tmp_path / "affine.onnx")
    np.save(tmp_path / "x.npy", np.zeros((1, 4)))
    res = cli("run", model, "--input", f"x={tmp_path / 'x.npy'}")
    assert_clean_error(res, "float64", "astype(np.float32)")


def test_nan_input_is_reported(cli, tmp_path):
    model = tiny_onnx.single(tmp_path / "log.onnx")
    x = np.ones((2, 3), np.float32)
    x[0, 1] = np.nan
    np.save(tmp_path / "x.npy", x)
    res = cli("run", model, "--input", f"x={tmp_path / 'x.npy'}", "--json")
    assert res.code == 0, res
    assert "warning: input 'x'" in res.err and "1 NaN" in res.err
    report = json.loads(res.out)
    assert report["inputs"]["x"]["nan"] == 1
    assert report["outputs"]["out"]["nan"] == 1


def test_save_into_missing_dir_writes_nothing(cli, tmp_path):
    model = tiny_onnx.affine(tmp_path / "affine.onnx")
    target = tmp_path / "missing" / "o.npz"
    res = cli("run", model, "--save", target)
    assert_clean_error(res, "does not exist", "mkdir -p")
    assert not target.parent.exists()


def test_save_needs_npz_suffix(cli, tmp_path):
    model = tiny_onnx.affine(tmp_path / "affine.onnx")
    res = cli("run", model, "--save", tmp_path / "o.npy")
    assert_clean_error(res, "OUT.npz")
    assert not (tmp_path / "o.npy").exists()


def test_shapes_conflicting_with_input_file(cli, tmp_path):
    model = tiny_onnx.affine(tmp_path / "affine.onnx")
    np.save(tmp_path / "x.npy", np.zeros((2, 4), np.float32))
    res = cli("run", model, "--input", f"x={tmp_path / 'x.npy'}", "--shapes", "x:3x4")
    assert_clean_error(res, "--shapes gives 'x' shape 3x4", "2x4")


def test_bad_model_files(cli, tmp_path):
    assert_clean_error(cli("run", tmp_path / "nope.onnx"), "does not exist")
    (tmp_path / "text.onnx").write_text("hello")
    assert_clean_error(cli("run", tmp_path / "text.onnx"), "text.onnx", "is not a valid ONNX model", "looks like a text file")
    assert_clean_error(cli("run", tmp_path / "text.onnx", "--no-fuse"), "ONNX Runtime cannot load")
    data = asset_model("scrfd").read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 2])
    assert_clean_error(cli("run", tmp_path / "cut.onnx"), "cut.onnx")


# ------------------------------------------------------------ datagen (library)

SPECS = (TensorSpec("img", "float32", ("batch", 3, 4, 4)), TensorSpec("ids", "int64", (2, 5)), TensorSpec("m", "bool", (7,)))


def test_generated_inputs_follow_polygraphy_ranges():
    data = generate_inputs(SPECS, seed=1)
    assert data["img"].shape == (1, 3, 4, 4) and data["img"].dtype == np.float32
    assert 0.0 <= data["img"].min() and data["img"].max() < 1.0
    assert data["ids"].dtype == np.int64 and 0 <= data["ids"].min() and data["ids"].max() < 25
    assert data["m"].dtype == np.bool_


def test_generation_is_seeded_per_input():
    a, b, c = generate_inputs(SPECS, seed=1), generate_inputs(SPECS, seed=1), generate_inputs(SPECS, seed=2)
    np.testing.assert_array_equal(a["img"], b["img"])
    assert not np.array_equal(a["img"], c["img"])
    only_img = generate_inputs(SPECS[:1], seed=1)  # another input's presence does not change this one
    np.testing.assert_array_equal(only_img["img"], a["img"])


def test_plan_shapes_defaults_only_a_lone_batch_axis():
    plan = plan_shapes(SPECS)
    assert plan.shapes["img"] == (1, 3, 4, 4) and plan.defaulted == ("img",)
    assert plan_shapes(SPECS, {"img": (4, 3, 4, 4)}).defaulted == ()
    with pytest.raises(ShapeError, match=r"axis 2 'h'.*--shapes t:1x3x640x640"):
        plan_shapes([TensorSpec("t", "float32", ("n", 3, "h", 640))])


def test_shared_symbolic_dims_follow_the_given_input():
    specs = [TensorSpec("a", "float32", ("batch", "len")), TensorSpec("b", "int64", ("batch", "len", 2))]
    plan = plan_shapes(specs, {"a": (3, 7)})
    assert plan.shapes["b"] == (3, 7, 2) and plan.defaulted == ("b",)
    with pytest.raises(ShapeError, match=r"axis 1 'len'"):
        plan_shapes(specs)


def test_shapes_must_fit_the_model():
    with pytest.raises(ShapeError, match="axis 1 of the model input"):
        plan_shapes(SPECS, {"img": (1, 4, 4, 4)})
    with pytest.raises(ShapeError, match="Did you mean 'img'"):
        plan_shapes(SPECS, {"imgs": (1, 3, 4, 4)})


def test_prepared_inputs_mix_given_and_generated():
    given = np.full((2, 3, 4, 4), 0.5, np.float32)
    prepared = prepare_inputs(SPECS, arrays={"img": given}, seed=0)
    assert list(prepared.arrays) == ["img", "ids", "m"]
    assert prepared.arrays["img"] is given or np.array_equal(prepared.arrays["img"], given)
    assert prepared.origins["img"] == "array" and prepared.origins["ids"] == "generated (seed 0)"
    with pytest.raises(DTypeError, match="astype"):
        prepare_inputs(SPECS, arrays={"ids": np.zeros((2, 5), np.int32)})


def test_strings_cannot_be_generated():
    with pytest.raises(DTypeError, match="--input s=FILE.npy"):
        generate_inputs([TensorSpec("s", "object", (1,))])


def test_negative_seed():
    with pytest.raises(SpecError, match="seed"):
        generate_inputs(SPECS, seed=-1)


def test_generated_int_and_bool_inputs_run(cli, tmp_path):
    model = tiny_onnx.typed(tmp_path / "typed.onnx")
    res = cli("run", model, "--json", "--seed", "7")
    assert res.code == 0, res
    report = json.loads(res.out)
    assert report["inputs"]["ids"]["dtype"] == "int64" and report["inputs"]["flag"]["dtype"] == "bool"
    assert 0 <= report["outputs"]["out"]["min"] and report["outputs"]["out"]["max"] < 25
