"""Detector on the real YOLOv8n model (Ultralytics layout, names in metadata) against truth.json."""

from __future__ import annotations

import numpy as np
import pytest

from trtkit.errors import TaskError
from trtkit.tasks.detection import Detections, Detector, DetectorConfig

from tests.conftest import asset_model

pytest.importorskip("cv2")


@pytest.fixture(scope="module")
def detector(assets):
    with Detector.from_path(asset_model("yolov8n")) as task:
        yield task


def test_astronaut_face_female(detector, assets, truth):
    expected = truth["detection"]["images"]["astronaut.png"]
    result = detector(assets / "images" / "astronaut.png")
    assert isinstance(result, Detections)
    hits = [s for s, label in zip(result.scores, result.labels) if label == expected["contains"]]
    assert hits and max(hits) >= expected["min_score"], result.rows()
    x1, y1, x2, y2 = result.boxes[0]
    assert 0 <= x1 < x2 <= 512 and 0 <= y1 < y2 <= 512  # original image pixels, clipped


def test_layout_names_and_size_come_from_the_model(detector):
    assert detector.input_size == (320, 320)  # metadata imgsz: the model's H/W are dynamic
    assert len(detector.labels) == 18 and detector.labels[1] == "FACE_FEMALE"
    assert detector.dynamic_batch


def test_batch_matches_single(detector, assets):
    paths = [assets / "images" / n for n in ("astronaut.png", "fruits.jpg", "astronaut.png")]
    for path, result in zip(paths, detector.predict_batch(paths, batch_size=3)):
        single = detector(path)
        assert single.labels == result.labels
        np.testing.assert_allclose(single.boxes, result.boxes, atol=1e-2)


def test_lower_threshold_gives_more_and_class_aware_nms(assets):
    with Detector.from_path(asset_model("yolov8n"), config=DetectorConfig(conf=0.01)) as task:
        result = task(assets / "images" / "astronaut.png")
    assert len(result) > 1 and np.all(result.scores >= 0.01)
    assert list(result.scores) == sorted(result.scores, reverse=True)


def test_classifier_model_rejected_with_expected_and_found(assets):
    with pytest.raises(TaskError) as info:
        Detector.from_path(asset_model("efficientnet_lite0"))
    message = str(info.value)
    assert "[B,4+C,N]" in message and "logits [batch,1000]" in message


def test_input_size_conflict_with_static_model(assets):
    with pytest.raises(TaskError, match="conflicts with the model's static input"):
        Detector.from_path(asset_model("scrfd"), config=DetectorConfig(input_size=(320, 320)))


def test_config_validation():
    with pytest.raises(TaskError, match="layout"):
        DetectorConfig(layout="yolov99")
    with pytest.raises(TaskError, match=r"conf must be in \[0, 1\]"):
        DetectorConfig(conf=2.0)


def test_input_size_must_be_32_plus_and_a_stride_multiple(assets):
    with pytest.raises(TaskError, match=r"input_size must be >= 32 .* got 0x0"):
        DetectorConfig(input_size=(0, 0))
    with pytest.raises(TaskError, match=r"input_size must be a multiple of the model's stride 32, got 333x333; use --imgsz 320 or 352"):
        Detector.from_path(asset_model("yolov8n"), config=DetectorConfig(input_size=(333, 333)))
    with Detector.from_path(asset_model("yolov8n"), config=DetectorConfig(input_size=(352, 352))) as task:
        assert task.input_size == (352, 352) and task.preprocessing.stride == 32
        assert len(task(assets / "images" / "astronaut.png")) >= 1


def test_input_size_conflict_names_the_flag(assets):
    with pytest.raises(TaskError, match=r"input_size 320x320 conflicts .*\[1,3,640,640\].*set it to 640"):
        Detector.from_path(asset_model("scrfd"), config=DetectorConfig(input_size=(320, 320)))
