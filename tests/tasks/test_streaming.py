"""task.stream / stream_predictions on the real models: same results as predict_batch, in input
order, per-image errors in place, lazy and bounded input reading, clean early stop."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from trtkit.errors import BackendUnavailable, TaskError
from trtkit.tasks.classification import Classifier
from trtkit.tasks.detection import Detector
from trtkit.tasks.ocr.pipeline import OcrPipeline
from trtkit.tasks.streaming import BadInput, Frame, ImageError, StreamOptions, stream_predictions

from tests.conftest import asset_model

pytest.importorskip("cv2")


@pytest.fixture(scope="module")
def detector(assets):
    with Detector.from_path(asset_model("yolov8n")) as task:
        yield task


@pytest.fixture(scope="module")
def images(assets):
    return sorted(str(p) for p in (assets / "images").iterdir())


def _same_detections(a, b):
    return (
        type(a) is type(b)
        and a.labels == b.labels
        and np.allclose(a.boxes, b.boxes, atol=1e-3)
        and np.allclose(a.scores, b.scores, atol=1e-4)
    )


def _stream_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("trtkit-stream")]


def test_stream_matches_predict_batch_in_order_with_errors_in_place(detector, images, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    items = [images[0], str(tmp_path / "missing.png"), images[1], np.zeros((0, 4, 3), np.uint8), str(broken), *images[2:]]
    results = list(detector.stream(items, batch_size=3, workers=2))
    assert len(results) == len(items)
    errors = {i: r for i, r in enumerate(results) if isinstance(r, ImageError)}
    assert sorted(errors) == [1, 3, 4]
    assert "does not exist" in errors[1].message and errors[1].source.endswith("missing.png")
    assert "zero area" in errors[3].message and errors[3].source == "<array 3>"
    assert "cannot decode" in errors[4].message
    good = [r for r in results if not isinstance(r, ImageError)]
    expected = detector.predict_batch(images, batch_size=3)
    assert len(good) == len(expected) and all(_same_detections(a, b) for a, b in zip(good, expected))
    assert not _stream_threads()


def test_stream_of_arrays_and_frames_keeps_sources_and_images(detector, images):
    from trtkit.tasks._image import read_image

    rgb = [read_image(p) for p in images[:4]]
    items = [rgb[0], Frame("clip.mp4#0", rgb[1]), BadInput("nothing*.jpg", "pattern matches no files"), rgb[2], rgb[3]]
    out = list(stream_predictions(detector, items, options=StreamOptions(batch_size=2, workers=2, keep_images=True)))
    assert [p.index for p in out] == list(range(5))
    assert [p.source for p in out] == ["<array 0>", "clip.mp4#0", "nothing*.jpg", "<array 3>", "<array 4>"]
    assert out[2].failed and out[2].result.message == "pattern matches no files" and out[2].image is None
    assert out[1].image is rgb[1] and not out[1].failed
    assert _same_detections(out[1].result, detector(rgb[1]))


def test_classifier_stream_equals_predict_batch(assets, images):
    with Classifier.from_path(asset_model("efficientnet_lite0")) as task:
        streamed = list(task.stream(images * 2, batch_size=4, workers=3))
        expected = task.predict_batch(images * 2, batch_size=4)
    assert [r.class_ids for r in streamed] == [r.class_ids for r in expected]
    assert np.allclose([r.scores for r in streamed], [r.scores for r in expected], atol=1e-5)


def test_ocr_stream_runs_whole_images_concurrently_in_order(assets):
    text = str(assets / "images" / "imageTextN_rgb.png")
    with OcrPipeline.from_paths(asset_model("ppocr_det"), asset_model("ppocr_rec")) as ocr:
        expected = ocr(text)
        results = list(ocr.stream([text, "/no/such.png", text], workers=2))
    assert [type(r).__name__ for r in results] == ["OcrResult", "ImageError", "OcrResult"]
    assert results[0].text == results[2].text == expected.text and expected.text


@pytest.mark.parametrize("pool", ["threads", "processes"])
def test_input_is_read_lazily_and_memory_is_bounded(detector, images, pool):
    from trtkit.tasks._image import read_image

    frame = read_image(images[0])
    before = _shm_blocks()
    pulled = 0

    def endless():
        nonlocal pulled
        while True:
            pulled += 1
            yield frame

    options = StreamOptions(batch_size=2, workers=2, depth=2, pool=pool)
    predictions = stream_predictions(detector, endless(), options=options)
    seen = [next(predictions) for _ in range(5)]
    assert [p.index for p in seen] == list(range(5))
    predictions.close()  # stops every stage; the endless input is not drained
    # what may be read ahead: the prepared window (threads) or the batch slots (processes: depth + 2 batches),
    # the batches in flight and the finished results
    ahead = max(2 * 2, 2 * 3) + 2 * 2 * 2 + max(2 * 2, 2 * 2) + 4 if pool == "threads" else 2 * (2 + 2) + 2 * 2 * 2
    assert pulled <= 5 + ahead, pulled
    assert _shm_blocks() == before and not _stream_threads()


def test_a_missing_dependency_stops_the_stream_once(detector, images, monkeypatch):
    import trtkit.tasks._image as image_module

    def no_cv2():
        raise BackendUnavailable("OpenCV is required for image tasks but cannot be imported")

    monkeypatch.setattr(image_module, "_cv2", no_cv2)  # as if opencv were not installed
    with pytest.raises(BackendUnavailable, match="OpenCV"):
        list(detector.stream(images, batch_size=2, workers=2))
    assert not _stream_threads()


@pytest.mark.parametrize("pool", ["threads", "processes"])
def test_an_error_in_the_input_iterable_comes_after_the_results_before_it(detector, images, pool):
    def failing():
        yield images[0]
        yield images[1]
        raise RuntimeError("the source broke")

    out = []
    with pytest.raises(RuntimeError, match="the source broke"):
        for r in detector.stream(failing(), batch_size=8, workers=2, pool=pool):
            out.append(r)
    assert [type(r).__name__ for r in out] == ["Detections", "Detections"]
    assert not _stream_threads()


def test_options_are_checked():
    with pytest.raises(TaskError, match="batch_size") as err:
        StreamOptions(batch_size=0)
    assert "--batch" in err.value.render("cli")
    with pytest.raises(TaskError, match="workers") as err:
        StreamOptions(workers=0)
    assert "--workers" in err.value.render("cli")


# ---------------------------------------------------------------- worker processes (pool="processes")

def _shm_blocks() -> set[str]:
    import os

    return {n for n in os.listdir("/dev/shm") if n.startswith("psm_")}  # multiprocessing.shared_memory's names


def test_processes_give_the_same_results_in_order_with_errors_in_place(detector, images, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    before = _shm_blocks()
    items = [images[0], str(tmp_path / "missing.png"), images[1], np.zeros((0, 4, 3), np.uint8), str(broken), *images[2:]]
    options = StreamOptions(batch_size=3, workers=2, pool="processes")
    out = list(stream_predictions(detector, items, options=options))
    assert [p.index for p in out] == list(range(len(items)))
    assert [i for i, p in enumerate(out) if p.failed] == [1, 3, 4]
    assert "does not exist" in out[1].result.message and "zero area" in out[3].result.message
    assert "cannot decode" in out[4].result.message
    good = [p.result for p in out if not p.failed]
    expected = detector.predict_batch(images, batch_size=3)
    assert len(good) == len(expected) and all(_same_detections(a, b) for a, b in zip(good, expected))
    assert detector.__dict__["_stream_workers"].count == 2  # it really ran in worker processes
    assert _shm_blocks() == before  # the batch buffers are gone
    assert not _stream_threads()


def test_processes_carry_arrays_frames_and_kept_images(detector, images):
    from trtkit.tasks._image import read_image

    rgb = [read_image(p) for p in images[:4]]
    items = [rgb[0], Frame("clip.mp4#0", rgb[1]), BadInput("nothing*.jpg", "pattern matches no files"), rgb[2], rgb[3]]
    options = StreamOptions(batch_size=2, workers=2, keep_images=True, pool="processes")
    out = list(stream_predictions(detector, items, options=options))
    assert [p.source for p in out] == ["<array 0>", "clip.mp4#0", "nothing*.jpg", "<array 3>", "<array 4>"]
    assert out[2].failed and out[2].result.message == "pattern matches no files" and out[2].image is None
    assert np.array_equal(out[1].image, rgb[1]) and _same_detections(out[1].result, detector(rgb[1]))


def test_processes_classifier_equals_predict_batch(assets, images):
    with Classifier.from_path(asset_model("efficientnet_lite0")) as task:
        streamed = list(task.stream(images * 2, batch_size=4, workers=2))  # auto on a CPU backend: threads
        assert "_stream_workers" not in task.__dict__
        options = StreamOptions(batch_size=4, workers=2, pool="processes")
        in_processes = [p.result for p in stream_predictions(task, images * 2, options=options)]
        workers = task.__dict__["_stream_workers"]
    assert [r.class_ids for r in in_processes] == [r.class_ids for r in streamed]
    assert np.allclose([r.scores for r in in_processes], [r.scores for r in streamed], atol=1e-5)
    assert workers._executor._shutdown_thread  # task.close() stopped its worker processes


def test_processes_are_refused_clearly_where_they_cannot_run(assets, detector, images, monkeypatch):
    text = str(assets / "images" / "imageTextN_rgb.png")
    with OcrPipeline.from_paths(asset_model("ppocr_det"), asset_model("ppocr_rec")) as ocr:
        with pytest.raises(TaskError, match=r"pool='processes' \(--pool processes\) cannot run here: .*OCR.*--pool threads"):
            list(stream_predictions(ocr, [text], options=StreamOptions(pool="processes")))
    import trtkit.tasks.streaming as streaming

    monkeypatch.setattr(streaming, "shm_free_bytes", lambda: 64 * 2**20)  # as in a Docker container without --shm-size
    with pytest.raises(TaskError, match=r"need \d+ MiB of /dev/shm and 64 MiB are free \(Docker: --shm-size\)"):
        list(stream_predictions(detector, images, options=StreamOptions(batch_size=32, pool="processes")))
    with pytest.raises(TaskError, match=r"stream pool must be one of auto, threads, processes, got 'fork'"):
        StreamOptions(pool="fork")


def _shm_used() -> int:
    import os

    st = os.statvfs("/dev/shm")
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def test_processes_hold_nothing_before_the_first_result_or_after_the_last(detector, images):
    before, used = _shm_blocks(), _shm_used()
    never = detector.stream(images, batch_size=2, workers=2, pool="processes")
    assert _shm_blocks() == before and not _stream_threads()  # nothing is set up until it is iterated
    del never
    assert len(list(detector.stream(images * 2, batch_size=4, workers=2, pool="processes"))) == 2 * len(images)
    # the names are gone, and the idle workers closed what they had opened: the memory is back
    assert _shm_blocks() == before and abs(_shm_used() - used) < 2**20


def test_processes_follow_a_task_changed_between_streams(assets, images):
    with Detector.from_path(asset_model("yolov8n")) as task:
        options = StreamOptions(batch_size=4, workers=2, pool="processes")
        first = [p.result for p in stream_predictions(task, images, options=options)]
        workers = task.__dict__["_stream_workers"]
        task.conf = 0.6  # the workers ran the stages with 0.25
        second = [p.result for p in stream_predictions(task, images, options=options)]
        assert task.__dict__["_stream_workers"] is workers  # the same processes, not started again
        expected = task.predict_batch(images, batch_size=4)
    assert all(_same_detections(a, b) for a, b in zip(second, expected))
    assert sum(len(r.scores) for r in first) > sum(len(r.scores) for r in second)


def test_two_streams_with_different_worker_counts_run_side_by_side(detector, images):
    a = stream_predictions(detector, images, options=StreamOptions(batch_size=2, workers=1, pool="processes"))
    b = stream_predictions(detector, images, options=StreamOptions(batch_size=2, workers=2, pool="processes"))
    pairs = list(zip(a, b))
    assert len(pairs) == len(images)
    assert all(_same_detections(x.result, y.result) for x, y in pairs)


def test_auto_on_a_cpu_backend_never_probes_the_task(assets, images):
    class Picky(Classifier):  # refuses the small images a probe would use
        def preprocess(self, image):
            if min(image.shape[:2]) < 200:
                raise TaskError(f"image {image.shape[1]}x{image.shape[0]} is too small for this model")
            return super().preprocess(image)

    big = [p for p in images if min(__import__("cv2").imread(p).shape[:2]) >= 200]
    with Picky.from_path(asset_model("efficientnet_lite0")) as task:
        assert len(list(task.stream(iter(big), batch_size=2, workers=2))) == len(big)


def test_a_full_dev_shm_is_a_clear_error_not_a_crash(monkeypatch):
    import errno
    import os

    import trtkit.tasks.stream_workers as stream_workers

    def full(fd, offset, length):  # what tmpfs answers when /dev/shm cannot hold the block
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    before = _shm_blocks()
    monkeypatch.setattr(stream_workers.os, "posix_fallocate", full)
    with pytest.raises(TaskError, match=r"cannot reserve 1 MiB of shared memory .*No space left on device.*--shm-size.*--pool threads"):
        stream_workers.create_block(2**20)
    assert _shm_blocks() == before  # the block was removed


def test_a_script_streams_in_processes_without_running_its_top_level_again(assets, images, tmp_path):
    import subprocess
    import sys

    script = tmp_path / "run.py"
    script.write_text(  # no `if __name__ == "__main__":` guard, on purpose
        "from trtkit.tasks.detection import Detector\n"
        "print('top level ran', flush=True)\n"
        f"task = Detector.from_path({str(asset_model('yolov8n'))!r})\n"
        f"n = sum(1 for _ in task.stream(iter({images[:3]!r}), batch_size=2, workers=2, pool='processes'))\n"
        "print('streamed', n, 'in', len(task.__dict__['_stream_workers']._executor._processes), 'processes')\n"
    )
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("top level ran") == 1 and "streamed 3 in 2 processes" in r.stdout, r.stdout


def test_a_task_class_from_the_main_script_is_refused_or_streams_on_threads(assets, images, tmp_path):
    import subprocess
    import sys

    for pool, ok in (("processes", False), ("threads", True)):
        script = tmp_path / "run.py"
        script.write_text(
            "from trtkit.tasks.detection import Detector\n"
            "class Mine(Detector):\n    pass\n"
            "if __name__ == '__main__':\n"
            f"    task = Mine.from_path({str(asset_model('yolov8n'))!r})\n"
            f"    print('streamed', sum(1 for _ in task.stream(iter({images[:3]!r}), batch_size=2, workers=2, pool={pool!r})))\n"
        )
        r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
        if ok:
            assert r.returncode == 0 and "streamed 3" in r.stdout, r.stderr
        else:
            assert r.returncode == 1 and "uses Mine, defined in the main script or a notebook" in r.stderr, r.stderr
            assert "--pool threads" in r.stderr


def test_a_stream_of_a_task_closed_before_its_first_result_starts_nothing(assets, images):
    task = Detector.from_path(asset_model("yolov8n"))
    predictions = task.stream(images, batch_size=2, workers=2, pool="processes")
    task.close()
    with pytest.raises(TaskError, match="used after close"):
        next(predictions)
    assert "_stream_workers" not in task.__dict__ and not _stream_threads()


class _BadBox(Exception):
    """An exception pickle cannot rebuild (a keyword-only argument)."""

    def __init__(self, message, *, index):
        super().__init__(message)
        self.index = index


class _FailsUnpicklably(Detector):
    def postprocess(self, outputs, meta):
        if meta.width == 120:
            raise _BadBox("bad box on the 120 px image", index=2)
        return super().postprocess(outputs, meta)


def test_an_exception_pickle_cannot_rebuild_still_arrives_and_keeps_the_pool(assets):
    frames = [np.full((96, w, 3), 100, np.uint8) for w in (100, 110, 120, 130)]
    with _FailsUnpicklably.from_path(asset_model("yolov8n")) as task:
        options = StreamOptions(batch_size=4, workers=2, pool="processes")
        with pytest.raises(TaskError, match=r"_BadBox: bad box on the 120 px image \(raised in a stream worker process\)") as info:
            list(stream_predictions(task, frames, options=options))
        assert "Traceback" in str(info.value.__cause__)  # the worker's own traceback comes along
        assert not task.__dict__["_stream_workers"].broken
        assert len(list(stream_predictions(task, frames[:2], options=options))) == 2


class _FailsAt120(Detector):
    """Postprocess fails for the image 120 px wide (module level: worker processes unpickle it)."""

    def postprocess(self, outputs, meta):
        if meta.width == 120:
            raise ValueError("postprocess broke on the 120 px image")
        return super().postprocess(outputs, meta)


@pytest.mark.parametrize("pool", ["threads", "processes"])
def test_a_postprocess_failure_stops_the_stream_at_that_image(assets, pool):
    frames = [np.full((96, w, 3), 100, np.uint8) for w in (100, 110, 120, 130)]
    with _FailsAt120.from_path(asset_model("yolov8n")) as task:
        got = []
        with pytest.raises(ValueError, match="postprocess broke on the 120 px image"):
            for p in stream_predictions(task, frames, options=StreamOptions(batch_size=4, workers=2, pool=pool)):
                got.append(p.index)
    assert got == [0, 1]  # the results before it, in order


def test_a_task_class_workers_cannot_import_is_refused_clearly(assets, images):
    class Local(Detector):  # defined in a function: pickle cannot name it for another process
        pass

    with Local.from_path(asset_model("yolov8n")) as task:
        with pytest.raises(TaskError, match=r"cannot be sent to worker processes .*define its class at a module's top level.*--pool threads"):
            list(stream_predictions(task, images, options=StreamOptions(batch_size=2, workers=2, pool="processes")))
        assert len(list(task.stream(iter(images), batch_size=2, workers=2))) == len(images)  # auto: threads


def test_outputs_written_into_a_shared_slot_are_detached_before_the_slot_is_reused():
    """When a batch written into a shared output slot is postprocessed by threads instead, its outputs are copied
    out first: a result keeping a view of its outputs must not change when the slot takes the next batch."""
    from concurrent.futures import Future

    from trtkit.tasks.streaming import _Pending

    slot = {"out": np.arange(12, dtype=np.float32).reshape(3, 4), "aux": np.zeros((3, 2), np.float32)}
    done: Future = Future()
    fresh = np.ones((3, 5), np.float32)
    done.set_result({"out": slot["out"], "other": fresh})  # "out" in the slot (a GPU backend's into=), "other" not
    pending = _Pending([done], 3, None, lambda outs, n: [{k: v[i : i + 1] for k, v in outs.items()} for i in range(n)])
    pending.detach(slot)
    per_image = pending.result()
    slot["out"][...] = -1  # the next batch
    assert per_image[1]["out"].tolist() == [[4.0, 5.0, 6.0, 7.0]]
    assert pending.raw()[0]["other"] is fresh  # outputs outside the slot are not copied
