"""A real Triton server (the nvidia-pytriton binary) serving a trtkit repository: answers over HTTP and gRPC
equal trtkit's own (`trtkit run` / `trtkit predict` through the API), bad requests get clear errors and the
server keeps serving, and `trtkit serve` stops cleanly on Ctrl-C. One server for the module (~10 s start)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ASSETS, asset_model

httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient is installed by the dev/serve extras")
grpcclient = pytest.importorskip("tritonclient.grpc", reason="tritonclient is installed by the dev/serve extras")
from tritonclient.utils import InferenceServerException  # noqa: E402

import trtkit  # noqa: E402
from trtkit.serve.config import TritonOptions  # noqa: E402
from trtkit.serve.repository import write_repository  # noqa: E402
from trtkit.serve.server import ServerConfig, TritonServer, find_tritonserver  # noqa: E402

IMAGES = {"classify": "coffee.png", "detect": "astronaut.png", "face": "newton.png", "ocr": "imageTextN_rgb.png"}
TASK_MODELS = {"classify": ["efficientnet_lite0"], "detect": ["yolov8n"], "face": ["scrfd"],
               "ocr": ["ppocr_det", "ppocr_rec", "ppocr_cls"]}


def _have_tritonserver() -> str | None:
    try:
        find_tritonserver()
    except trtkit.TrtkitError as exc:
        return str(exc)
    return None


pytestmark = pytest.mark.skipif(_have_tritonserver() is not None, reason=f"no tritonserver: {_have_tritonserver()}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("triton") / "repo"
    python = TritonOptions(backend="python")
    write_repository([asset_model("efficientnet_lite0")], repo, options=TritonOptions(name="eff", backend="python"))
    for task, keys in TASK_MODELS.items():
        write_repository([asset_model(k) for k in keys], repo, task=task,
                         options=TritonOptions(name=task, backend=python.backend))
    lines: list[str] = []
    with TritonServer(repo, config=ServerConfig(http_port=0, grpc_port=0, metrics_port=0), log=lines.append) as srv:
        srv.log_lines = lines
        yield srv
    assert not srv.running


def _clients(server):
    ends = server.endpoints()
    return (httpclient, httpclient.InferenceServerClient(ends["http"].removeprefix("http://"))), \
           (grpcclient, grpcclient.InferenceServerClient(ends["grpc"]))


def _infer(module, client, model, feeds, dtypes):
    inputs = []
    for name, value in feeds.items():
        item = module.InferInput(name, list(value.shape), dtypes[name])
        item.set_data_from_numpy(value)
        inputs.append(item)
    return client.infer(model, inputs)


@pytest.mark.parametrize("protocol", [0, 1], ids=["http", "grpc"])
def test_raw_model_equals_trtkit_run(server, protocol):
    module, client = _clients(server)[protocol]
    x = np.random.default_rng(0).random((2, 3, 224, 224), dtype=np.float32)
    got = _infer(module, client, "eff", {"input": x}, {"input": "FP32"}).as_numpy("logits")
    with trtkit.load(asset_model("efficientnet_lite0")) as backend:
        want = backend.infer({"input": x})["logits"]
    np.testing.assert_array_equal(got, want)


def _expected(task: str):
    image = ASSETS / "images" / IMAGES[task]
    if task == "ocr":
        with trtkit.OcrPipeline.from_paths(*(asset_model(k) for k in TASK_MODELS["ocr"])) as pipeline:
            return pipeline(image).to_json()
    cls = {"classify": trtkit.Classifier, "detect": trtkit.Detector, "face": trtkit.FaceDetector}[task]
    with cls.from_path(asset_model(TASK_MODELS[task][0])) as t:
        return t(image).to_json()


@pytest.mark.parametrize("task", list(TASK_MODELS))
def test_task_pipeline_equals_trtkit_predict(server, task):
    want = _expected(task)
    data = np.frombuffer((ASSETS / "images" / IMAGES[task]).read_bytes(), np.uint8)
    for module, client in _clients(server):
        result = _infer(module, client, task, {"image": data}, {"image": "UINT8"})
        assert json.loads(result.as_numpy("json").tobytes()) == want
        scores = result.as_numpy("scores")
        assert scores.dtype == np.float32 and scores.shape[0] == len(next(v for k, v in want.items() if isinstance(v, list)))
    assert want != {} and any(want.values())  # the chosen images give results, so equality means something


def test_detect_tensors_match_the_json(server):
    (module, client), _ = _clients(server)
    data = np.frombuffer((ASSETS / "images" / IMAGES["detect"]).read_bytes(), np.uint8)
    result = _infer(module, client, "detect", {"image": data}, {"image": "UINT8"})
    doc = json.loads(result.as_numpy("json").tobytes())
    boxes, ids = result.as_numpy("boxes"), result.as_numpy("class_ids")
    assert boxes.shape == (len(doc["detections"]), 4) and ids.dtype == np.int64
    np.testing.assert_allclose(boxes, [d["box"] for d in doc["detections"]], atol=0.01)


@pytest.mark.parametrize("protocol", [0, 1], ids=["http", "grpc"])
def test_bad_requests_are_answered_and_the_server_keeps_serving(server, protocol):
    module, client = _clients(server)[protocol]
    x = np.zeros((1, 3, 224, 224), np.float32)
    cases = [
        ({"input": x.astype(np.float64)}, {"input": "FP64"}, "eff", "FP64"),  # wrong dtype
        ({"input": np.zeros((1, 3, 200, 224), np.float32)}, {"input": "FP32"}, "eff", "[1,3,200,224]"),  # wrong shape
        ({"pixels": x}, {"pixels": "FP32"}, "eff", "pixels"),  # wrong name
        ({"image": np.frombuffer(b"not an image at all", np.uint8)}, {"image": "UINT8"}, "detect",
         "cannot be decoded as an image"),
        ({"image": np.zeros(0, np.uint8)}, {"image": "UINT8"}, "classify", "empty"),
        # Triton's convention for encoded images is BYTES [1]; trtkit's ensembles take UINT8 [N] (BYTES cannot
        # cross the Python-backend stub under NumPy 2). Triton refuses it before any stub sees it.
        ({"image": np.array([b"\x89PNG..."], dtype=object)}, {"image": "BYTES"}, "classify",
         "data-type is 'BYTES', but model 'classify' expects 'UINT8'"),
    ]
    for feeds, dtypes, model, needle in cases:
        with pytest.raises(InferenceServerException) as err:
            _infer(module, client, model, feeds, dtypes)
        assert needle.replace(" ", "") in str(err.value).replace(" ", ""), str(err.value)
    assert client.is_server_live() and all(client.is_model_ready(m) for m in ("eff", "detect", "classify", "classify_pre"))
    assert _infer(module, client, "eff", {"input": x}, {"input": "FP32"}).as_numpy("logits").shape == (1, 1000)


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(server):
    (module, client), _ = _clients(server)
    url = server.endpoints()["http"].removeprefix("http://")
    rng = np.random.default_rng(1)
    xs = [rng.random((1, 3, 224, 224), dtype=np.float32) for _ in range(12)]
    with trtkit.load(asset_model("efficientnet_lite0")) as backend:
        want = [backend.infer({"input": x})["logits"] for x in xs]

    def one(x):
        c = httpclient.InferenceServerClient(url)
        return _infer(httpclient, c, "eff", {"input": x}, {"input": "FP32"}).as_numpy("logits")

    before = client.get_inference_statistics("eff")["model_stats"][0]
    with ThreadPoolExecutor(12) as pool:
        got = list(pool.map(one, xs))
    after = client.get_inference_statistics("eff")["model_stats"][0]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)  # a stacked batch may round differently
    assert after["inference_count"] - before["inference_count"] == 12
    assert after["execution_count"] - before["execution_count"] < 12  # the dynamic batcher grouped requests


def _shm_regions() -> set[str]:
    return {n for n in os.listdir("/dev/shm") if n.startswith("triton_python_backend_shm_region_")}


def test_cli_serve_starts_prints_endpoints_and_stops_on_ctrl_c(tmp_path):
    regions_before = _shm_regions()
    proc = subprocess.Popen(
        [sys.executable, "-m", "trtkit", "serve", str(asset_model("efficientnet_lite0")), "--http-port", "0",
         "--grpc-port", "0", "--metrics-port", "0", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ},
    )
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while not any("Ctrl-C stops the server" in line for line in out) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    try:
        assert any("Triton is ready" in line for line in out), (out, proc.poll())
        http = next(line.split()[1] for line in out if line.strip().startswith("HTTP"))
        pid = int(next(line for line in out if "Triton is ready" in line).split("pid ")[1].split(")")[0])
        client = httpclient.InferenceServerClient(http.removeprefix("http://"))  # left open: a keep-alive connection
        assert client.is_model_ready("efficientnet_lite0")
        assert _shm_regions() - regions_before  # the Python-backend stub's region exists while it serves
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
    assert code == 0, proc.stderr.read()
    assert "stopped Triton" in proc.stderr.read()
    assert not Path(f"/proc/{pid}").exists()  # the tritonserver process is gone
    # The open connection made Triton's exit timeout run out before it unloaded the model: its stub's
    # shared-memory region is removed by trtkit, not left in /dev/shm.
    assert _shm_regions() == regions_before

