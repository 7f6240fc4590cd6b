"""ORT CUDA backend (IO binding + shared buffer manager) against ORT CPU on every asset model."""

from __future__ import annotations

import numpy as np
import pytest

import trtkit
from trtkit.backends import cuda
from trtkit.backends._device_io import concat_outputs, split_batch
from trtkit.spec import RuntimeConfig
from tests.conftest import asset_model
from tests.gpu._outputs import check_output_recycling

pytestmark = pytest.mark.gpu

# key -> list of input shapes to try (dynamic models get several, incl. alternating shapes)
CASES = {
    "efficientnet_lite0": [(1, 3, 224, 224), (4, 3, 224, 224), (1, 3, 224, 224)],
    "scrfd": [(1, 3, 640, 640)],
    "yolov8n": [(2, 3, 320, 320), (1, 3, 640, 480), (2, 3, 320, 320)],
    "ppocr_det": [(1, 3, 640, 640), (2, 3, 320, 480)],
    "ppocr_rec": [(3, 3, 48, 320), (1, 3, 48, 160)],
    "ppocr_cls": [(4, 3, 48, 192)],
}


def _cuda_ep_or_skip():
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu (CUDA EP) is not installed")


def _close_enough(got: np.ndarray, ref: np.ndarray) -> None:
    assert got.shape == ref.shape and got.dtype == ref.dtype
    scale = max(1.0, float(np.abs(ref).max()))
    np.testing.assert_allclose(got, ref, rtol=1e-2, atol=1e-2 * scale)


@pytest.mark.parametrize("key", list(CASES))
def test_ort_cuda_matches_cpu(key):
    _cuda_ep_or_skip()
    path = asset_model(key)
    rng = np.random.default_rng(0)
    with trtkit.load(path) as cpu, trtkit.load(path, config=RuntimeConfig(device="cuda")) as gpu:
        assert type(gpu).__name__ == "OrtCudaBackend"
        for shape in CASES[key]:
            x = rng.random(shape, dtype=np.float32)
            ref, got = cpu.infer(x), gpu.infer(x)
            assert list(got) == list(ref)
            for name in ref:
                _close_enough(got[name], ref[name])


def test_pipelined_infer_many_and_submit_match_sequential():
    _cuda_ep_or_skip()
    path = asset_model("yolov8n")
    rng = np.random.default_rng(1)
    batches = [rng.random((4, 3, 320, 320), dtype=np.float32) for _ in range(6)]
    with trtkit.load(path, config=RuntimeConfig(device="cuda", contexts=3)) as gpu:
        seq = [gpu.infer(b) for b in batches]
        many = list(gpu.infer_many(batches))
        fut = [gpu.submit(b) for b in batches]
        for a, b, f in zip(seq, many, fut):
            np.testing.assert_array_equal(a["output0"], b["output0"])
            np.testing.assert_array_equal(a["output0"], f.result()["output0"])


def test_submit_into_writes_outputs_that_fit_in_place():
    """submit(into=): a page-locked destination (DMA straight into it) and a pageable one (staged copy) are
    returned as themselves, filled with the outputs infer gives; one of another shape is left alone."""
    _cuda_ep_or_skip()
    rng = np.random.default_rng(2)
    x = rng.random((4, 3, 320, 320), dtype=np.float32)
    with trtkit.load(asset_model("yolov8n"), config=RuntimeConfig(device="cuda", contexts=2)) as gpu:
        want = gpu.infer(x)["output0"]
        pinned = cuda.PinnedBuffer(want.nbytes)
        try:
            for dest in (pinned.view(want.dtype, want.shape), np.empty_like(want)):
                dest[...] = -1
                for _ in range(2):  # the staged pipeline (ORT's run on the compute thread), twice on the same array
                    got = gpu.submit(x, into={"output0": dest}).result()["output0"]
                    assert got is dest
                    np.testing.assert_array_equal(got, want)
            other = np.full((4, 84, 100), -1, np.float32)
            got = gpu.submit(x, into={"output0": other}).result()["output0"]
            assert got is not other and (other == -1).all()
            np.testing.assert_array_equal(got, want)
        finally:
            pinned.close()


def test_numpy_outputs_come_in_page_locked_arrays_reused_once_released():
    """The GPU writes numpy outputs straight into page-locked arrays of the backend's pool, which are
    reused only when no result or view still refers to them (see check_output_recycling)."""
    _cuda_ep_or_skip()
    rng = np.random.default_rng(3)
    batches = [{"images": rng.random((16, 3, 320, 320), dtype=np.float32)} for _ in range(3)]  # 3 MB out: above 1 MB
    with trtkit.load(asset_model("yolov8n")) as cpu:
        want = [cpu.infer(b)["output0"] for b in batches]
    with trtkit.load(asset_model("yolov8n"), config=RuntimeConfig(device="cuda")) as gpu:
        check_output_recycling(gpu, "output0", batches, want, _close_enough)
    with trtkit.load(asset_model("yolov8n"), config=RuntimeConfig(device="cuda", pinned_outputs=False)) as gpu:
        got = gpu.infer(batches[0])["output0"]  # the opt-out: a new pageable array, as before the pool
        _close_enough(got, want[0])
        assert not cuda.is_pinned(got.ctypes.data)


def test_batch_chunking_path_equals_full_batch_on_cpu():
    _cuda_ep_or_skip()
    path = asset_model("efficientnet_lite0")
    x = np.random.default_rng(2).random((8, 3, 224, 224), dtype=np.float32)
    with trtkit.load(path) as cpu, trtkit.load(path, config=RuntimeConfig(device="cuda")) as gpu:
        parts = [gpu.infer(chunk) for chunk in split_batch({"input": x}, 3)]
        assert [p["logits"].shape[0] for p in parts] == [3, 3, 2]
        _close_enough(concat_outputs(parts)["logits"], cpu.infer(x)["logits"])


def test_device_inputs_and_outputs_stay_on_gpu():
    _cuda_ep_or_skip()
    torch = pytest.importorskip("torch")
    path = asset_model("efficientnet_lite0")
    x = torch.rand((2, 3, 224, 224), device="cuda")
    with trtkit.load(path) as cpu, trtkit.load(path, config=RuntimeConfig(device="cuda", outputs_on_device=True)) as gpu:
        out = gpu.infer({"input": x})["logits"]
        assert isinstance(out, cuda.DeviceArray)
        logits = torch.as_tensor(out, device="cuda")
        _close_enough(logits.cpu().numpy(), cpu.infer(x.cpu().numpy())["logits"])
        out.close()
        for _ in range(2):  # a new tensor at a new address each call: the binding must follow it
            y = torch.rand((2, 3, 224, 224), device="cuda")
            again = gpu.infer({"input": y})["logits"]
            _close_enough(torch.as_tensor(again, device="cuda").cpu().numpy(), cpu.infer(y.cpu().numpy())["logits"])
            again.close()


def test_timed_infer_reports_stages():
    _cuda_ep_or_skip()
    path = asset_model("scrfd")
    x = np.random.default_rng(3).random((1, 3, 640, 640), dtype=np.float32)
    with trtkit.load(path, config=RuntimeConfig(device="cuda")) as gpu:
        gpu.infer(x)
        t = gpu.timed_infer(x)
        assert t.h2d_ms > 0 and t.compute_ms > 0 and t.d2h_ms > 0 and t.enqueue_ms > 0
        assert t.latency_ms == pytest.approx(t.h2d_ms + t.compute_ms + t.d2h_ms)
        d = gpu.timed_infer(x, transfers=False)
        assert d.h2d_ms == 0 and d.d2h_ms == 0 and d.compute_ms > 0


def test_ort_cuda_no_leak_over_calls():
    _cuda_ep_or_skip()
    path = asset_model("efficientnet_lite0")
    x = np.random.default_rng(4).random((1, 3, 224, 224), dtype=np.float32)
    with trtkit.load(path, config=RuntimeConfig(device="cuda")) as gpu:
        for _ in range(20):
            gpu.infer(x)
        free_before, _ = cuda.mem_info()
        for _ in range(2000):
            gpu.infer(x)
        free_after, _ = cuda.mem_info()
    assert abs(free_before - free_after) < (8 << 20), (free_before, free_after)


def test_close_right_after_pipelined_calls_is_safe():
    """Regression: closing while ORT's end-of-run host functions were still queued on the compute
    stream aborted the process (cudaFreeHost from a CUDA callback, error 800). YOLOv8n's Concat and
    Split kernels use pinned argument buffers that ORT frees that way."""
    _cuda_ep_or_skip()
    path = asset_model("yolov8n")
    batches = [np.random.default_rng(i).random((2, 3, 320, 320), dtype=np.float32) for i in range(4)]
    for _ in range(4):
        gpu = trtkit.load(path, config=RuntimeConfig(device="cuda", contexts=2))
        futures = [gpu.submit(b) for b in batches]  # still running when close() starts
        gpu.close()
        assert all(f.result()["output0"].shape[0] == 2 for f in futures)
        with pytest.raises(trtkit.errors.ClosedError):
            gpu.infer(batches[0])


def test_stream_in_worker_processes_uploads_shared_page_locked_batches():
    """task.stream of an unsized input on a GPU backend with >= 4 workers: auto picks worker processes; their shared batch
    buffers are page-locked (uploaded without staging); the detections equal predict_batch's."""
    _cuda_ep_or_skip()
    from pathlib import Path

    import trtkit.tasks.stream_workers as stream_workers
    from trtkit.tasks.detection import Detector
    from tests.tasks.test_streaming import _same_detections

    images = sorted(str(p) for p in (Path(asset_model("yolov8n")).parents[1] / "images").iterdir())
    pinned: list[bool] = []
    real_views = stream_workers.SharedBatchRing.views

    def checked_views(slot, count):  # records, per batch, whether the backend gets page-locked inputs and output slots
        views = real_views(slot, count)
        pinned.extend(cuda.is_pinned(v.ctypes.data) for v in views.values())
        return views

    stream_workers.SharedBatchRing.views = staticmethod(checked_views)
    try:
        with Detector.from_path(asset_model("yolov8n"), runtime=RuntimeConfig(device="cuda")) as task:
            streamed = list(task.stream(iter(images * 3), batch_size=4, workers=4))  # unsized: may be long
            assert task.__dict__["_stream_workers"].count == 4  # auto chose worker processes
            expected = task.predict_batch(images * 3, batch_size=4)
    finally:
        stream_workers.SharedBatchRing.views = staticmethod(real_views)
    assert pinned and all(pinned)
    assert len(streamed) == len(expected) and all(_same_detections(a, b) for a, b in zip(streamed, expected))


def test_stream_with_the_normalisation_in_the_model_uploads_uint8_from_worker_processes():
    """GraphPreprocessed.open(resize='host') on ORT-CUDA: worker processes letterbox into page-locked uint8 batches,
    the model normalises on the GPU; the detections equal the CPU path's predict_batch."""
    _cuda_ep_or_skip()
    from pathlib import Path

    from trtkit.tasks.detection import Detector, DetectorConfig
    from trtkit.tasks.graph_preprocess import GraphPreprocessed
    from tests.tasks.test_graph_preprocess import _match

    images = sorted(str(p) for p in (Path(asset_model("yolov8n")).parents[1] / "images").iterdir())
    cuda_rt = RuntimeConfig(device="cuda")
    with Detector.from_path(asset_model("yolov8n"), config=DetectorConfig(input_size=(640, 640)), runtime=cuda_rt) as task, \
            GraphPreprocessed.open(task, runtime=cuda_rt, resize="host") as baked:
        assert baked.backend.inputs[0].dtype == "uint8"
        streamed = list(baked.stream(iter(images * 3), batch_size=4, workers=4, pool="processes"))
        expected = task.predict_batch(images * 3, batch_size=4)
    assert len(streamed) == len(expected) and sum(len(r) for r in expected) > 0
    for a, b in zip(expected, streamed, strict=True):
        _match(a, b)
