"""OCR pipeline (PP-OCRv4 det + cls + rec) on the real models and the reference text image.

Accuracy is the character error rate (CER): the Levenshtein distance between
the read lines and the 13 reference lines, both joined with newlines, divided
by the reference length. Joining keeps reading order and line splits/merges in
the score (a missed line costs its characters; two lines read as one cost the
newline), without a line-matching step that could hide such errors.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import trtkit
from trtkit.errors import ClosedError, SpecError, TaskError
from trtkit.tasks.ocr.pipeline import OcrConfig, OcrPipeline, OcrResult
from trtkit.tasks.ocr.det import sort_reading_order
from trtkit.tasks.ocr.pipeline import character_error_rate, edit_distance
from trtkit.tasks.ocr.rec import ctc_decode

from tests.conftest import asset_model

IMAGE = "imageTextN_rgb.png"


# ---------------------------------------------------------------- fixtures (models opened once)

@pytest.fixture(scope="module")
def models():
    opened = {key: trtkit.load(asset_model(f"ppocr_{key}")) for key in ("det", "rec", "cls")}
    yield opened
    for backend in opened.values():
        backend.close()


@pytest.fixture(scope="module")
def image(assets):
    from trtkit.tasks._image import read_image

    return read_image(assets / "images" / IMAGE)


@pytest.fixture(scope="module")
def reference(truth) -> list[str]:
    return truth["ocr"]["images"][IMAGE]["lines"]


@pytest.fixture(scope="module")
def result_no_cls(models, image) -> OcrResult:
    return OcrPipeline(models["det"], models["rec"])(image)


# ---------------------------------------------------------------- accuracy

def test_reads_reference_text_without_classifier(result_no_cls, reference, image):
    lines = [line.text for line in result_no_cls.lines]
    assert character_error_rate(lines, reference) <= 0.02, "\n".join(lines)
    assert len(lines) == len(reference)
    h, w = image.shape[:2]
    boxes = np.array([line.box for line in result_no_cls.lines])
    assert boxes.shape == (13, 4, 2)
    assert (boxes[..., 0] >= 0).all() and (boxes[..., 0] < w).all()
    assert (boxes[..., 1] >= 0).all() and (boxes[..., 1] < h).all()
    tops = boxes[:, 0, 1]
    assert (np.diff(tops) > 0).all(), "lines are not in top-to-bottom order"
    assert all(0.5 <= line.score <= 1.0 and not line.rotated for line in result_no_cls.lines)


def test_reads_reference_text_with_classifier(models, image, reference):
    result = OcrPipeline(models["det"], models["rec"], models["cls"])(image)
    assert character_error_rate([line.text for line in result.lines], reference) <= 0.02, result.text
    assert not any(line.rotated for line in result.lines), "upright lines were turned"


def test_classifier_turns_upside_down_lines(models, image, reference):
    upside_down = np.ascontiguousarray(image[::-1, ::-1])
    result = OcrPipeline(models["det"], models["rec"], models["cls"])(upside_down)
    # reading order on the turned page is bottom line first; a line the classifier misses reads as
    # low-score garbage and is dropped, so demand most lines, each read well
    assert len(result.lines) >= 10, result.text
    assert all(line.rotated for line in result.lines)
    for line in result.lines:
        best = min(edit_distance(line.text, ref) / len(ref) for ref in reference)
        assert best <= 0.05, line.text
    first_ref = [ref for ref in reference if edit_distance(result.lines[0].text, ref) <= 3]
    assert first_ref and reference.index(first_ref[0]) >= len(reference) - 3


@pytest.mark.parametrize("fields", [{"rec_batching": "single"}, {"rec_batching": "buckets", "rec_max_padding": 0.15}])
def test_other_recognition_batching_reads_reference_text(models, image, reference, fields):
    result = OcrPipeline(models["det"], models["rec"], config=OcrConfig(**fields))(image)
    assert character_error_rate([line.text for line in result.lines], reference) <= 0.02, result.text


def test_inference_batch_size_does_not_change_text(models, image, result_no_cls):
    # the padded width comes from the batch plan, so one call per batch must read exactly what one call per
    # crop reads (the reference is RapidOCR's output, which runs whole padded batches)
    batched = OcrPipeline(models["det"], models["rec"], config=OcrConfig(rec_infer_batch=6))(image)
    assert [line.text for line in batched.lines] == [line.text for line in result_no_cls.lines]


def test_batch_plans():
    from trtkit.tasks.ocr.rec import plan_batches

    ratios = [30.0, 5.0, 20.0, 21.0, 6.0, 22.0, 50.0]
    assert plan_batches(ratios, config=OcrConfig(rec_batch_size=3)) == [[1, 4, 2], [3, 5, 0], [6]]
    assert plan_batches(ratios, config=OcrConfig(rec_batching="single")) == [[1], [4], [2], [3], [5], [0], [6]]
    # 5 and 6 pad to the 320 px floor (ratio 6.67): no waste; 20 after them would waste ~55%, 30 after 22 22%,
    # 50 after 30 20%
    buckets = plan_batches(ratios, config=OcrConfig(rec_batching="buckets", rec_max_padding=0.15))
    assert buckets == [[1, 4], [2, 3, 5], [0], [6]]


# ---------------------------------------------------------------- result object

def test_result_json_rows_and_drawing(result_no_cls, image):
    data = json.loads(json.dumps(result_no_cls.to_json()))
    assert data["text"] == result_no_cls.text == "\n".join(line["text"] for line in data["lines"])
    assert len(data["lines"]) == 13 and len(data["lines"][0]["box"]) == 4
    rows = result_no_cls.rows()
    assert len(rows) == 13 and all(len(row) == len(OcrResult.columns) for row in rows)
    before = image.copy()
    drawn = result_no_cls.draw(image)
    h, w = image.shape[:2]
    # the page keeps its pixels apart from the numbered boxes; the text goes to a side panel on the right
    assert drawn.shape[0] >= h and drawn.shape[1] == w + max(w, 320) and drawn.dtype == np.uint8
    assert (image == before).all(), "draw() modified its input"
    assert (drawn[:h, :w] != image).any()
    chips = drawn[:, w + 4 : w + 8]  # the numbered chip column of the side panel: one chip per line, apart
    inked_rows = np.flatnonzero((chips < 250).any(axis=(1, 2)))
    bands = np.split(inked_rows, np.flatnonzero(np.diff(inked_rows) > 1) + 1)
    assert len(bands) == 13, "one separate entry per recognised line (no two overlap)"


def test_blank_image_gives_empty_result(models):
    blank = np.full((300, 400, 3), 255, np.uint8)
    result = OcrPipeline(models["det"], models["rec"], models["cls"])(blank)
    assert result.lines == () and result.text == "" and result.rows() == []
    assert result.to_json() == {"text": "", "lines": []}


# ---------------------------------------------------------------- bad models and options

@pytest.mark.parametrize(
    ("slots", "needles"),
    [
        (("cls", "rec", None), ("detection model", "[N,1,H,W]", "found")),
        (("det", "det", None), ("recognition model", "[N,T,C]", "found")),
        (("det", "rec", "rec"), ("direction classifier", "[N,2]", "found")),
    ],
)
def test_wrong_model_in_a_slot(models, slots, needles):
    det, rec, cls = (models[s] if s else None for s in slots)
    with pytest.raises(TaskError) as info:
        OcrPipeline(det, rec, cls)
    for needle in needles:
        assert needle in str(info.value)


@pytest.fixture(scope="module")
def rec_without_metadata(tmp_path_factory):
    import onnx

    proto = onnx.load(str(asset_model("ppocr_rec")))
    characters = next(p.value for p in proto.metadata_props if p.key == "character")
    del proto.metadata_props[:]
    folder = tmp_path_factory.mktemp("rec")
    onnx.save(proto, str(folder / "rec_nometa.onnx"))
    (folder / "keys.txt").write_text(characters + "\n", encoding="utf-8")
    return folder


def test_rec_model_without_characters_needs_a_file(models, rec_without_metadata, image):
    with trtkit.load(rec_without_metadata / "rec_nometa.onnx") as bare:
        with pytest.raises(TaskError) as info:
            OcrPipeline(models["det"], bare)
        assert "'character'" in str(info.value) and "--rec-chars" in str(info.value)
        config = OcrConfig(rec_chars=str(rec_without_metadata / "keys.txt"))
        pipeline = OcrPipeline(models["det"], bare, config=config)
        crop = image[14:34, 28:354]  # the first line, "technical details are too complex ..."
        (text, score), = pipeline.recognizer.recognize([crop])
        assert text.startswith("technical details") and score > 0.8


def test_character_file_of_the_wrong_length(models, tmp_path):
    keys = tmp_path / "short.txt"
    keys.write_text("a\nb\nc\n", encoding="utf-8")
    with pytest.raises(TaskError) as info:
        OcrPipeline(models["det"], models["rec"], config=OcrConfig(rec_chars=str(keys)))
    assert "6625 classes" in str(info.value) and "3 entries" in str(info.value)
    with pytest.raises(TaskError, match="does not exist"):
        OcrPipeline(models["det"], models["rec"], config=OcrConfig(rec_chars=str(tmp_path / "missing.txt")))


def test_config_rejects_bad_values():
    with pytest.raises(SpecError, match="limit_type"):
        OcrConfig(limit_type="avg")
    with pytest.raises(SpecError, match="rec_batch_size"):
        OcrConfig(rec_batch_size=0)
    with pytest.raises(SpecError, match="rec_batching"):
        OcrConfig(rec_batching="widest")
    with pytest.raises(SpecError, match="rec_infer_batch"):
        OcrConfig(rec_infer_batch=0)


def test_from_paths_owns_and_closes_its_backends():
    pipeline = OcrPipeline.from_paths(asset_model("ppocr_det"), asset_model("ppocr_rec"), cls=asset_model("ppocr_cls"))
    with pipeline:
        backends = (pipeline.detector.backend, pipeline.recognizer.backend, pipeline.classifier.backend)
    for backend in backends:
        with pytest.raises(ClosedError):
            backend.infer(np.zeros((1, 3, 48, 192), np.float32))
    with pytest.raises(TaskError, match="after close"):
        pipeline(np.zeros((64, 64, 3), np.uint8))


def test_from_paths_closes_what_it_opened_when_a_slot_is_wrong():
    with pytest.raises(TaskError, match="detection model"):
        OcrPipeline.from_paths(asset_model("ppocr_cls"), asset_model("ppocr_rec"))


# ---------------------------------------------------------------- decoding pieces

def test_ctc_decode_collapses_repeats_and_drops_blanks():
    chars = np.array(["", "a", "b", " "], dtype=object)
    # timesteps: a a blank a b b blank  -> "aab" (the blank separates the two a's)
    best = [1, 1, 0, 1, 2, 2, 0]
    probs = [0.9, 0.8, 0.99, 0.7, 0.6, 0.5, 0.95]
    scores = np.zeros((2, len(best), 4), np.float32)
    for t, (c, p) in enumerate(zip(best, probs)):
        scores[0, t, c] = p
    scores[1, :, 0] = 1.0  # all blank: empty line, score 0
    (text, score), (empty, empty_score) = ctc_decode(scores, chars)
    assert text == "aab" and score == pytest.approx((0.9 + 0.7 + 0.6) / 3)
    assert empty == "" and empty_score == 0.0


def test_reading_order_puts_same_line_boxes_left_to_right():
    def box(x, y):
        return [[x, y], [x + 50, y], [x + 50, y + 10], [x, y + 10]]

    boxes = np.array([box(200, 12), box(10, 15), box(10, 40)], np.float32)  # right word sits 3 px higher
    ordered = sort_reading_order(boxes)
    assert ordered[:, 0, 0].tolist() == [10, 200, 10]
    assert ordered[:, 0, 1].tolist() == [15, 12, 40]
