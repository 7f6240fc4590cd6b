"""Preprocessing baked into the graph (uint8 pixels in) against the CPU (cv2) path, run with ONNX
Runtime on the CPU: the same artifact TensorRT / ORT-CUDA run on a GPU."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from trtkit.backends import load
from trtkit.errors import TaskError
from trtkit.tasks._image import letterbox, read_image
from trtkit.tasks.preprocess import Preprocess
from trtkit.tasks.classification import Classifier
from trtkit.tasks.detection import Detector, DetectorConfig
from trtkit.tasks.face import FaceDetector
from trtkit.tasks.graph_preprocess import (
    GraphPreprocessed, LetterboxFrontEnd, LetterboxParams, bake_letterbox, bake_normalize, letterbox_params,
)

from tests.conftest import asset_model

pytest.importorskip("cv2")


@pytest.fixture(scope="module")
def images(assets):
    return [read_image(p) for p in sorted((assets / "images").iterdir())]


def _identity_model(size: tuple[int, int]) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, *size])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 3, *size])
    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["out"])], "identity", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("center,bgr,size", [(True, False, (320, 320)), (False, True, (256, 384))])
def test_baked_tensor_matches_cv2_letterbox_within_one_grey_level(images, tmp_path, center, bgr, size):
    params = LetterboxParams(size, 114.0, center, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), bgr)
    path = tmp_path / "pre.onnx"
    onnx.save(bake_letterbox(_identity_model(size), params=params), path)
    with load(path) as backend:
        runner = LetterboxFrontEnd(params)
        prepared = [runner.preprocess(img) for img in images]
        feeds = runner.collate([f for f, _ in prepared])  # mixed sizes share one canvas
        out = backend.infer(feeds)["out"]
    for img, got, (_, info) in zip(images, out, prepared):
        boxed, ref_info = letterbox(img, size, pad_value=114, center=center)
        ref = Preprocess(scale=1.0, mean=0.0, std=1.0, bgr=bgr).to_tensor(boxed)[0]
        assert info == ref_info
        diff = np.abs(got - ref)
        # cv2 rounds its result to uint8 (|error| <= 0.5, mean 0.25); the graph keeps float32
        assert diff.max() <= 1.0 and diff.mean() < 0.3, (img.shape, diff.max(), diff.mean())


def _match(a, b):
    """Same detections: each box of ``a`` has a box of ``b`` with the same label within 1 px (order may
    differ only between near-equal scores)."""
    assert len(a) == len(b)
    used = set()
    for i in range(len(a)):
        dist = np.abs(b.boxes - a.boxes[i]).max(axis=1)
        j = int(np.argmin(np.where([k in used for k in range(len(b))], np.inf, dist)))
        used.add(j)
        assert dist[j] <= 1.0, (a.boxes[i], b.boxes[j])
        assert getattr(a, "labels", ())[i:i + 1] == getattr(b, "labels", ())[j:j + 1]
        assert abs(float(a.scores[i]) - float(b.scores[j])) < 0.02


@pytest.mark.parametrize("which", ["detect320", "detect640", "face"])
def test_same_detections_as_the_cpu_path(images, which):
    if which == "face":
        task = FaceDetector.from_path(asset_model("scrfd"))
    else:
        config = DetectorConfig(input_size=(640, 640)) if which == "detect640" else None
        task = Detector.from_path(asset_model("yolov8n"), config=config)
    with task, GraphPreprocessed.open(task) as baked:
        expected = task.predict_batch(images, batch_size=4)
        streamed = list(baked.stream(images, batch_size=4, workers=2))
        direct = baked.predict_batch(images[:3], batch_size=2)
    assert sum(len(r) for r in expected) > 0
    for a, b in zip(expected, streamed):
        _match(a, b)
    for a, b in zip(expected[:3], direct):
        _match(a, b)


def test_classifier_is_refused_with_the_reason():
    with Classifier.from_path(asset_model("efficientnet_lite0")) as task:
        with pytest.raises(TaskError, match="letterbox tasks"):
            letterbox_params(task)


@pytest.mark.parametrize("preset", [Preprocess(scale=1 / 255, mean=0.0, std=1.0, bgr=False),
                                    Preprocess(scale=1.0, mean=(103.939, 116.779, 123.68), std=1.0, bgr=True),
                                    Preprocess(scale=1 / 255, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), bgr=False)],
                         ids=["unit", "caffe-bgr", "imagenet"])
def test_baked_normalisation_is_bit_identical_to_the_cpu_tensor(images, tmp_path, preset):
    """bake_normalize looks pixels up in the same float32 tables as Preprocess.to_tensor's cv2.LUT: equal, not close."""
    size = (256, 384)
    path = tmp_path / "norm.onnx"
    onnx.save(bake_normalize(_identity_model(size), preprocessing=preset, size=size), path)
    with load(path) as backend:
        boxed = [letterbox(img, size, pad_value=114, center=True)[0] for img in images]
        out = backend.infer({"pixels": np.stack(boxed)})["out"]
    for got, img in zip(out, boxed, strict=True):
        np.testing.assert_array_equal(got, preset.to_tensor(img)[0])


@pytest.mark.parametrize("which", ["detect640", "face"])
def test_host_resize_streams_in_worker_processes_with_the_cpu_path_results(images, which):
    """resize='host': cv2 letterboxes in the workers (fixed-size uint8 batches, so worker processes fill them), the model
    normalises: the tensors are bit-identical, so the results equal predict_batch's."""
    task = (FaceDetector.from_path(asset_model("scrfd")) if which == "face"
            else Detector.from_path(asset_model("yolov8n"), config=DetectorConfig(input_size=(640, 640))))
    with task, GraphPreprocessed.open(task, resize="host") as baked:
        assert baked.resize == "host" and [s.name for s in baked.backend.inputs] == ["pixels"]
        expected = task.predict_batch(images, batch_size=4)
        streamed = list(baked.stream(images, batch_size=4, workers=2, pool="processes"))
        threads = list(baked.stream(images, batch_size=4, workers=2, pool="threads"))
        direct = baked.predict_batch(images[:3], batch_size=2)
        assert task.__dict__["_stream_workers"].count == 2  # the processes ran
    assert sum(len(r) for r in expected) > 0
    for a, b in zip(expected, streamed, strict=True):  # the same batches of the same tensors: the same numbers
        np.testing.assert_array_equal(b.boxes, a.boxes)
        np.testing.assert_array_equal(b.scores, a.scores)
    for a, b in zip(expected, threads, strict=True):  # threads may run a partial batch early: another batch size, ORT may round differently
        _match(a, b)
    for a, b in zip(expected[:3], direct):
        _match(a, b)


def test_resize_choices_and_mismatched_front_ends_are_refused(images, tmp_path):
    from trtkit.tasks.streaming import StreamOptions, stream_predictions

    with Detector.from_path(asset_model("yolov8n")) as task:
        with pytest.raises(TaskError, match=r"resize=\) must be one of graph, host, got 'gpu'"):
            GraphPreprocessed.open(task, resize="gpu")
        with GraphPreprocessed.open(task) as graph:  # resize in the graph: batches change size, so threads only
            with pytest.raises(TaskError, match=r"resize='graph'.*resize='host'.*--pool threads"):
                list(stream_predictions(graph, images[:2], options=StreamOptions(batch_size=2, workers=2, pool="processes")))
        with pytest.raises(TaskError, match=r"input 'images' is \[B, 3, 320, 320\], but size= asks for \[B, 3, 640, 480\]"):
            bake_normalize(_identity_model((320, 320)), preprocessing=task.preprocessing, size=(640, 480))
        other = tmp_path / "norm_640.onnx"  # baked for 640 while the task runs at 320
        onnx.save(bake_normalize(onnx.load(str(asset_model("yolov8n"))), preprocessing=task.preprocessing, size=(640, 640)), other)
        with load(other) as backend:
            with pytest.raises(TaskError, match=r"not a baked front end for this task.*\[B, 320, 320, 3\]"):
                GraphPreprocessed(task, backend)
