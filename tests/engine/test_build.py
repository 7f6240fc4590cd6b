"""trtkit build with the real TensorRT-RTX (builds on CPU) and the real asset models.

Engines are built once per module at builder optimization level 0 (fast) and
shared by the checks. Bad input is checked to fail before any builder exists.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import asset_model, assert_clean_error

trt = pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is not installed (pip install 'trtkit[rtx]')")

from trtkit import BuildConfig, ShapeProfile  # noqa: E402
from trtkit.engine.build import batch_profile, build  # noqa: E402
from trtkit.engine.info import file_sha256, sidecar_path  # noqa: E402
from trtkit.errors import BuildError, ProfileError  # noqa: E402

FAST = ("--builderOptimizationLevel", "0", "--backend", "tensorrt-rtx")


def _cfg(**kw) -> BuildConfig:
    return BuildConfig(backend="tensorrt-rtx", optimization_level=0, **kw)


def _sidecar(engine: Path) -> dict:
    return json.loads(sidecar_path(engine).read_text())


@pytest.fixture(scope="module")
def eff_cli(tmp_path_factory, cli_module):
    """efficientnet with --dynamic-batch 1:4:8, built through the CLI."""
    out = tmp_path_factory.mktemp("eff") / "eff.plan"
    res = cli_module("build", asset_model("efficientnet_lite0"), "-o", out, "--dynamic-batch", "1:4:8", *FAST)
    assert res.code == 0, res
    return out, res


@pytest.fixture(scope="module")
def cli_module():
    def run(*args):
        p = subprocess.run([sys.executable, "-m", "trtkit", *map(str, args)], capture_output=True, text=True, timeout=600)
        from tests.conftest import CliResult

        return CliResult(p.returncode, p.stdout, p.stderr)

    return run


def test_dynamic_batch_sidecar(eff_cli):
    engine, res = eff_cli
    side = _sidecar(engine)
    assert side["format"] == "trtkit-engine/1"
    assert side["backend"] == "tensorrt-rtx" and side["backend_version"] == trt.__version__
    assert side["engine_sha256"] == file_sha256(engine)
    assert side["source"]["sha256"] == file_sha256(asset_model("efficientnet_lite0"))
    assert side["profiles"] == [{"input": {"min": [1, 3, 224, 224], "opt": [4, 3, 224, 224], "max": [8, 3, 224, 224]}}]
    assert side["inputs"] == [{"name": "input", "dtype": "float32", "shape": [-1, 3, 224, 224]}]
    assert side["outputs"] == [{"name": "logits", "dtype": "float32", "shape": [-1, 1000]}]
    assert side["precision"] == "fp32" and side["flags"]["strongly_typed"] is True
    assert side["flags"]["builder_optimization_level"] == 0
    if side["device"] is None:
        assert side["device_note"] == "built without a GPU"
    assert "profile 0: input: min 1x3x224x224 opt 4x3x224x224 max 8x3x224x224" in res.out


def test_identical_rebuild_is_cached_and_force_rebuilds(eff_cli, cli_module):
    engine, _ = eff_cli
    before = engine.stat().st_mtime_ns
    res = cli_module("build", asset_model("efficientnet_lite0"), "-o", engine, "--dynamic-batch", "1:4:8", *FAST)
    assert res.code == 0 and "engine is up to date (cached)" in res.out, res
    assert engine.stat().st_mtime_ns == before
    # a different flag is a different engine
    res = cli_module("build", asset_model("efficientnet_lite0"), "-o", engine, "--dynamic-batch", "1:4:16", *FAST)
    assert res.code == 0 and "cached" not in res.out, res
    assert _sidecar(engine)["profiles"][0]["input"]["max"] == [16, 3, 224, 224]


def test_force_rebuilds(tmp_path):
    out = tmp_path / "scrfd.plan"
    first = build(asset_model("scrfd"), out, config=_cfg())
    again = build(asset_model("scrfd"), out, config=_cfg())
    forced = build(asset_model("scrfd"), out, config=_cfg(force=True))
    assert not first.cached and again.cached and not forced.cached
    side = _sidecar(out)
    assert side["profiles"] == []  # static model: no profile needed
    assert side["inputs"] == [{"name": "input.1", "dtype": "float32", "shape": [1, 3, 640, 640]}]
    assert len(side["outputs"]) == 9


def test_stale_sidecar_is_not_trusted_for_cache(tmp_path):
    out = tmp_path / "scrfd.plan"
    build(asset_model("scrfd"), out, config=_cfg())
    out.write_bytes(out.read_bytes()[:-16] + b"\0" * 16)  # engine replaced behind trtkit's back
    assert not build(asset_model("scrfd"), out, config=_cfg()).cached
    assert _sidecar(out)["engine_sha256"] == file_sha256(out)


def test_yolov8_dynamic_batch_with_fixed_hw(tmp_path):
    from trtkit.graph.onnx_io import io_specs, load_onnx

    specs, _ = io_specs(load_onnx(asset_model("yolov8n"), external_data=False))
    profile = batch_profile(specs, (1, 2, 4), shapes={"images": (2, 3, 320, 320)})
    out = tmp_path / "y.plan"
    build(asset_model("yolov8n"), out, config=_cfg(profiles=(profile,)))
    side = _sidecar(out)
    assert side["profiles"][0]["images"] == {"min": [1, 3, 320, 320], "opt": [2, 3, 320, 320], "max": [4, 3, 320, 320]}
    assert side["inputs"][0]["shape"] == [-1, 3, -1, -1]


def test_ppocr_det_dynamic_hw_fp16(tmp_path, cli_module):
    out = tmp_path / "det.plan"
    res = cli_module("build", asset_model("ppocr_det"), "-o", out, "--minShapes", "x:1x3x32x32", "--optShapes",
                     "x:1x3x320x320", "--maxShapes", "x:1x3x960x960", "--fp16", *FAST)
    assert res.code == 0, res
    assert "converting the graph to FP16" in res.err  # the strongly typed path is said, not silent
    side = _sidecar(out)
    assert side["precision"] == "fp16" and side["flags"]["graph_conversion"] == "fp16"
    assert side["inputs"][0]["dtype"] == "float32"  # keep_io_types
    assert side["profiles"][0]["x"]["max"] == [1, 3, 960, 960]


def test_multi_profile(tmp_path, cli_module):
    out = tmp_path / "multi.plan"
    res = cli_module("build", asset_model("efficientnet_lite0"), "-o", out, "--profile", "--shapes",
                     "input:1x3x224x224", "--profile", "--minShapes", "input:2x3x224x224", "--optShapes",
                     "input:4x3x224x224", "--maxShapes", "input:8x3x224x224", *FAST)
    assert res.code == 0, res
    profiles = _sidecar(out)["profiles"]
    assert [p["input"]["max"][0] for p in profiles] == [1, 8]


def test_fp16_conversion_is_valid_and_close(tmp_path):
    """The YOLOv8 graph exposes onnxconverter-common's Cast->Range bug; the converted graph must still be valid."""
    import onnxruntime as ort

    from trtkit.graph.onnx_io import load_onnx
    from trtkit.engine.precision import convert_to_fp16

    model = load_onnx(asset_model("yolov8n"))
    half = convert_to_fp16(model)
    assert any(t.data_type == 10 for t in half.graph.initializer)  # FLOAT16 weights
    x = np.random.default_rng(0).random((1, 3, 320, 320), dtype=np.float32)
    run = lambda m: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]  # noqa: E731
    full, low = run(model), run(half)
    assert low.dtype == np.float32
    assert np.abs(full - low).max() < 0.01 * np.abs(full).max() + 0.5


# ------------------------------------------------------------ bad input

def _fails_before_builder(code: str) -> dict:
    """Run a failing build in a fresh interpreter; report the error and whether TensorRT-RTX was even imported."""
    script = (
        "import sys, json, time\nfrom trtkit import BuildConfig, ShapeProfile, TrtkitError\nfrom trtkit.engine.build import build\n"
        f"t = time.perf_counter()\ntry:\n    {code}\n    print(json.dumps({{'ok': True}}))\n"
        "except TrtkitError as e:\n    print(json.dumps({'error': type(e).__name__, 'msg': str(e), "
        "'trt': 'tensorrt_rtx' in sys.modules, 's': time.perf_counter() - t}))\n"
    )
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "profile, needle",
    [
        ("ShapeProfile.fixed({'inptu': (1, 3, 224, 224)})", "Did you mean 'input'"),
        ("ShapeProfile.fixed({'input': (1, 3, 225, 224)})", "static 224"),
        ("ShapeProfile.fixed({'input': (1, 3, 224)})", "rank"),
    ],
)
def test_bad_profile_refused_before_tensorrt(tmp_path, profile, needle):
    out = tmp_path / "bad.plan"
    model = asset_model("efficientnet_lite0")
    r = _fails_before_builder(f"build({str(model)!r}, {str(out)!r}, config=BuildConfig(profiles=({profile},)))")
    assert r.get("error") in ("ShapeError", "ProfileError"), r
    assert needle in r["msg"] and r["trt"] is False  # refused before TensorRT-RTX was imported
    assert not out.exists() and not sidecar_path(out).exists()


def test_min_greater_than_max(tmp_path, cli):
    out = tmp_path / "bad.plan"
    res = cli("build", asset_model("efficientnet_lite0"), "-o", out, "--minShapes", "input:8x3x224x224",
              "--optShapes", "input:4x3x224x224", "--maxShapes", "input:1x3x224x224")
    assert_clean_error(res, "min <= opt <= max")
    assert not out.exists()


def test_dynamic_model_without_shapes_gets_the_flags(tmp_path, cli):
    out = tmp_path / "bad.plan"
    res = cli("build", asset_model("yolov8n"), "-o", out)
    assert_clean_error(res, "'images' [batch,3,height,width]", "--shapes images:1x3x640x640", "--minShapes=")
    assert "no optimization profile has been defined" not in res.err  # never TensorRT's raw message
    assert not out.exists()


def test_shared_dim_name_contradiction(tmp_path):
    """PP-OCR cls names H and W both '?': TensorRT needs them equal; say so before building."""
    with pytest.raises(ProfileError, match="names all of these dims"):
        build(asset_model("ppocr_cls"), tmp_path / "c.plan", config=_cfg(profiles=(ShapeProfile.fixed({"x": (1, 3, 48, 192)}),)))
    assert not (tmp_path / "c.plan").exists()


def _custom_op_model(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu0"),
             helper.make_node("FancyOp", ["r"], ["y"], name="my_fancy", domain="com.example")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    onnx.save(model, str(path))
    return path


def test_parser_rejection_names_node_and_op(tmp_path, cli):
    model = _custom_op_model(tmp_path / "fancy.onnx")
    out = tmp_path / "fancy.plan"
    res = cli("build", model, "-o", out, "--backend", "tensorrt-rtx")
    assert_clean_error(res, "node 'my_fancy'", "FancyOp", "--plugins")
    assert not out.exists() and not sidecar_path(out).exists()
    assert not list(tmp_path.glob(".fancy.plan*"))  # no temp leftovers


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--plugins", "/nonexistent/libnope.so", "--shapes", "input:1x3x224x224"], ["libnope.so", "does not exist"]),
        (["--int8", "--shapes", "input:1x3x224x224"], ["Q/DQ", "trtkit quantize"]),
        (["--bf16", "--shapes", "input:1x3x224x224"], ["--bf16", "strongly typed"]),
        (["--best", "--shapes", "input:1x3x224x224"], ["--best", "--fp16"]),
        (["--fp16", "--int8", "--shapes", "input:1x3x224x224"], ["is --best here"]),
        (["--fp16", "--bf16", "--shapes", "input:1x3x224x224"], ["conflict"]),
        (["--implicitBatch"], ["implicit batch was removed in TensorRT 10", "trtkit reshape"]),
        (["--memPoolSize", "dlaSRAM:1M"], ["dlaSRAM", "workspace"]),
        (["--dynamic-batch", "8:4:1"], ["min <= opt <= max"]),
    ],
)
def test_clear_errors_and_no_file(tmp_path, cli, args, needles):
    out = tmp_path / "e.plan"
    res = cli("build", asset_model("efficientnet_lite0"), "-o", out, "--backend", "tensorrt-rtx", *args)
    assert_clean_error(res, *needles)
    assert not out.exists()


def test_unwritable_output_checked_first(tmp_path, cli):
    res = cli("build", asset_model("efficientnet_lite0"), "-o", tmp_path / "missing" / "e.plan", "--shapes", "input:1x3x224x224")
    assert_clean_error(res, "does not exist", "mkdir -p")


def test_explicit_batch_is_accepted_with_a_note(tmp_path, cli):
    out = tmp_path / "s.plan"
    res = cli("build", "--onnx=" + str(asset_model("scrfd")), "--saveEngine=" + str(out), "--explicitBatch", *FAST)
    assert res.code == 0, res
    assert "--explicitBatch is the default" in res.err and out.exists()


def test_build_error_type_for_library_callers(tmp_path):
    with pytest.raises(BuildError, match="trtkit quantize"):
        build(asset_model("scrfd"), tmp_path / "x.plan", config=_cfg(precision="int8"))


# ------------------------------------------------- review fixes: outputs, --device

def test_output_that_is_the_input_is_refused(tmp_path, cli):
    victim = tmp_path / "victim.onnx"
    victim.write_bytes(asset_model("efficientnet_lite0").read_bytes())
    before = file_sha256(victim)
    res = cli("build", victim, "-o", victim, "--shapes", "input:1x3x224x224", "--backend", "tensorrt-rtx")
    assert_clean_error(res, "victim.onnx", "is the input file")
    assert file_sha256(victim) == before and not sidecar_path(victim).exists()


def test_sidecar_that_is_the_input_is_refused(tmp_path):
    """e.plan.json (the sidecar of e.plan) is a link to the source model: refused before any work."""
    from trtkit.errors import OutputPathError

    source = tmp_path / "m.onnx"
    source.write_bytes(asset_model("scrfd").read_bytes())
    (tmp_path / "e.plan.json").symlink_to(source)
    before = file_sha256(source)
    with pytest.raises(OutputPathError, match="engine sidecar path .* is the input file"):
        build(source, tmp_path / "e.plan", config=_cfg())
    assert file_sha256(source) == before and not (tmp_path / "e.plan").exists()


def test_sidecar_path_that_is_a_directory(tmp_path):
    from trtkit.errors import OutputPathError

    (tmp_path / "e.plan.json").mkdir()
    with pytest.raises(OutputPathError, match="is a directory") as err:
        build(asset_model("scrfd"), tmp_path / "e.plan", config=_cfg())
    assert "e.plan.json/out" not in str(err.value) and "-o" in str(err.value)
    assert not (tmp_path / "e.plan").exists()


def test_device_is_not_silently_ignored_on_rtx(eff_cli, cli_module):
    engine, _ = eff_cli
    res = cli_module("build", asset_model("efficientnet_lite0"), "-o", engine, "--dynamic-batch", "1:4:8", *FAST,
                     "--device", "3")
    assert res.code == 0, res
    assert "note:" in res.err and "--device 3 is not used" in res.err, res


def test_onnx_metadata_travels_into_the_sidecar(tmp_path):
    """add-nms thresholds and baked preprocessing live in ONNX metadata_props; a plan has none, so build
    records them and TensorRTBackend.metadata (hence predict) reads them from the sidecar."""
    import onnx

    from tests.data.tiny_onnx import single

    model = onnx.load(str(single(tmp_path / "log.onnx")))
    for key, value in (("trtkit.nms.conf", "0.3"), ("trtkit.preprocess", '{"scale": 1.0}')):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(tmp_path / "meta.onnx"))
    build(tmp_path / "meta.onnx", tmp_path / "meta.plan", config=_cfg())
    assert _sidecar(tmp_path / "meta.plan")["metadata"] == {"trtkit.nms.conf": "0.3", "trtkit.preprocess": '{"scale": 1.0}'}
    build(tmp_path / "log.onnx", tmp_path / "plain.plan", config=_cfg())
    assert _sidecar(tmp_path / "plain.plan")["metadata"] == {}

    from trtkit.serve.facts import read_facts

    assert read_facts(tmp_path / "meta.plan").metadata["trtkit.nms.conf"] == "0.3"  # Triton sees what predict sees

    # a sidecar written before build recorded metadata: the engine is rebuilt, not reused without it
    side = _sidecar(tmp_path / "meta.plan")
    del side["metadata"]
    sidecar_path(tmp_path / "meta.plan").write_text(json.dumps(side))
    assert not build(tmp_path / "meta.onnx", tmp_path / "meta.plan", config=_cfg()).cached
    assert "metadata" in _sidecar(tmp_path / "meta.plan")
    assert build(tmp_path / "meta.onnx", tmp_path / "meta.plan", config=_cfg()).cached
