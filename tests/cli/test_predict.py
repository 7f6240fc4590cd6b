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
    assert_clean_error(cli(*args, "--top-k", "0"), "error: --top-k must be >= 1 (got 0)")
    assert_clean_error(cli(*args, "--top-k", "5000"), "--top-k", "5000", "number of classes (1000)")


# ---------------------------------------------------------------- real inputs: directories, globs, videos, Ctrl-C

def _write_video(path, assets, frames: int, size=(160, 128)):
    names = sorted((assets / "images").iterdir())
    imgs = [cv2.resize(cv2.imread(str(p)), size) for p in names]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, size)
    for i in range(frames):
        writer.write(imgs[i % len(imgs)])
    writer.release()


@pytest.mark.parametrize("pool", ["threads", "processes"])
def test_directory_of_mixed_valid_and_broken_files_loses_and_reorders_nothing(cli, assets, tmp_path, pool):
    import shutil

    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    layout = {  # name -> valid image?
        "a_astronaut.png": True, "b_broken.jpg": False, "c_coffee.png": True, "d_empty.png": False,
        "sub/e_chelsea.png": True, "sub/f_text.jpg": False, "sub/g_newton.png": True,
    }
    for name, valid in layout.items():
        if valid:
            shutil.copy(assets / "images" / name.split("_", 1)[1], src / name)
        else:
            (src / name).write_bytes(b"" if "empty" in name else b"this is not an image")
    (src / "readme.txt").write_text("ignored: not an image extension")
    out = tmp_path / "out"
    r = cli("predict", "--task", "detect", asset_model("yolov8n"), src, "--json", "--batch", "3", "--workers", "2", "--save-dir", out, "--pool", pool)
    assert r.code == 1 and "Traceback" not in r.err, r
    records = json.loads(r.out)
    expected_order = sorted(layout, key=lambda n: n.split("/"))
    valid = [n for n in expected_order if layout[n]]
    assert [rec["image"] for rec in records] == [str(src / n) for n in valid]  # in order, none lost
    for name in expected_order:
        if not layout[name]:
            assert f"error: {src / name}:" in r.err
    assert f"error: 3 of {len(layout)} input(s) failed" in r.err
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{n.rsplit('/', 1)[-1].rsplit('.', 1)[0]}.{ext}" for n in valid for ext in ("json", "png")
    )


def test_video_writes_annotated_mp4_and_one_json_line_per_frame(cli, assets, tmp_path):
    video = tmp_path / "clip.mp4"
    _write_video(video, assets, frames=12)
    out = tmp_path / "out"
    r = cli("predict", "--task", "detect", asset_model("yolov8n"), video, assets / "images" / "astronaut.png", "--save-dir", out)
    assert r.code == 0, r
    lines = [json.loads(line) for line in (out / "clip.jsonl").read_text().splitlines()]
    assert [rec["frame"] for rec in lines] == list(range(12))
    assert lines[3]["image"] == f"{video}#3" and lines[0]["task"] == "detect"
    cap = cv2.VideoCapture(str(out / "clip.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 12 and int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == 160
    cap.release()
    assert sorted(p.name for p in out.iterdir()) == ["astronaut.json", "astronaut.png", "clip.jsonl", "clip.mp4"]
    assert r.out.index(f"{video}#11:") < r.out.index("astronaut.png:")  # input order


@pytest.mark.parametrize("pool", ["threads", "processes"])
def test_ctrl_c_stops_cleanly_and_keeps_whole_files(assets, tmp_path, pool):
    import os
    import signal
    import subprocess
    import sys
    import time

    video = tmp_path / "long.mp4"
    _write_video(video, assets, frames=3000)
    out = tmp_path / "out"
    shm_before = {n for n in os.listdir("/dev/shm") if n.startswith("psm_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "trtkit", "predict", "--task", "detect", str(asset_model("yolov8n")), str(video),
         "--save-dir", str(out), "--batch", "2", "--workers", "2", "--pool", pool],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    partial = out / ".long.jsonl.partial"
    deadline = time.time() + 120
    while time.time() < deadline and not (partial.exists() and partial.stat().st_size > 2000):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)  # as Ctrl-C in a terminal: to the whole process group, workers included
    _, err = proc.communicate(timeout=120)
    assert {n for n in os.listdir("/dev/shm") if n.startswith("psm_")} == shm_before  # no shared batch buffers left
    listed = subprocess.run(["pgrep", "-g", str(proc.pid), "-a"], capture_output=True, text=True).stdout.splitlines()
    survivors = [line for line in listed if "<defunct>" not in line]  # exited; reaping them is init's job here
    assert not survivors, survivors  # no worker process outlived it
    assert proc.returncode == 130, err
    assert "interrupted after" in err and "is kept" in err and "Traceback" not in err
    assert sorted(os.listdir(out)) == ["long.jsonl", "long.mp4"]  # renamed into place, no temp files left
    lines = [json.loads(line) for line in (out / "long.jsonl").read_text().splitlines()]  # every line whole
    assert 0 < len(lines) < 3000 and [rec["frame"] for rec in lines] == list(range(len(lines)))
    cap = cv2.VideoCapture(str(out / "long.mp4"))
    ok, _ = cap.read()
    assert ok  # a playable video of the frames done so far
    cap.release()


def test_missing_opencv_is_reported_once(assets, tmp_path):
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['cv2'] = None\n"  # as if opencv were not installed
        "from trtkit.cli import main\n"
        f"sys.exit(main(['predict', '--task', 'detect', {str(asset_model('yolov8n'))!r}, {str(assets / 'images')!r}]))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.count("OpenCV") == 1 and "pip install" in r.stderr, r.stderr


def test_stream_flag_reads_what_opencv_opens_and_names_unopenable_streams(cli, assets, tmp_path):
    video = tmp_path / "cam.avi"
    _write_video(video, assets, frames=5)
    r = cli("predict", "--task", "classify", asset_model("efficientnet_lite0"), "--stream", video, "--json")
    assert r.code == 0, r
    assert [rec["image"] for rec in json.loads(r.out)] == [f"{video}#{i}" for i in range(5)]
    bad = cli("predict", "--task", "classify", asset_model("efficientnet_lite0"), "--stream", tmp_path / "nope.sdp")
    assert bad.code == 1 and "cannot open video" in bad.err and "Traceback" not in bad.err, bad


def test_progress_line_shows_count_and_rate():
    from trtkit.cli.predict import _Progress

    class Tty:
        text = ""

        def isatty(self):
            return True

        def write(self, s):
            self.text += s

        def flush(self):
            pass

    out = Tty()
    progress = _Progress(10, out=out)
    for _ in range(10):
        progress.advance()
    progress.done()
    assert "10/10" in out.text and "img/s" in out.text and out.text.endswith("\n")
    quiet = Tty()
    quiet.isatty = lambda: False
    _Progress(100, out=quiet).advance()
    assert quiet.text == ""


def test_graph_preprocess_gives_the_plain_runs_detections(cli, assets, tmp_path):
    """--graph-preprocess host (worker processes, uint8 pixels, normalisation in the model): the very
    detections of the plain run; graph (the letterbox in the model too): the same boxes within 1 px."""
    images = [assets / "images" / n for n in ("astronaut.png", "chelsea.png", "coffee.png")]
    common = ("predict", "--task", "detect", asset_model("yolov8n"), *images, "--json", "--batch", "2", "--workers", "2")
    plain = cli(*common)
    host = cli(*common, "--graph-preprocess", "host", "--pool", "processes")
    graph = cli(*common, "--graph-preprocess", "graph")
    for r in (plain, host, graph):
        assert r.code == 0, r
    assert "--graph-preprocess host: the normalisation and layout run in the model" in host.err
    want = json.loads(plain.out)
    assert sum(len(rec["detections"]) for rec in want) > 0
    assert json.loads(host.out) == want
    for got, ref in zip(json.loads(graph.out), want, strict=True):
        assert [d["label"] for d in got["detections"]] == [d["label"] for d in ref["detections"]]
        for a, b in zip(got["detections"], ref["detections"]):
            np.testing.assert_allclose(a["box"], b["box"], atol=1.0)


def test_graph_preprocess_conflicts_are_clean_errors(cli, assets, tmp_path):
    image = assets / "images" / "coffee.png"
    r = cli("predict", "--task", "classify", asset_model("efficientnet_lite0"), image, "--graph-preprocess", "host")
    assert_clean_error(r, "--graph-preprocess host", "--task detect", "leave it out")
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"not read")
    r = cli("predict", "--task", "detect", plan, image, "--graph-preprocess", "host")
    assert_clean_error(r, "is not one", "bake_normalize")
    r = cli("predict", "--task", "detect", asset_model("yolov8n"), image, "--graph-preprocess", "graph", "--pool", "processes")
    assert_clean_error(r, "--pool threads", "--graph-preprocess host")
