"""trtkit quantize: real ONNX Runtime calibration on real images, then a real TensorRT-RTX INT8 build."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.conftest import asset_model, assert_clean_error

from trtkit.errors import DTypeError, ModelLoadError, ShapeError, SpecError  # noqa: E402
from trtkit.graph.quantize import QuantizeConfig, quantize  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def calib_dir(assets, tmp_path_factory):
    d = tmp_path_factory.mktemp("calib")
    for name in ("astronaut.png", "coffee.png", "chelsea.png", "baboon.jpg", "fruits.jpg"):
        shutil.copy(assets / "images" / name, d / name)
    return d


@pytest.fixture(scope="module")
def qdq_model(calib_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("q") / "eff.qdq.onnx"
    cfg = QuantizeConfig(calib=str(calib_dir), mean=MEAN, std=STD)  # per-channel: depthwise convs need it
    report = quantize(asset_model("efficientnet_lite0"), out, config=cfg)
    return out, report


def _image(assets, name):
    from PIL import Image

    img = Image.open(assets / "images" / name).convert("RGB").resize((224, 224), Image.BILINEAR)
    x = (np.asarray(img, np.float32) / 255 - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def test_qdq_model_keeps_predictions(qdq_model, assets, truth):
    """5 calibration images only, so exact top-1 is not expected: the true class must stay in the top 5."""
    import onnxruntime as ort

    out, report = qdq_model
    assert report.batches == 4 and report.held_back == 1 and report.qdq_nodes > 50  # 5 images: one held back
    q = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for name in ("coffee.png", "baboon.jpg", "squirrel_cls.jpg"):
        logits = q.run(None, {"input": _image(assets, name)})[0][0]
        assert truth["classification"]["images"][name]["top1"] in np.argsort(logits)[-5:], name


def test_int8_build_from_qdq(qdq_model, tmp_path, cli):
    pytest.importorskip("tensorrt_rtx")
    out = tmp_path / "q.plan"
    res = cli("build", qdq_model[0], "-o", out, "--int8", "--shapes", "input:1x3x224x224",
              "--builderOptimizationLevel", "0", "--backend", "tensorrt-rtx")
    assert res.code == 0, res
    side = json.loads((tmp_path / "q.plan.json").read_text())
    assert side["precision"] == "int8 (explicit Q/DQ)" and side["flags"]["strongly_typed"]


def test_npz_calibration(tmp_path):
    data = np.random.default_rng(0).standard_normal((3, 3, 224, 224)).astype(np.float32)
    np.savez(tmp_path / "c.npz", input=data)
    out = tmp_path / "o.onnx"
    rep = quantize(asset_model("efficientnet_lite0"), out, config=QuantizeConfig(calib=str(tmp_path / "c.npz"), per_channel=False, max_samples=2))
    assert rep.batches == 2 and out.exists()


@pytest.mark.parametrize(
    "arrays, error, needle",
    [
        ({"images": np.zeros((1, 3, 224, 224), np.float32)}, SpecError, "keyed by input name"),
        ({"input": np.zeros((1, 3, 224, 224), np.float64)}, DTypeError, "astype"),
        ({"input": np.zeros((1, 3, 200, 224), np.float32)}, ShapeError, "does not accept"),
    ],
)
def test_bad_npz(tmp_path, arrays, error, needle):
    np.savez(tmp_path / "c.npz", **arrays)
    out = tmp_path / "o.onnx"
    with pytest.raises(error, match=needle):
        quantize(asset_model("efficientnet_lite0"), out, config=QuantizeConfig(calib=str(tmp_path / "c.npz")))
    assert not out.exists()


def test_images_need_a_size_for_dynamic_hw(calib_dir, tmp_path):
    with pytest.raises(ShapeError, match="--image-size"):
        quantize(asset_model("yolov8n"), tmp_path / "y.onnx", config=QuantizeConfig(calib=str(calib_dir)))


def test_missing_calib(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        quantize(asset_model("efficientnet_lite0"), tmp_path / "o.onnx", config=QuantizeConfig(calib=str(tmp_path / "nope")))


def test_cli_errors(tmp_path, cli):
    res = cli("quantize", asset_model("efficientnet_lite0"), "--calib", tmp_path, "-o", tmp_path / "o.onnx")
    assert_clean_error(res, "must hold one kind of file", "found none")
    res = cli("quantize", asset_model("efficientnet_lite0"), "--calib", tmp_path, "--mean", "1,2")
    assert_clean_error(res, "three comma-separated numbers")


# ---------------------------------------------------------- review fixes

def _npz(path, data):
    np.savez(path, input=data)
    return path


def test_output_that_is_the_input_is_refused(tmp_path, cli):
    model = tmp_path / "m.onnx"
    model.write_bytes(asset_model("efficientnet_lite0").read_bytes())
    before = model.read_bytes()
    calib = _npz(tmp_path / "c.npz", np.zeros((1, 3, 224, 224), np.float32))
    res = cli("quantize", model, "--calib", calib, "-o", model)
    assert_clean_error(res, "m.onnx", "is the input file")
    assert model.read_bytes() == before


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_calibration_data_is_named(tmp_path, cli, bad):
    data = np.zeros((2, 3, 224, 224), np.float32)
    data[1, 0, 5, 5] = bad
    calib = _npz(tmp_path / "c.npz", data)
    res = cli("quantize", asset_model("efficientnet_lite0"), "--calib", calib, "-o", tmp_path / "o.onnx")
    assert_clean_error(res, "c.npz", "'input'", "NaN" if np.isnan(bad) else "Inf", "sample 1")
    assert "scale issue" not in res.err and not (tmp_path / "o.onnx").exists()


def test_image_options_refused_for_arrays(tmp_path, cli):
    calib = _npz(tmp_path / "c.npz", np.zeros((1, 3, 224, 224), np.float32))
    res = cli("quantize", asset_model("efficientnet_lite0"), "--calib", calib, "--mean", "0.5,0.5,0.5", "--bgr",
              "-o", tmp_path / "o.onnx")
    assert_clean_error(res, "--mean, --bgr", "image calibration only")
    npy_dir = tmp_path / "npy"
    npy_dir.mkdir()
    np.save(npy_dir / "a.npy", np.zeros((1, 3, 224, 224), np.float32))
    with pytest.raises(SpecError, match="--image-size applies to image calibration only"):
        quantize(asset_model("efficientnet_lite0"), tmp_path / "o.onnx",
                 config=QuantizeConfig(calib=str(npy_dir), image_size=(224, 224)))
    assert not (tmp_path / "o.onnx").exists()


def test_already_quantized_model_is_refused(qdq_model, calib_dir, tmp_path):
    from trtkit.errors import BuildError

    with pytest.raises(BuildError, match="already quantized"):
        quantize(qdq_model[0], tmp_path / "twice.onnx", config=QuantizeConfig(calib=str(calib_dir), mean=MEAN, std=STD))
    assert not (tmp_path / "twice.onnx").exists()


def test_qdq_build_records_int8_without_flag(qdq_model, tmp_path, cli):
    """A Q/DQ graph builds INT8 with or without --int8: the summary and sidecar must say so, not fp32."""
    pytest.importorskip("tensorrt_rtx")
    QDQ_INT8 = "int8 (explicit Q/DQ)"
    out = tmp_path / "q.plan"
    fast = ("--shapes", "input:1x3x224x224", "--builderOptimizationLevel", "0", "--backend", "tensorrt-rtx")
    res = cli("build", qdq_model[0], "-o", out, *fast)
    assert res.code == 0, res
    assert QDQ_INT8 in res.out
    assert json.loads((tmp_path / "q.plan.json").read_text())["precision"] == QDQ_INT8
    res = cli("build", qdq_model[0], "-o", out, "--int8", *fast)  # the same engine: served from the cache
    assert res.code == 0 and "cached" in res.out, res


# ------------------------------------------------- methods and the accuracy check


def _activation_scales(path):
    """{tensor: scale} of every QuantizeLinear whose input is an activation (not a weight initializer)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return {n.input[0]: float(inits[n.input[1]]) for n in model.graph.node
            if n.op_type == "QuantizeLinear" and n.input[0] not in inits and inits[n.input[1]].size == 1}


def test_each_method_calibrates_differently(calib_dir, tmp_path):
    """Before, --method entropy wrote a file byte-identical to minmax (ORT's 128-bin default left the KL
    search a single candidate: the full range). Entropy and percentile clip ranges, never widen them."""
    scales = {}
    for method in ("minmax", "entropy", "percentile"):
        out = tmp_path / f"{method}.onnx"
        cfg = QuantizeConfig(calib=str(calib_dir), mean=MEAN, std=STD, method=method, max_samples=2, holdout=0)
        report = quantize(asset_model("efficientnet_lite0"), out, config=cfg)
        assert report.method == method and method in report.summary()
        scales[method] = _activation_scales(out)
    assert len(scales["minmax"]) > 50 and scales["minmax"].keys() == scales["entropy"].keys() == scales["percentile"].keys()
    for method in ("entropy", "percentile"):
        smaller = [t for t in scales["minmax"] if scales[method][t] < scales["minmax"][t] * (1 - 1e-6)]
        wider = [t for t in scales["minmax"] if scales[method][t] > scales["minmax"][t] * (1 + 1e-6)]
        assert not wider, (method, wider[:5])
        assert len(smaller) >= 10, (method, len(smaller))
    assert scales["entropy"] != scales["percentile"]


def test_report_measures_accuracy_on_held_back_samples(qdq_model):
    _, report = qdq_model
    [logits] = report.accuracy
    assert logits.name == "logits" and logits.shape == (1, 1000) and logits.samples == 1
    assert logits.top1 in (0, 1) and logits.top5 in (0, 1) and logits.top5 >= logits.top1
    assert 0 < logits.rel_l2 < 1 and 0 < logits.mean_abs <= logits.max_abs
    text = report.summary()
    assert "accuracy vs the FP32 model on 1 held-back batch(es), not used to calibrate" in text
    assert f"top-1 agrees on {logits.top1}/1" in text
    assert ("warning: top-1 of 'logits' changed on 1 of 1" in text) == (logits.top1 == 0)


def test_held_back_samples_do_not_calibrate(calib_dir, tmp_path):
    """5 images hold back one (the first, evenly spread); calibrating on the other 4 alone gives the same model."""
    auto = quantize(asset_model("efficientnet_lite0"), tmp_path / "auto.onnx",
                    config=QuantizeConfig(calib=str(calib_dir), mean=MEAN, std=STD))
    rest = tmp_path / "rest"
    rest.mkdir()
    for image in sorted(calib_dir.iterdir())[1:]:
        shutil.copy(image, rest / image.name)
    explicit = quantize(asset_model("efficientnet_lite0"), tmp_path / "rest.onnx",
                        config=QuantizeConfig(calib=str(rest), mean=MEAN, std=STD, holdout=0))
    assert (auto.batches, auto.held_back, explicit.batches, explicit.held_back) == (4, 1, 4, 0)
    assert _activation_scales(tmp_path / "auto.onnx") == _activation_scales(tmp_path / "rest.onnx")
    assert "no calibration sample was held back, so accuracy was not measured" in explicit.summary()


def test_cli_reports_accuracy_and_refuses_holding_back_everything(calib_dir, tmp_path, cli):
    res = cli("quantize", asset_model("efficientnet_lite0"), "--calib", calib_dir, "--mean", ",".join(map(str, MEAN)),
              "--std", ",".join(map(str, STD)), "--holdout", "2", "-o", tmp_path / "q.onnx")
    assert res.code == 0, res
    assert "calibrated with minmax (each activation's min/max) on 3 batch(es)" in res.out
    assert "on 2 held-back batch(es)" in res.out and "logits [1x1000]: max abs" in res.out
    assert_clean_error(cli("quantize", asset_model("efficientnet_lite0"), "--calib", calib_dir, "--holdout", "5",
                           "-o", tmp_path / "o.onnx"), "leaves none to calibrate", "--holdout 4 at most")
    assert not (tmp_path / "o.onnx").exists()


def test_preset_calibrates_with_predicts_preprocessing(assets, tmp_path):
    """Review finding: quantize calibrated images as pixel/255 while predict --task classify feeds ImageNet-normalised
    tensors, so the INT8 scales quietly fit other data. --preset uses predict's own arithmetic, and the report says
    how calibration images were preprocessed."""
    from PIL import Image

    from trtkit.errors import SpecError
    from trtkit.graph.quantize import QuantizeConfig, _image_feed
    from trtkit.spec import TensorSpec
    from trtkit.tasks.preprocess import CLASSIFY_PRESETS

    image = assets / "images" / "coffee.png"
    spec = TensorSpec("input", "float32", (1, 3, 224, 224))
    got = _image_feed(image, spec, (224, 224), QuantizeConfig(calib=str(tmp_path), preset="imagenet"))["input"]
    with Image.open(image) as img:
        rgb = np.asarray(img.convert("RGB").resize((224, 224), Image.BILINEAR))
    np.testing.assert_array_equal(got, CLASSIFY_PRESETS["imagenet"].to_tensor(rgb))
    default = _image_feed(image, spec, (224, 224), QuantizeConfig(calib=str(tmp_path)))["input"]
    np.testing.assert_allclose(default, rgb.transpose(2, 0, 1)[None] / 255.0, rtol=1e-6)  # unchanged default
    with pytest.raises(SpecError, match="conflict") as err:
        QuantizeConfig(calib=str(tmp_path), preset="imagenet", bgr=True)
    assert err.value.render("cli").startswith("--preset and --mean/--std/--bgr conflict")
