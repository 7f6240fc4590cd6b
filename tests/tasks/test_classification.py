"""Classifier on the real efficientnet_lite0 model against truth.json."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import asset_model
from trtkit.errors import TaskError
from trtkit.tasks.base import read_labels
from trtkit.tasks.classification import Classification, Classifier, ClassifierConfig, labels_from_metadata

pytest.importorskip("cv2")


@pytest.fixture(scope="module")
def classifier(assets):
    labels = read_labels(assets / "labels" / "imagenet1k.txt")
    with Classifier.from_path(asset_model("efficientnet_lite0"), config=ClassifierConfig(labels=labels)) as task:
        yield task


@pytest.mark.parametrize("image", ["coffee.png", "squirrel_cls.jpg", "baboon.jpg"])
def test_top1_matches_truth(classifier, assets, truth, image):
    expected = truth["classification"]["images"][image]
    result = classifier(assets / "images" / image)
    assert result.top1 == expected["top1"], result
    assert expected["name"] in result.labels[0]
    assert 0.0 < result.scores[0] <= 1.0 and list(result.scores) == sorted(result.scores, reverse=True)


def test_chelsea_is_a_cat(classifier, assets, truth):
    wanted = set(truth["classification"]["images"]["chelsea.png"]["top5_contains_any"])
    result = classifier(assets / "images" / "chelsea.png")
    assert wanted & set(result.class_ids[:5]), result


def test_logits_get_softmax_and_probabilities_do_not(classifier):
    logits = np.array([[2.0, -1.0, 0.5]], np.float32)
    out = classifier.postprocess({classifier.outputs[0].name: logits}, None)
    assert abs(sum(out.scores) - 1.0) < 1e-5 and out.class_ids == (0, 2, 1)
    probs = np.array([[0.2, 0.7, 0.1]], np.float32)
    out = classifier.postprocess({classifier.outputs[0].name: probs}, None)
    np.testing.assert_allclose(out.scores, [0.7, 0.2, 0.1], rtol=1e-6)


def test_batch_matches_single(classifier, assets):
    paths = [assets / "images" / n for n in ("coffee.png", "baboon.jpg", "chelsea.png")]
    batched = classifier.predict_batch(paths, batch_size=3)
    for path, result in zip(paths, batched):
        single = classifier(path)
        assert single.class_ids == result.class_ids
        np.testing.assert_allclose(single.scores, result.scores, rtol=1e-4, atol=1e-6)


def test_result_json_rows_and_drawing(classifier, assets):
    from trtkit.tasks._image import read_image

    image = read_image(assets / "images" / "coffee.png")
    result = classifier(image)
    assert isinstance(result, Classification)
    assert result.to_json()["top_k"][0]["label"] == "espresso"
    assert len(result.rows()) == 5 and len(result.rows()[0]) == len(result.columns)
    drawn = result.draw(image)
    assert drawn.shape == image.shape and not np.array_equal(drawn, image)


def test_wrong_label_count_and_crop_conflict(assets):
    with pytest.raises(TaskError, match="3 labels given .* 1000 classes"):
        Classifier.from_path(asset_model("efficientnet_lite0"), config=ClassifierConfig(labels=("a", "b", "c")))
    with pytest.raises(TaskError, match="crop=256 conflicts"):
        Classifier.from_path(asset_model("efficientnet_lite0"), config=ClassifierConfig(crop=256))


def test_detector_model_is_rejected_with_layouts(assets):
    with pytest.raises(TaskError, match=r"expected one input \[B,3,H,W\] and an output \[B,num_classes\].*output0"):
        Classifier.from_path(asset_model("yolov8n"))


def test_labels_from_ultralytics_metadata():
    assert labels_from_metadata({"names": "{0: 'cat', 1: 'dog'}"}) == ("cat", "dog")
    assert labels_from_metadata({"names": "['a', 'b']"}) == ("a", "b")
    assert labels_from_metadata({"other": "x"}) == ()


def test_top_k_errors_name_the_flag_and_are_not_clamped(assets):
    with pytest.raises(TaskError, match=r"^top_k must be >= 1 \(got 0\)"):
        ClassifierConfig(top_k=0)
    with pytest.raises(TaskError, match=r"^top_k 5000 is larger than the number of classes \(1000\)"):
        Classifier.from_path(asset_model("efficientnet_lite0"), config=ClassifierConfig(top_k=5000))
    with Classifier.from_path(asset_model("efficientnet_lite0"), config=ClassifierConfig(top_k=1000)) as task:
        assert len(task(assets / "images" / "coffee.png").class_ids) == 1000


def test_presets_and_overrides(assets, cli):
    from trtkit.tasks.preprocess import CLASSIFY_PRESETS, Preprocess

    assert {"imagenet", "inception", "caffe", "unit", "raw"} <= set(CLASSIFY_PRESETS)
    image = assets / "images" / "coffee.png"
    with Classifier.from_path(asset_model("efficientnet_lite0")) as task:
        assert "preset imagenet" in task.describe() and task(image).top1 == 967
    caffe = ClassifierConfig(preset="caffe")
    assert caffe.preprocessing.bgr and caffe.preprocessing.mean == (103.939, 116.779, 123.68)
    with Classifier.from_path(asset_model("efficientnet_lite0"), config=ClassifierConfig(preset="raw")) as task:
        assert task(image).top1 != 967  # the wrong preset really changes what the model sees
    over = ClassifierConfig(preprocess=Preprocess(bgr=True))
    assert over.preprocessing.bgr and over.preprocessing.scale == CLASSIFY_PRESETS["imagenet"].scale
    with pytest.raises(TaskError, match="does not pad"):
        ClassifierConfig(preprocess=Preprocess(pad="corner"))
    r = cli("predict", "--task", "classify", asset_model("efficientnet_lite0"), image, "--preset", "inception", "--json")
    assert r.code == 0 and "preset inception" in r.err, r
    r = cli("predict", "--task", "classify", asset_model("efficientnet_lite0"), image, "--pad", "corner")
    assert r.code == 1 and "--pad do(es) not apply to --task classify" in r.err, r
