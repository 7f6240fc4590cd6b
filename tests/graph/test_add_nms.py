"""add-nms: the appended ONNX NMS gives the same detections as host-side NMS (real models, real ORT)."""

from __future__ import annotations

import numpy as np
import pytest

from trtkit.errors import TaskError
from trtkit.tasks.detection import Detector, DetectorConfig
from trtkit.tasks.face import FaceDetector
from trtkit.graph.nms import AddNmsConfig, add_nms

from tests.conftest import asset_model, assert_clean_error

onnx = pytest.importorskip("onnx")
pytest.importorskip("cv2")


@pytest.fixture(scope="module")
def scrfd_nms(assets, tmp_path_factory):
    out = tmp_path_factory.mktemp("nms") / "scrfd_nms.onnx"
    return add_nms(asset_model("scrfd"), out, config=AddNmsConfig(task="face", conf=0.5, iou=0.4, target="onnxruntime"))


def test_scrfd_outputs_match_the_tutorial_engine(scrfd_nms):
    model = onnx.load(str(scrfd_nms))
    outs = {o.name: o.type.tensor_type for o in model.graph.output}
    dims = {n: [d.dim_value for d in t.shape.dim] for n, t in outs.items()}
    assert dims == {
        "num_detections": [1, 1],
        "nmsed_boxes": [1, 200, 4],
        "nmsed_scores": [1, 200],
        "nmsed_classes": [1, 200],
        "nmsed_landmarks": [1, 200, 10],
    }
    assert outs["num_detections"].elem_type == onnx.TensorProto.INT32
    assert any(n.op_type == "NonMaxSuppression" for n in model.graph.node)


@pytest.mark.parametrize("image", ["solvay_conference_1927.jpg", "newton.png", "gauss.png"])
def test_scrfd_in_graph_nms_equals_host_nms(scrfd_nms, assets, truth, image):
    with FaceDetector.from_path(asset_model("scrfd")) as host, FaceDetector.from_path(scrfd_nms) as graph:
        assert graph.layout.name == "efficient_nms" and host.layout.name == "scrfd"
        a, b = host(assets / "images" / image), graph(assets / "images" / image)
    assert len(a) == len(b)
    np.testing.assert_allclose(b.boxes, a.boxes, atol=1e-3)
    np.testing.assert_allclose(b.landmarks, a.landmarks, atol=1e-3)
    np.testing.assert_allclose(b.scores, a.scores, atol=1e-6)
    faces = truth["face"]["images"][image]
    if isinstance(faces, dict):
        assert len(b) == faces["count"]
    else:
        np.testing.assert_allclose(b.landmarks[0], faces[0]["landmarks"], atol=2.0)


def test_yolov8_in_graph_nms_equals_host_nms_batched(assets, tmp_path):
    out = add_nms(asset_model("yolov8n"), tmp_path / "y8.onnx",
                  config=AddNmsConfig(conf=0.05, iou=0.45, max_det=100, target="onnxruntime"))
    images = [assets / "images" / n for n in ("astronaut.png", "fruits.jpg")]
    cfg = DetectorConfig(conf=0.05, iou=0.45, max_det=100)
    with Detector.from_path(asset_model("yolov8n"), config=cfg) as host, Detector.from_path(out, config=cfg) as graph:
        assert graph.layout.name == "efficient_nms" and graph.labels == host.labels
        expected = [host(p) for p in images]
        got = graph.predict_batch(images, batch_size=2)  # dynamic batch survives the surgery
    assert any(len(r) > 1 for r in expected)
    for a, b in zip(expected, got):
        assert a.labels == b.labels
        np.testing.assert_allclose(b.boxes, a.boxes, atol=1e-3)
        np.testing.assert_allclose(b.scores, a.scores, atol=1e-6)
    assert "FACE_FEMALE" in got[0].labels


def test_efficient_nms_graph_is_valid_onnx(tmp_path):
    out = add_nms(asset_model("yolov8n"), tmp_path / "trt.onnx", config=AddNmsConfig(target="tensorrt"))
    model = onnx.load(str(out))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["trtkit.nms.kind"] == "EfficientNMS_TRT" and meta["trtkit.nms.target"] == "tensorrt"
    onnx.checker.check_model(model)  # ORT cannot run the plugin; this is the check we can do here
    (plugin,) = [n for n in model.graph.node if n.op_type == "EfficientNMS_TRT"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in plugin.attribute}
    assert attrs["max_output_boxes"] == 200 and attrs["box_coding"] == 0
    assert [o.name for o in model.graph.output] == ["num_detections", "nmsed_boxes", "nmsed_scores", "nmsed_classes"]


def test_bad_inputs_raise(tmp_path, assets):
    with pytest.raises(TaskError, match="EfficientNMS_TRT has no landmark output"):
        AddNmsConfig(task="face", efficient_nms=True)
    with pytest.raises(TaskError, match=r"do not match a detect layout.*yolov8: one output \[B,4\+C,N\].*logits"):
        add_nms(asset_model("efficientnet_lite0"), tmp_path / "x.onnx")
    with pytest.raises(TaskError, match="SCRFD heads"):
        add_nms(asset_model("yolov8n"), tmp_path / "x.onnx", config=AddNmsConfig(task="face"))
    assert not (tmp_path / "x.onnx").exists()


def test_cli_add_nms_then_predict(cli, assets, tmp_path):
    out = tmp_path / "scrfd_nms.onnx"
    r = cli("add-nms", asset_model("scrfd"), "-o", out, "--task", "face")
    assert r.code == 0, r
    assert out.exists() and "ONNX NonMaxSuppression" in r.out and "TensorRT-RTX cannot build" in r.out
    r = cli("predict", "--task", "face", out, assets / "images" / "newton.png", "--json")
    assert r.code == 0, r
    assert r.out.count('"score"') == 1
    again = cli("add-nms", out, "-o", tmp_path / "twice.onnx", "--task", "face")
    assert_clean_error(again, "already outputs NMS results")


def test_detector_reads_onnx_nms_selected_indices_graphs(assets, tmp_path):
    """A graph ending in plain NonMaxSuppression (selected_indices [K,3] + boxes + scores), batched."""
    from onnx import TensorProto, helper

    from trtkit.graph import nms as nms_graph

    proto = onnx.load(str(asset_model("yolov8n")))
    g = nms_graph._Graph(proto, nms_graph._opset(proto))
    from trtkit.tasks.layouts import resolve_layout

    layout, binding = resolve_layout("detect", "auto", nms_graph._specs(proto.graph), None, ())
    boxes, scores, _ = layout.graph(g, binding, None)
    best = g.reduce("ReduceMax", scores, 1, keepdims=1)
    masked = g.op("Mul", [scores, g.op("Cast", [g.op("Equal", [scores, best])], to=1)])  # argmax class, like the host
    consts = [g.const([300], np.int64), g.const([0.45], np.float32), g.const([0.25], np.float32)]
    sel = g.op("NonMaxSuppression", [boxes, masked, *consts])
    del proto.graph.output[:]
    for src, name, elem, shape in ((sel, "selected_indices", TensorProto.INT64, ["k", 3]),
                                   (boxes, "boxes", TensorProto.FLOAT, ["batch", "n", 4]),
                                   (masked, "scores", TensorProto.FLOAT, ["batch", 18, "n"])):
        proto.graph.node.append(helper.make_node("Identity", [src], [name]))
        proto.graph.output.append(helper.make_tensor_value_info(name, elem, shape))
    onnx.save(proto, str(tmp_path / "onnx_nms.onnx"))
    images = [assets / "images" / n for n in ("astronaut.png", "fruits.jpg", "astronaut.png")]
    with Detector.from_path(asset_model("yolov8n")) as host, Detector.from_path(tmp_path / "onnx_nms.onnx") as graph:
        assert graph.layout.name == "onnx_nms"
        expected = [host(p) for p in images]
        got = graph.predict_batch(images, batch_size=3)
    for a, b in zip(expected, got):
        assert a.labels == b.labels
        np.testing.assert_allclose(b.boxes, a.boxes, atol=1e-3)


def test_detect_on_scrfd_heads_is_refused_and_suggests_face(cli, tmp_path):
    """SCRFD has 9 outputs; --task detect (the default) used to decode the first one and exit 0."""
    with pytest.raises(TaskError, match=r"look like scrfd outputs: use --task face"):
        add_nms(asset_model("scrfd"), tmp_path / "x.onnx")
    r = cli("add-nms", asset_model("scrfd"), "-o", tmp_path / "x.onnx")
    assert_clean_error(r, "--task face", "score_8")
    assert not (tmp_path / "x.onnx").exists()


def _as_yolov5_shaped(tmp_path):
    """yolov8n with its output transposed to [B,N,22]: the shape of a YOLOv5 head (values aside)."""
    from onnx import helper

    proto = onnx.load(str(asset_model("yolov8n")))
    out = proto.graph.output[0]
    proto.graph.node.append(helper.make_node("Transpose", [out.name], ["output_nhc"], perm=[0, 2, 1]))
    dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    del proto.graph.output[:]
    proto.graph.output.append(helper.make_tensor_value_info("output_nhc", onnx.TensorProto.FLOAT, [dims[0], "n", 22]))
    path = tmp_path / "v5_shaped.onnx"
    onnx.save(proto, str(path))
    return path


def test_forced_layout_must_match_the_output_shape(cli, tmp_path):
    with pytest.raises(TaskError, match=r"--layout yolov5: expected one output \[B,N,5\+C\].*output0 \[batch,22,-1\].*--layout yolov8"):
        add_nms(asset_model("yolov8n"), tmp_path / "x.onnx", config=AddNmsConfig(layout="yolov5"))
    r = cli("add-nms", asset_model("yolov8n"), "-o", tmp_path / "x.onnx", "--layout", "yolov5")
    assert_clean_error(r, "--layout yolov5", "[B,N,5+C]", "[batch,22,-1]")
    v5 = _as_yolov5_shaped(tmp_path)
    with pytest.raises(TaskError, match=r"--layout yolov8: expected one output \[B,4\+C,N\].*\[batch,n,22\].*--layout yolov5"):
        add_nms(v5, tmp_path / "x.onnx", config=AddNmsConfig(layout="yolov8"))
    assert not (tmp_path / "x.onnx").exists()
    assert add_nms(v5, tmp_path / "auto.onnx").exists()  # auto picks yolov5 for [B,N,22]


def test_output_equal_to_input_is_refused_by_the_shared_check(tmp_path):
    from trtkit.errors import OutputPathError

    model = tmp_path / "model.onnx"
    model.write_bytes(asset_model("yolov8n").read_bytes())
    before = model.read_bytes()
    with pytest.raises(OutputPathError, match="is the input file"):
        add_nms(model, tmp_path / "." / "model.onnx")
    assert model.read_bytes() == before


def test_jpeg_renamed_to_onnx_is_named_as_such(cli, assets, tmp_path):
    from trtkit.errors import ModelLoadError

    fake = tmp_path / "fake.onnx"
    fake.write_bytes((assets / "images" / "baboon.jpg").read_bytes())
    with pytest.raises(ModelLoadError, match="looks like a JPEG image"):
        add_nms(fake, tmp_path / "out.onnx")
    assert_clean_error(cli("add-nms", fake, "-o", tmp_path / "out.onnx"), "JPEG")


def test_onnx_nms_topk_k_is_a_constant_for_tensorrt(scrfd_nms):
    """TensorRT's ONNX parser (8.5 on the H200) refuses a TopK whose K is computed: "only supports input K as an
    initializer". The ONNX-NMS tail must give it a constant."""
    model = onnx.load(str(scrfd_nms))
    constants = {i.name for i in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    topk = [n for n in model.graph.node if n.op_type == "TopK"]
    assert topk and all(n.input[1] in constants for n in topk)


def test_max_det_above_tensorrt_topk_limit_is_refused_for_tensorrt(cli, tmp_path):
    res = cli("add-nms", asset_model("yolov8n"), "-o", tmp_path / "n.onnx", "--target", "tensorrt", "--max-det", "100000")
    assert_clean_error(res, "--max-det", "3840", "--target onnxruntime")
    assert not (tmp_path / "n.onnx").exists()
    assert AddNmsConfig(max_det=100000, target="onnxruntime").max_det == 100000
