"""`trtkit predict` end to end in a subprocess: tables, --json, --save-dir files, clean errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import asset_model, assert_clean_error

cv2 = pytest.importorskip("cv2")


def test_face_writes_annotated_png_and_json(cli, assets, tmp_path):
    out = tmp_path / "out"
    r = cli("predict", "--task", "face", asset_model("scrfd"), assets / "images" / "newton.png", "--save-dir", out)
    assert r.code == 0, r
    assert "newton.png: 1 result(s)" in r.out and "landmarks" in r.out
    saved = json.loads((out / "newton.json").read_text())
    assert saved["task"] == "face" and len(saved["faces"]) == 1
    drawn = cv2.imread(str(out / "newton.png"))
    original = cv2.imread(str(assets / "images" / "newton.png"))
    assert drawn.shape == original.shape and not np.array_equal(drawn, original)
    assert sorted(p.name for p in out.iterdir()) == ["newton.json", "newton.png"]  # no temp files left


def test_classify_json_parses_with_labels(cli, assets):
    r = cli(
        "predict", "--task", "classify", asset_model("efficientnet_lite0"),
        assets / "images" / "coffee.png", assets / "images" / "baboon.jpg",
        "--labels", assets / "labels" / "imagenet1k.txt", "--top-k", "2", "--json",
    )
    assert r.code == 0, r
    records = json.loads(r.out)
    assert [rec["top_k"][0]["label"] for rec in records] == ["espresso", "baboon"]
    assert all(len(rec["top_k"]) == 2 for rec in records)


def test_detect_table_has_metadata_names(cli, assets):
    r = cli("predict", "--task", "detect", asset_model("yolov8n"), assets / "images" / "astronaut.png", "--batch", "2")
    assert r.code == 0, r
    assert "FACE_FEMALE" in r.out


def test_bad_image_among_good_ones_is_reported_and_exit_1(cli, assets, tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    out = tmp_path / "out"
    r = cli("predict", "--task", "face", asset_model("scrfd"), bad, assets / "images" / "newton.png", "--save-dir", out)
    assert r.code == 1 and "Traceback" not in r.err, r
    assert "notes.jpg" in r.err and "cannot decode" in r.err
    assert "newton.png: 1 result(s)" in r.out  # the good image still ran
    assert (out / "newton.json").exists() and not (out / "notes.json").exists()


def test_model_task_mismatch_is_a_clean_error(cli, assets):
    r = cli("predict", "--task", "detect", asset_model("efficientnet_lite0"), assets / "images" / "coffee.png")
    assert_clean_error(r, "yolov8: one output [B,4+C,N]", "logits [batch,1000]")
    r = cli("predict", "--task", "face", asset_model("efficientnet_lite0"), assets / "images" / "coffee.png")
    assert_clean_error(r, "SCRFD heads", "logits")


def test_option_conflicts_and_missing_args(cli, assets, tmp_path):
    r = cli("predict", "--task", "face", asset_model("scrfd"), assets / "images" / "newton.png", "--top-k", "3")
    assert_clean_error(r, "--top-k", "--task face")
    r = cli("predict", "--task", "classify", asset_model("efficientnet_lite0"))
    assert_clean_error(r, "no images given")
    r = cli("predict", "--task", "ocr", assets / "images" / "newton.png")
    assert_clean_error(r, "--rec")
    f = tmp_path / "file"
    f.write_text("x")
    r = cli("predict", "--task", "face", asset_model("scrfd"), assets / "images" / "newton.png", "--save-dir", f)
    assert_clean_error(r, "not a directory")


def test_ocr_rec_chars_flag_overrides_metadata(cli, assets, tmp_path):
    import onnx

    rec = asset_model("ppocr_rec")
    meta = {p.key: p.value for p in onnx.load(str(rec), load_external_data=False).metadata_props}
    chars = tmp_path / "chars.txt"
    chars.write_text(meta["character"], encoding="utf-8")
    args = ["predict", "--task", "ocr", "--det", asset_model("ppocr_det"), "--rec", rec, assets / "images" / "imageTextN_rgb.png", "--json"]
    ok = cli(*args, "--rec-chars", chars)
    assert ok.code == 0, ok
    assert "technical details are too complex" in ok.out
    short = tmp_path / "short.txt"
    short.write_text("a\nb\nc\n", encoding="utf-8")
    bad = cli(*args, "--rec-chars", short)
    assert_clean_error(bad, "short.txt")


def test_options_may_come_between_model_and_images(cli, assets):
    r = cli("predict", "--task", "detect", asset_model("yolov8n"), "--conf", "0.3", assets / "images" / "astronaut.png")
    assert r.code == 0, r
    assert "FACE_FEMALE" in r.out
    r = cli(
        "predict", "--task", "ocr", asset_model("ppocr_det"), "--rec", asset_model("ppocr_rec"),
        "--cls", asset_model("ppocr_cls"), assets / "images" / "imageTextN_rgb.png",
    )
    assert r.code == 0, r
    assert "technical details are too complex" in r.out


def test_ocr_without_det_model_says_so(cli, assets):
    r = cli("predict", "--task", "ocr", "--rec", asset_model("ppocr_rec"), assets / "images" / "imageTextN_rgb.png")
    assert_clean_error(r, "--task ocr needs --det DET.onnx (or DET as the first positional)")


def test_imgsz_is_validated_with_the_flag_name(cli, assets):
    image = assets / "images" / "astronaut.png"
    r = cli("predict", "--task", "detect", asset_model("yolov8n"), image, "--imgsz", "0")
    assert_clean_error(r, "--imgsz", ">= 32", "got 0x0")
    r = cli("predict", "--task", "detect", asset_model("yolov8n"), image, "--imgsz", "333")
    assert_clean_error(r, "--imgsz", "multiple of the model's stride 32", "320 or 352")
    r = cli("predict", "--task", "face", asset_model("scrfd"), image, "--imgsz", "320")
    assert_clean_error(r, "--imgsz", "[1,3,640,640]")
    assert "FaceDetectorConfig" not in r.err


def test_top_k_is_validated_with_the_flag_name(cli, assets):
    args = ["predict", "--task", "classify", asset_model("efficientnet_lite0"), assets / "images" / "coffee.png"]
    assert_clean_error(cli(*args, "--top-k", "0"), "(--top-k) must be >= 1 (got 0)")
    assert_clean_error(cli(*args, "--top-k", "5000"), "--top-k", "5000", "number of classes (1000)")
