"""Output layouts: each carries its preprocessing, predict on the raw graph == predict on the add-nms graph
for every layout (ONNX Runtime), never-silent notes, label-count and NHWC checks, baked NMS thresholds.

The YOLO-layout graphs return outputs we construct (tests/data/layout_graphs.py), so every box is known;
the real YOLOv8n and SCRFD assets are covered in tests/graph/test_add_nms.py and tests/tasks/test_face.py.
No real YOLOX/yolor weights are reachable here: their layouts are tested on constructed graphs only.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from tests.conftest import asset_model, assert_clean_error
from tests.data.layout_graphs import gated_graph, yolo_graph
from trtkit.errors import TaskError
from trtkit.graph.nms import AddNmsConfig, add_nms, default_target
from trtkit.tasks.detection import Detector, DetectorConfig
from trtkit.tasks.diagnose import explain_empty
from trtkit.tasks.layouts import DETECT_LAYOUTS, FACE_LAYOUTS, get_layout
from trtkit.tasks.preprocess import Preprocess

pytest.importorskip("onnxruntime")
pytest.importorskip("cv2")

SIZE = (128, 128)


def _image(color=(10, 60, 220), size=SIZE) -> np.ndarray:
    """RGB image exactly the model size (no letterbox padding), one colour: blue-heavy by default."""
    return np.full((*size, 3), color, np.uint8)


def test_every_layout_is_one_module_with_complete_preprocessing():
    for task, table in (("detect", DETECT_LAYOUTS), ("face", FACE_LAYOUTS)):
        for key, target in table.items():
            module, _, attr = target.partition(":")
            layout = getattr(importlib.import_module(module), attr)
            assert layout is get_layout(task, key) and layout.name == key and layout.task == task
            p = layout.preprocess
            assert None not in (p.scale, p.mean, p.std, p.bgr, p.pad, p.pad_value, p.stride), (key, p)
    assert get_layout("detect", "yolor") is get_layout("detect", "yolov5")
    assert get_layout("detect", "yolox").preprocess.describe() == "BGR, (pixel*1 - 0) / 1, pad corner 114, stride 32"
    assert get_layout("detect", "yolov8").preprocess.describe() == "RGB, (pixel*1/255 - 0) / 1, pad center 114, stride 32"


# ---------------------------------------------------------------- the sweep: raw predict == add-nms predict

@pytest.mark.parametrize("kind,layout,classes", [
    ("yolov8", "auto", 5), ("yolov5", "auto", 5), ("yolov5", "yolor", 80), ("yolox", "auto", 5),
])
def test_sweep_raw_predict_equals_add_nms_predict(tmp_path, kind, layout, classes):
    model, raw = yolo_graph(tmp_path / f"{kind}.onnx", kind, size=SIZE, classes=classes)
    if layout == "yolor":
        assert raw.shape[2] == 85  # yolor's [N, boxes, 85] output is the YOLOv5 layout
    nms_model = add_nms(model, tmp_path / f"{kind}_nms.onnx",
                        config=AddNmsConfig(layout=layout, conf=0.3, iou=0.5, max_det=50, target="onnxruntime"))
    cfg = DetectorConfig(layout=layout, conf=0.3, iou=0.5, max_det=50)
    image = _image()
    with Detector.from_path(model, config=cfg) as host, Detector.from_path(nms_model) as graph:
        assert host.layout.name == ("yolov5" if layout == "yolor" else kind)
        assert graph.layout.name == "efficient_nms" and graph.preprocessing == host.preprocessing
        assert (graph.conf, graph.iou) == (0.3, 0.5)  # the baked thresholds, read from the metadata
        a, b = host(image), graph(image)
    assert len(a) >= 5, "the constructed outputs hold several objects"
    assert len(a) == len(b)
    np.testing.assert_array_equal(b.class_ids, a.class_ids)
    np.testing.assert_allclose(b.scores, a.scores, atol=1e-6)
    np.testing.assert_allclose(b.boxes, a.boxes, atol=1e-3)
    # and the host result is the independent reference decoding of the constructed rows
    np.testing.assert_allclose(a.boxes, _reference_yolo(kind, raw, cfg, SIZE)[0], atol=1e-3)


def _reference_yolo(kind, raw, cfg, size):
    """Decode + threshold + class-aware greedy NMS from the published formulas (loops, no trtkit code)."""
    rows = raw[0].T if kind == "yolov8" else raw[0].copy()
    if kind == "yolox":
        h, w = size
        i = 0
        for s in (8, 16, 32):
            for gy in range(h // s):
                for gx in range(w // s):
                    rows[i, 0] = (rows[i, 0] + gx) * s
                    rows[i, 1] = (rows[i, 1] + gy) * s
                    rows[i, 2:4] = np.exp(rows[i, 2:4]) * s
                    i += 1
    scores = rows[:, 4:] if kind == "yolov8" else rows[:, 5:] * rows[:, 4:5]
    cls, score = scores.argmax(1), scores.max(1)
    cand = [(float(score[i]), int(cls[i]), [rows[i, 0] - rows[i, 2] / 2, rows[i, 1] - rows[i, 3] / 2,
                                            rows[i, 0] + rows[i, 2] / 2, rows[i, 1] + rows[i, 3] / 2])
            for i in range(len(rows)) if score[i] >= cfg.conf]
    cand.sort(key=lambda c: -c[0])
    kept = []
    for s, c, b in cand:
        if all(k[1] != c or _iou(k[2], b) <= cfg.iou for k in kept):
            kept.append((s, c, b))
    return np.asarray([k[2] for k in kept[: cfg.max_det]], np.float32), kept


def _iou(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def test_rtx_cannot_build_the_nms_graph_so_add_nms_refuses_that_target(tmp_path):
    """The refusal is true: TensorRT-RTX (builds on CPU here) fails on the add-nms graph, builds the raw one."""
    pytest.importorskip("tensorrt_rtx")
    from trtkit import BuildConfig
    from trtkit.engine.build import build
    from trtkit.errors import TrtkitError

    model, _ = yolo_graph(tmp_path / "yolox.onnx", "yolox", size=SIZE)
    with pytest.raises(TaskError, match=r"TensorRT-RTX cannot build an NMS graph.*host.*--target onnxruntime"):
        AddNmsConfig(target="tensorrt-rtx")
    nms_model = add_nms(model, tmp_path / "nms.onnx", config=AddNmsConfig(target="onnxruntime"))
    cfg = BuildConfig(backend="tensorrt-rtx", optimization_level=0)
    build(model, tmp_path / "raw.plan", config=cfg)
    assert (tmp_path / "raw.plan").stat().st_size > 0  # the raw model builds (it cannot run here: no GPU)
    with pytest.raises(TrtkitError) as info:
        build(nms_model, tmp_path / "nms.plan", config=cfg)
    assert not (tmp_path / "nms.plan").exists()
    print("TensorRT-RTX on the add-nms graph:", info.value)


def test_target_auto_follows_the_installed_tensorrt(tmp_path):
    import importlib.util

    assert default_target() == ("tensorrt" if importlib.util.find_spec("tensorrt") else "onnxruntime")
    model, _ = yolo_graph(tmp_path / "v8.onnx", "yolov8", size=SIZE)
    with pytest.raises(TaskError, match="ONNX Runtime cannot run"):
        AddNmsConfig(target="onnxruntime", efficient_nms=True)
    out = add_nms(model, tmp_path / "trt.onnx", config=AddNmsConfig(target="tensorrt", names="trt"))
    import onnx

    proto = onnx.load(str(out))
    assert [o.name for o in proto.graph.output] == ["num_detections", "detection_boxes", "detection_scores", "detection_classes"]
    assert any(n.op_type == "EfficientNMS_TRT" for n in proto.graph.node)


# ---------------------------------------------------------------- preprocessing carried by the layout

def _yolox_gated(tmp_path):
    """Scores pass only when tensor channel 0 averages > 100: YOLOX's BGR raw pixels on a blue image do."""
    return yolo_graph(tmp_path / "yolox.onnx", "yolox", size=SIZE, threshold=100.0, gain=1.0)[0]


def test_yolox_auto_detected_applies_its_preprocessing(tmp_path):
    model = _yolox_gated(tmp_path)
    with Detector.from_path(model) as task:
        assert task.layout.name == "yolox" and task.binding.auto
        assert (task.preprocessing.bgr, task.preprocessing.scale, task.preprocessing.pad) == (True, 1.0, "corner")
        assert "layout yolox (auto-detected)" in task.describe() and "BGR, (pixel*1 - 0) / 1, pad corner 114" in task.describe()
        assert len(task(_image())) > 0
    # the YOLOv5 preprocessing (what trtkit applied before) finds nothing on the same model
    wrong = Preprocess(scale=1 / 255, bgr=False, pad="center")
    with Detector.from_path(model, config=DetectorConfig(preprocess=wrong)) as task:
        result = task(_image())
        assert len(result) == 0 and result.top_score < 0.01
        notes = explain_empty(task, [(_image(), result)])
    assert "highest score seen was" in notes[0] and "--conf 0.25" in notes[0]
    assert "preprocessing mismatch" in notes[1] and "--scale 1" in notes[1] and "--bgr" in notes[1]


def test_cli_prints_layout_and_preprocessing_and_explains_an_empty_run(cli, tmp_path):
    import cv2

    model = _yolox_gated(tmp_path)
    img = tmp_path / "blue.png"
    cv2.imwrite(str(img), cv2.cvtColor(_image(), cv2.COLOR_RGB2BGR))
    r = cli("predict", "--task", "detect", model, img)
    assert r.code == 0, r
    assert "layout yolox (auto-detected)" in r.err and "BGR" in r.err and "note:" not in r.err
    r = cli("predict", "--task", "detect", model, img, "--scale", "1/255", "--rgb", "--pad", "center")
    assert r.code == 0, r
    assert "overridden: scale, bgr, pad" in r.err
    assert "no detections in 1 of 1 image(s): the highest score seen was" in r.err and "--conf 0.25" in r.err
    assert "preprocessing mismatch" in r.err and "--scale 1 --bgr" in r.err
    assert_clean_error(cli("predict", "--task", "ocr", "--det", model, "--rec", model, img, "--pad", "corner"),
                       "--pad do(es) not apply to --task ocr")
    assert_clean_error(cli("predict", "--task", "detect", model, img, "--mean", "1,2"), "--mean takes one number or three")
    assert_clean_error(cli("predict", "--task", "detect", model, img, "--layout", "yolov99"), "'yolov99' is unknown")


def test_image_with_nothing_says_so_without_blaming_preprocessing(tmp_path):
    model = _yolox_gated(tmp_path)
    with Detector.from_path(model) as task:
        red = _image((10, 10, 10))  # a dark image: channel 0 stays low under every preprocessing, nothing to find
        result = task(red)
        notes = explain_empty(task, [(red, result)])
    assert len(result) == 0 and "score no higher" in notes[-1]


# ---------------------------------------------------------------- checks

def test_label_count_must_match_the_class_count(assets, cli):
    coco = tuple(f"class{i}" for i in range(80))
    with pytest.raises(TaskError, match=r"80 class names from --labels.*has 18 classes.*labels file with 18 lines"):
        Detector.from_path(asset_model("yolov8n"), config=DetectorConfig(labels=coco))
    r = cli("predict", "--task", "detect", asset_model("yolov8n"), assets / "images" / "astronaut.png",
            "--labels", assets / "labels" / "coco80.txt")
    assert_clean_error(r, "class names from --labels", "18 classes", "labels file with 18 lines")


def test_nhwc_input_is_named_channels_last(tmp_path):
    from onnx import TensorProto, helper

    from tests.data.tiny_onnx import save_graph

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["x"], ["y"], keepdims=1)], "nhwc",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 128, 128, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 1, 1])])
    path = save_graph(graph, tmp_path / "nhwc.onnx")
    for task in ("detect", "face"):
        cls = Detector if task == "detect" else importlib.import_module("trtkit.tasks.face").FaceDetector
        with pytest.raises(TaskError, match=r"channels-last \(NHWC: H=128, W=128, C=3\).*NCHW \[B,3,H,W\]"):
            cls.from_path(path)


def test_forced_layout_checks_the_expected_shapes(tmp_path):
    model, _ = yolo_graph(tmp_path / "v5.onnx", "yolov5", size=SIZE)
    with pytest.raises(TaskError, match=r"--layout yolox: expected one output \[B,336,5\+C\].*\[1,1008,10\].*fit yolov5"):
        Detector.from_path(model, config=DetectorConfig(layout="yolox"))


def test_baked_nms_thresholds_are_recorded_and_enforced(tmp_path):
    model, _ = yolo_graph(tmp_path / "v8.onnx", "yolov8", size=SIZE)
    out = add_nms(model, tmp_path / "nms.onnx", config=AddNmsConfig(conf=0.3, iou=0.5, target="onnxruntime"))
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["trtkit.nms.conf"] == "0.3" and meta["trtkit.nms.iou"] == "0.5" and meta["trtkit.nms.source_layout"] == "yolov8"
    with pytest.raises(TaskError, match=r"--conf 0.1 is below the score threshold 0.3 baked into.*add-nms --conf 0.1"):
        Detector.from_path(out, config=DetectorConfig(conf=0.1))
    with pytest.raises(TaskError, match=r"--iou 0.45 differs from the IoU threshold 0.5"):
        Detector.from_path(out, config=DetectorConfig(iou=0.45))
    image = _image()
    with Detector.from_path(out) as all_, Detector.from_path(out, config=DetectorConfig(conf=0.8)) as strict:
        a, b = all_(image), strict(image)
        assert "on top of the model's in-graph NMS (iou 0.5)" in strict.describe()
    assert len(b) < len(a) and (b.scores >= 0.8).all()
    np.testing.assert_allclose(b.boxes, a.boxes[a.scores >= 0.8], atol=1e-4)


def test_nms_graph_without_metadata_refuses_iou(tmp_path):
    """The tutorial's engine has no metadata: an --iou cannot apply and is refused, not ignored."""
    n = 3
    outputs = {"num_detections": np.array([[2]], np.float32), "nmsed_boxes": np.zeros((1, n, 4), np.float32),
               "nmsed_scores": np.array([[0.9, 0.8, 0]], np.float32), "nmsed_classes": np.zeros((1, n), np.float32)}
    path = gated_graph(tmp_path / "tut.onnx", outputs, {}, size=SIZE)
    with pytest.raises(TaskError, match="cannot apply: NMS runs inside this model"):
        Detector.from_path(path, config=DetectorConfig(iou=0.5))
    with Detector.from_path(path) as task:
        assert len(task(_image())) == 2


# ---------------------------------------------------------------- drawing

def test_captions_never_cover_each_other_and_the_best_is_on_top():
    import cv2

    from trtkit.tasks.draw import draw_boxes, place_labels

    # FACE_FEMALE 0.81 and FACE_MALE 0.17 on the same box (the astronaut case)
    rects = place_labels([(90, 14), (80, 14)], [(40, 40), (40, 40)], width=200, height=200, order=[0, 1])
    (x0, y0, w0, h0), (x1, y1, w1, h1) = rects
    assert y0 == 40 - 14, "the best caption takes the spot just above its box"
    assert y1 >= y0 + h0 or y1 + h1 <= y0, "captions must not overlap"
    many = place_labels([(60, 12)] * 30, [(5, 190)] * 30, width=130, height=200, order=list(range(30)))
    for i, a in enumerate(many):
        assert 0 <= a[0] and a[0] + a[2] <= 130 and 0 <= a[1] and a[1] + a[3] <= 200, "inside the image"
        for b in many[i + 1:]:
            assert not (a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3])
    image = np.zeros((200, 200, 3), np.uint8)
    boxes = np.array([[40, 40, 150, 150], [40, 40, 150, 150]], np.float32)
    drawn = draw_boxes(image, boxes, labels=["FACE_FEMALE 0.81", "FACE_MALE 0.17"], class_ids=[1, 2], scores=[0.81, 0.17])
    from trtkit.tasks.draw import color_for

    above = drawn[30:38, 42:60].reshape(-1, 3)  # inside the caption just above the box
    assert (above == color_for(1)).all(axis=1).any() and not (above == color_for(2)).all(axis=1).any()
    assert cv2 is not None


def test_no_preprocessing_hint_when_the_image_has_nothing_to_detect(assets):
    """Review finding: NudeNet (YOLOv8n) on the Solvay photo rightly finds nothing, yet the hint once told the user
    to switch to raw 0-255 pixels, which gives hundreds of boxes all scored 1.0. Implausible trials are not offered."""
    import trtkit
    from trtkit.tasks.diagnose import explain_empty

    image = str(assets / "images" / "solvay_conference_1927.jpg")
    with trtkit.Detector.from_path(asset_model("yolov8n")) as detector:
        result = detector(image)
        assert len(result) == 0
        notes = explain_empty(detector, [(image, result)])
    assert "highest score seen" in notes[0]
    assert not any("--scale 1" in n for n in notes), notes
    assert "probably right" in notes[-1] and "saturated" in notes[-1]
