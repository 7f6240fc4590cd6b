"""`trtkit triton`: configs derived from real models and engines, parsed back with Triton's own proto,
and the repositories Triton would refuse refused with the fix named. No server here (see test_server.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from tests.conftest import asset_model, assert_clean_error
from tests.data import tiny_onnx

pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient is installed by the dev/serve extras")

from google.protobuf import text_format  # noqa: E402
from tritonclient.grpc import model_config_pb2 as mc  # noqa: E402

from trtkit.errors import ModelLoadError, OutputPathError, SpecError  # noqa: E402
from trtkit.serve.config import TritonOptions  # noqa: E402
from trtkit.serve.repository import write_repository  # noqa: E402


def _config(repo: Path, name: str) -> mc.ModelConfig:
    return text_format.Parse((repo / name / "config.pbtxt").read_text(), mc.ModelConfig())


def test_onnx_native_config(tmp_path):
    report = write_repository([asset_model("efficientnet_lite0")], tmp_path / "repo")
    cfg = _config(tmp_path / "repo", "efficientnet_lite0")
    assert cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 8
    assert [(i.name, i.data_type, list(i.dims)) for i in cfg.input] == [("input", mc.TYPE_FP32, [3, 224, 224])]
    assert [(o.name, list(o.dims)) for o in cfg.output] == [("logits", [1000])]
    # ONNX has no profiles, so no preferred sizes: Triton batches what queued instead of holding requests
    assert cfg.HasField("dynamic_batching") and list(cfg.dynamic_batching.preferred_batch_size) == []
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 100
    assert cfg.model_warmup[0].inputs["input"].dims == [3, 224, 224]
    assert (tmp_path / "repo/efficientnet_lite0/1/model.onnx").stat().st_size == asset_model("efficientnet_lite0").stat().st_size
    assert report.entry == ("efficientnet_lite0",)


def test_static_batch_gives_max_batch_0_and_full_dims(tmp_path):
    write_repository([asset_model("scrfd")], tmp_path / "repo", options=TritonOptions(name="faces"))
    cfg = _config(tmp_path / "repo", "faces")
    assert cfg.max_batch_size == 0 and list(cfg.input[0].dims) == [1, 3, 640, 640]
    assert not cfg.HasField("dynamic_batching")


def _dynamic_relu(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )
    return tiny_onnx.save_graph(graph, path)


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> Path:
    """A real TensorRT-RTX engine with two profiles (batch 1..4 opt 2, batch 4..16 opt 8) and its sidecar."""
    pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX builds the engine (pip install 'trtkit[rtx]')")
    from trtkit import BuildConfig, ShapeProfile, build

    d = tmp_path_factory.mktemp("engine")
    profiles = (ShapeProfile.from_shapes(min={"x": (1, 4)}, opt={"x": (2, 4)}, max={"x": (4, 4)}),
                ShapeProfile.from_shapes(min={"x": (4, 4)}, opt={"x": (8, 4)}, max={"x": (16, 4)}))
    out = d / "relu.plan"
    build(_dynamic_relu(d / "relu.onnx"), out, config=BuildConfig(profiles=profiles, backend="tensorrt-rtx", optimization_level=0))
    return out


def test_engine_native_config_from_profiles(engine, tmp_path):
    write_repository([engine], tmp_path / "repo", options=TritonOptions(instances=2))
    cfg = _config(tmp_path / "repo", "relu")
    assert cfg.platform == "tensorrt_plan"
    assert cfg.max_batch_size == 4  # the smallest profile max: every instance can run any batch Triton sends
    assert list(cfg.input[0].dims) == [4] and list(cfg.output[0].dims) == [4]
    assert list(cfg.dynamic_batching.preferred_batch_size) == [2, 4]  # opt batches up to max_batch_size
    groups = [(g.count, g.kind, list(g.profile)) for g in cfg.instance_group]
    assert groups == [(2, mc.ModelInstanceGroup.KIND_GPU, ["0"]), (2, mc.ModelInstanceGroup.KIND_GPU, ["1"])]
    assert list(cfg.model_warmup[0].inputs["x"].dims) == [4] and cfg.model_warmup[0].batch_size == 1
    assert (tmp_path / "repo/relu/1/model.plan").read_bytes() == engine.read_bytes()


def test_engine_max_batch_above_profiles_is_refused(engine, tmp_path):
    with pytest.raises(SpecError, match=r"--max-batch 32 exceeds the engine's profiles.*--max-batch 4"):
        write_repository([engine], tmp_path / "repo", options=TritonOptions(max_batch=32))
    assert not (tmp_path / "repo").exists()


def test_engine_without_sidecar_is_refused(engine, tmp_path):
    bare = tmp_path / "bare.plan"
    bare.write_bytes(engine.read_bytes())
    with pytest.raises(ModelLoadError, match="no valid sidecar.*trtkit build"):
        write_repository([bare], tmp_path / "repo")


def test_output_without_batch_axis_is_refused(tmp_path):
    model = tiny_onnx.affine(tmp_path / "affine.onnx")  # input s [1] has no batch axis
    with pytest.raises(SpecError, match=r"needs every input and output to lead with a dynamic batch axis.*s \[1\]"):
        write_repository([model], tmp_path / "repo", options=TritonOptions(max_batch=4))
    write_repository([model], tmp_path / "repo")  # derived: max_batch_size 0, full shapes
    cfg = _config(tmp_path / "repo", "affine")
    assert cfg.max_batch_size == 0 and list(cfg.input[0].dims) == [-1, 4]


def test_existing_model_is_never_replaced(tmp_path):
    write_repository([asset_model("efficientnet_lite0")], tmp_path / "repo")
    before = (tmp_path / "repo/efficientnet_lite0/config.pbtxt").read_text()
    with pytest.raises(OutputPathError, match="already has model.*efficientnet_lite0"):
        write_repository([asset_model("efficientnet_lite0")], tmp_path / "repo", options=TritonOptions(max_batch=2))
    assert (tmp_path / "repo/efficientnet_lite0/config.pbtxt").read_text() == before
    assert [p.name for p in (tmp_path / "repo").iterdir()] == ["efficientnet_lite0"]  # no staging left


def test_task_ensemble_layout(tmp_path):
    report = write_repository([asset_model("yolov8n")], tmp_path / "repo", task="detect",
                              options=TritonOptions(name="det", backend="python"), task_options={"conf": 0.3})
    assert report.models == ("det", "det_pre", "det_model", "det_post") and report.entry == ("det",)
    ens = _config(tmp_path / "repo", "det")
    assert ens.platform == "ensemble" and [s.model_name for s in ens.ensemble_scheduling.step] == ["det_pre", "det_model", "det_post"]
    assert [(i.name, i.data_type, list(i.dims)) for i in ens.input] == [("image", mc.TYPE_UINT8, [-1])]
    assert [o.name for o in ens.output] == ["boxes", "scores", "class_ids", "json"]
    pre = _config(tmp_path / "repo", "det_pre")
    assert pre.backend == "python" and [list(o.dims) for o in pre.output][0] == [-1, 3, -1, -1]
    model = _config(tmp_path / "repo", "det_model")
    assert model.backend == "python" and model.max_batch_size == 8 and list(model.input[0].dims) == [3, -1, -1]
    step = json.loads((tmp_path / "repo/det_post/1/trtkit_step.json").read_text())
    assert step["task"] == "detect" and step["options"] == {"conf": 0.3}
    assert "trtkit.serve.steps import TaskPostprocess" in (tmp_path / "repo/det_post/1/model.py").read_text()


def test_python_backend_threads_reach_the_step_and_zero_delay_keeps_batching(tmp_path):
    write_repository([asset_model("efficientnet_lite0")], tmp_path / "repo",
                     options=TritonOptions(name="eff", backend="python", threads=1, max_queue_delay_us=0))
    step = json.loads((tmp_path / "repo/eff/1/trtkit_step.json").read_text())
    assert step["runtime"] == {"device": "cpu", "threads": 1}
    assert _config(tmp_path / "repo", "eff").HasField("dynamic_batching")  # present although every field is default
    with pytest.raises(SpecError, match="--threads applies to --backend python"):
        TritonOptions(threads=2)
    with pytest.raises(SpecError, match="--threads must be >= 1, got 0"):
        TritonOptions(backend="python", threads=0)


def test_task_model_mismatch_is_refused_before_writing(tmp_path):
    from trtkit.errors import TaskError

    with pytest.raises(TaskError):
        write_repository([asset_model("efficientnet_lite0")], tmp_path / "repo", task="detect")
    assert not (tmp_path / "repo").exists()


def test_cli_errors(cli, tmp_path):
    res = cli("triton", asset_model("efficientnet_lite0"), "-o", tmp_path / "r", "--preferred-batch", "16")
    assert_clean_error(res, "--preferred-batch 16", "max_batch_size 8", "Use sizes <= 8")
    res = cli("triton", asset_model("efficientnet_lite0"), "-o", tmp_path / "r", "--conf", "0.5")
    assert_clean_error(res, "--conf", "--task")
    res = cli("triton", asset_model("efficientnet_lite0"), "-o", tmp_path / "r", "--task", "classify", "--top-k", "3")
    assert res.code == 0 and "  efficientnet_lite0  (call this)" in res.out, res


def test_render_rejects_what_the_proto_rejects():
    from trtkit.serve.config import parse

    with pytest.raises(SpecError, match="does not parse as Triton's ModelConfig"):
        parse('name: "m"\nmax_batch_size: 8\ninput { name: "x" data_type: TYPE_FLOAT32 dims: 3 }\n')
    assert np.array(parse('name: "m"\nmax_batch_size: 8\n').max_batch_size) == 8
