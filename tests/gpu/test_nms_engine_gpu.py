"""The engine column of the layout sweep: predict on the raw ONNX (ONNX Runtime, host NMS) == predict on the
``add-nms`` graph built into a full-TensorRT engine, for every detection and face layout.

``--target tensorrt`` writes EfficientNMS_TRT (detection); ``--target onnxruntime`` writes ONNX
NonMaxSuppression, which full TensorRT >= 8.5 parses into its NMS layer (faces always use it). The
thresholds and preprocessing ``add-nms`` baked in travel through ``trtkit build`` (the sidecar's
``metadata``) into the engine's predict. The YOLO-family and RetinaFace graphs return outputs we construct
(tests/data/layout_graphs.py), so every box is known; YOLOv8n and SCRFD are the real asset models.
Run on the device machine with the kit (tests/README.md, "GPU suite on real TensorRT").
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import asset_model
from tests.data.layout_graphs import gated_graph, yolo_graph

pytestmark = pytest.mark.gpu
pytest.importorskip("tensorrt", reason="full TensorRT is not installed (see tests/README.md: GPU suite on real TensorRT)")
pytest.importorskip("onnxruntime")
pytest.importorskip("cv2")

from tests.gpu.test_tensorrt_gpu import _profile, build_engine  # noqa: E402
from trtkit.graph.nms import AddNmsConfig, add_nms  # noqa: E402
from trtkit.tasks.detection import Detector, DetectorConfig  # noqa: E402
from trtkit.tasks.face import FaceDetector, FaceDetectorConfig  # noqa: E402

SIZE = (128, 128)
YOLO_320 = _profile(images=((1, 3, 320, 320),) * 3)  # the add-nms graph keeps YOLOv8n's dynamic batch and H/W


def _same(a, b, *, landmarks: bool = False) -> None:
    assert len(a) >= 3, "the inputs hold several objects"
    assert len(b) == len(a), (len(a), len(b))
    if hasattr(a, "class_ids"):  # detections; faces have one class
        np.testing.assert_array_equal(b.class_ids, a.class_ids)
    np.testing.assert_allclose(b.scores, a.scores, atol=1e-5)
    np.testing.assert_allclose(b.boxes, a.boxes, atol=1e-2)
    if landmarks:
        np.testing.assert_allclose(b.landmarks, a.landmarks, atol=1e-2)


@pytest.mark.parametrize("target", ["tensorrt", "onnxruntime"])
@pytest.mark.parametrize("kind,layout,classes", [
    ("yolov8", "auto", 5), ("yolov5", "auto", 5), ("yolov5", "yolor", 80), ("yolox", "auto", 5),
])
def test_sweep_engine_column(tmp_path, kind, layout, classes, target):
    model, _ = yolo_graph(tmp_path / f"{kind}.onnx", kind, size=SIZE, classes=classes)
    nms_model = add_nms(model, tmp_path / f"{kind}_nms.onnx",
                        config=AddNmsConfig(layout=layout, conf=0.3, iou=0.5, max_det=50, target=target))
    engine = build_engine(nms_model, f"sweep-{kind}-{layout}-{classes}-{target}")
    image = np.full((*SIZE, 3), (10, 60, 220), np.uint8)
    with Detector.from_path(model, config=DetectorConfig(layout=layout, conf=0.3, iou=0.5, max_det=50)) as host, \
            Detector.from_path(engine) as built:
        assert built.layout.name == "efficient_nms"
        assert (built.conf, built.iou) == (0.3, 0.5)  # baked by add-nms, carried by build into the engine
        assert built.preprocessing == host.preprocessing
        _same(host(image), built(image))


def _retinaface_outputs(case: str) -> tuple[dict[str, np.ndarray], list[str]]:
    from tests.tasks.test_retinaface import _mxnet_outputs, _torch_outputs

    if case == "mxnet":
        outs = _mxnet_outputs()
        return outs, list(outs)[::-1]
    outs = _torch_outputs()
    return outs, ["landms", "conf", "loc"]


@pytest.mark.parametrize("case", ["mxnet", "torch"])
def test_retinaface_engine_column(tmp_path, case):
    outs, names = _retinaface_outputs(case)
    model = gated_graph(tmp_path / f"{case}.onnx", {n: outs[n] for n in names}, {}, size=SIZE)
    nms_model = add_nms(model, tmp_path / f"{case}_nms.onnx", config=AddNmsConfig(task="face", target="tensorrt"))
    engine = build_engine(nms_model, f"retinaface-{case}")
    image = np.full((*SIZE, 3), 90, np.uint8)
    with FaceDetector.from_path(model) as host, FaceDetector.from_path(engine) as built:
        assert built.preprocessing == host.preprocessing
        _same(host(image), built(image), landmarks=True)


@pytest.mark.parametrize("image", ["solvay_conference_1927.jpg", "newton.png"])
def test_scrfd_add_nms_engine_equals_onnx(assets, tmp_path_factory, image):
    folder = tmp_path_factory.mktemp("scrfd")
    nms_model = add_nms(asset_model("scrfd"), folder / "scrfd_nms.onnx",
                        config=AddNmsConfig(task="face", conf=0.5, iou=0.4, target="tensorrt"))
    engine = build_engine(nms_model, "scrfd-nms")
    with FaceDetector.from_path(asset_model("scrfd"), config=FaceDetectorConfig(conf=0.5, iou=0.4)) as host, \
            FaceDetector.from_path(engine) as built:
        assert (built.conf, built.iou) == (0.5, 0.4)
        a, b = host(assets / "images" / image), built(assets / "images" / image)
    assert len(a) >= 1 and len(b) == len(a)
    np.testing.assert_allclose(b.boxes, a.boxes, atol=0.5)  # pixels: FP32 engine vs ORT
    np.testing.assert_allclose(b.scores, a.scores, atol=1e-3)


def test_yolov8n_efficient_nms_engine_equals_onnx(assets, tmp_path):
    nms_model = add_nms(asset_model("yolov8n"), tmp_path / "y8_nms.onnx",
                        config=AddNmsConfig(conf=0.25, iou=0.45, max_det=100, target="tensorrt"))
    engine = build_engine(nms_model, "yolov8n-nms", profiles=(YOLO_320,))
    cfg = DetectorConfig(conf=0.25, iou=0.45, max_det=100)
    images = [assets / "images" / n for n in ("astronaut.png", "solvay_conference_1927.jpg")]
    with Detector.from_path(asset_model("yolov8n"), config=cfg) as host, Detector.from_path(engine) as built:
        assert built.layout.name == "efficient_nms" and built.labels == host.labels
        for path in images:
            a, b = host(path), built(path)
            assert len(b) == len(a), (path.name, len(a), len(b))
            assert sorted(b.labels) == sorted(a.labels)
            order_a, order_b = np.argsort(-a.scores), np.argsort(-b.scores)
            np.testing.assert_allclose(b.boxes[order_b], a.boxes[order_a], atol=0.5)
            np.testing.assert_allclose(b.scores[order_b], a.scores[order_a], atol=1e-3)
