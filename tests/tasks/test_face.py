"""FaceDetector on the real SCRFD 2.5G-KPS model against the scrfd package's own truths."""

from __future__ import annotations

import numpy as np
import pytest

from trtkit.errors import TaskError
from trtkit.tasks.face import FaceDetector, Faces, anchor_centers

from tests.conftest import asset_model

pytest.importorskip("cv2")


@pytest.fixture(scope="module")
def faces(assets):
    with FaceDetector.from_path(asset_model("scrfd")) as task:
        yield task


@pytest.mark.parametrize("image", ["newton.png", "gauss.png"])
def test_single_face_box_and_landmarks_within_2px(faces, assets, truth, image):
    (expected,) = truth["face"]["images"][image]
    result = faces(assets / "images" / image)
    assert isinstance(result, Faces) and len(result) == 1, result.rows()
    np.testing.assert_allclose(result.boxes[0], expected["box"], atol=2.0)
    np.testing.assert_allclose(result.landmarks[0], expected["landmarks"], atol=2.0)
    assert abs(float(result.scores[0]) - expected["score"]) < 0.02


def test_solvay_29_faces(faces, assets, truth):
    result = faces(assets / "images" / "solvay_conference_1927.jpg")
    assert len(result) == truth["face"]["images"]["solvay_conference_1927.jpg"]["count"]
    assert result.landmarks.shape == (len(result), 5, 2)
    payload = result.to_json()
    assert len(payload["faces"]) == len(result) and len(payload["faces"][0]["landmarks"]) == 5


def test_anchor_centers_layout():
    centers = anchor_centers(64, 64, 32, 2)
    assert centers.tolist() == [[0, 0], [0, 0], [32, 0], [32, 0], [0, 32], [0, 32], [32, 32], [32, 32]]


def test_detector_model_rejected_with_expected_and_found(assets):
    with pytest.raises(TaskError) as info:
        FaceDetector.from_path(asset_model("yolov8n"))
    assert "SCRFD heads" in str(info.value) and "retinaface_torch" in str(info.value) and "output0" in str(info.value)


def test_drawing_marks_the_face(faces, assets):
    from trtkit.tasks._image import read_image

    image = read_image(assets / "images" / "newton.png")
    drawn = faces(image).draw(image)
    assert drawn.shape == image.shape and not np.array_equal(drawn, image)
    np.testing.assert_array_equal(read_image(assets / "images" / "newton.png"), image)  # input untouched


def test_batch_on_a_dynamic_batch_copy_matches_single(assets, tmp_path):
    """SCRFD flattens the batch into the anchor axis ([1, B*N, k]); predict_batch must undo that."""
    onnx = pytest.importorskip("onnx")
    proto = onnx.load(str(asset_model("scrfd")))
    for value in [*proto.graph.input, *proto.graph.output]:
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    onnx.save(proto, str(tmp_path / "scrfd_dyn.onnx"))
    images = [assets / "images" / n for n in ("newton.png", "gauss.png")]
    with FaceDetector.from_path(tmp_path / "scrfd_dyn.onnx") as task:
        assert task.dynamic_batch
        batched = task.predict_batch(images, batch_size=2)
        singles = [task(p) for p in images]
    for a, b in zip(batched, singles):
        assert len(a) == len(b) == 1
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
        np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-3)


def test_input_size_errors_name_the_flag(assets):
    from trtkit.tasks.face import FaceDetectorConfig

    with pytest.raises(TaskError, match=r"input_size 320x320 conflicts .*\[1,3,640,640\]"):
        FaceDetector.from_path(asset_model("scrfd"), config=FaceDetectorConfig(input_size=(320, 320)))
    with pytest.raises(TaskError, match=r"input_size must be >= 32"):
        FaceDetectorConfig(input_size=(16, 16))
