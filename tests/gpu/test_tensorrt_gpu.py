"""trtkit's TensorRT path on a real GPU with real (full) TensorRT: build, run, compare, runtime features, commands.

Run on the device machine through the kit in ../shared/trt-h200 (TensorRT 8.5.3 on an H200): see tests/README.md,
"GPU suite on real TensorRT", and `python tests/gpu/device_plan.py` for the exact calls. Engines are built once
per session into $TRTKIT_GPU_ENGINES (or a temp dir) and reused by benchmarks/trt_vs_ort.py in the same warm machine.
"""

from __future__ import annotations

import gc
import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import asset_model
from tests.gpu._outputs import check_output_recycling

pytestmark = pytest.mark.gpu
trt = pytest.importorskip("tensorrt", reason="full TensorRT is not installed (see tests/README.md: GPU suite on real TensorRT)")

import trtkit  # noqa: E402
from trtkit import BuildConfig, RuntimeConfig, ShapeProfile  # noqa: E402
from trtkit.engine.build import build  # noqa: E402
from trtkit.engine.flavor import trt_flavor  # noqa: E402
from trtkit.errors import ClosedError, EngineError  # noqa: E402

FLAVOR = trt_flavor("tensorrt")
# The kit's cuDNN/cuBLAS are stubs, so those tactic sources must be off there; turning them off is harmless
# elsewhere (10.x deprecates them, 11.x has none: then nothing is passed).
# On a full TensorRT install, TRTKIT_GPU_TACTICS=default leaves the tactic sources to TensorRT.
KIT_TACTICS = "-CUBLAS,-CUBLAS_LT,-CUDNN" if {"CUBLAS", "CUBLAS_LT", "CUDNN"} <= set(FLAVOR.tactic_sources) else None
if os.environ.get("TRTKIT_GPU_TACTICS") == "default":
    KIT_TACTICS = None
# Without cuBLAS-LT, TensorRT 8.x's Myelin has no implementation for PP-OCRv4 rec's attention MatMuls: on the H200 with the
# kit, TensorRT 8.5.3.1 failed after 789 s with "Could not find any implementation for node {ForeignNode[linear_77.w_0 ...
# p2o.Transpose.7]}", right after "cuBLASLt error 1 querying major version" (2026-11-30). The kit's cuBLAS is a stub, so
# there the rec engine cannot be built; its tests skip, saying so.
REC_NEEDS_CUBLAS = KIT_TACTICS is not None and int(FLAVOR.version.split(".")[0]) < 9
CUDA = RuntimeConfig(device="cuda")
TOL = 1e-4  # FP32 with --noTF32 against ONNX Runtime FP32


def build_engine(src: Path | str, name: str, **kw) -> Path:
    """Build (or reuse, via trtkit's own cache) ``name`` in the shared engine folder."""
    folder = Path(os.environ.get("TRTKIT_GPU_ENGINES", "/tmp/trtkit-gpu-engines"))
    folder.mkdir(parents=True, exist_ok=True)
    kw.setdefault("tf32", False)
    out = folder / f"{name}.plan"
    build(src, out, config=BuildConfig(backend="tensorrt", tactic_sources=KIT_TACTICS, **kw))
    return out


def _profile(**ranges) -> ShapeProfile:
    return ShapeProfile.from_shapes(min={k: v[0] for k, v in ranges.items()}, opt={k: v[1] for k, v in ranges.items()},
                                    max={k: v[2] for k, v in ranges.items()})


# Every asset model, FP32 --noTF32, with the shapes its profile covers and the shapes compared.
MODELS = {
    "scrfd": (None, {"input.1": (1, 3, 640, 640)}),
    "efficientnet_lite0": (_profile(input=((1, 3, 224, 224), (8, 3, 224, 224), (32, 3, 224, 224))), {"input": (8, 3, 224, 224)}),
    "yolov8n": (_profile(images=((1, 3, 320, 320), (4, 3, 320, 320), (8, 3, 320, 320))), {"images": (4, 3, 320, 320)}),
    # OCR det: max 2016, since the OCR pipeline scales the short side to 736 and caps the long side at 2000 (multiples of
    # 32; max 1280 refused the text image of the OCR test). TensorRT 8.5 on the H200 built it in 400 s (opt 736x736).
    "ppocr_det": (_profile(x=((1, 3, 32, 32), (1, 3, 736, 736), (1, 3, 2016, 2016))), {"x": (1, 3, 480, 640)}),
    "ppocr_rec": (_profile(x=((1, 3, 48, 32), (1, 3, 48, 320), (8, 3, 48, 1280))), {"x": (6, 3, 48, 320)}),
    "ppocr_cls": (_profile(x=((1, 3, 48, 192), (1, 3, 48, 192), (16, 3, 48, 192))), {"x": (6, 3, 48, 192)}),
}


class _Engines(dict):
    """FP32 --noTF32 engines of the asset models, built on first use (8.5 on the H200 takes 15 s to 6 min each)."""

    def __missing__(self, name: str) -> Path:
        if name == "ppocr_rec" and REC_NEEDS_CUBLAS:
            pytest.skip(f"PP-OCRv4 rec needs the cuBLAS-LT tactic source on TensorRT {FLAVOR.version}, which is off here "
                        "(the kit's cuBLAS is a stub); on a full install set TRTKIT_GPU_TACTICS=default")
        profile = MODELS[name][0]
        src = _cls_source() if name == "ppocr_cls" else asset_model(name)
        self[name] = build_engine(src, f"{name}-fp32", profiles=(profile,) if profile else ())
        return self[name]


def _cls_source() -> Path:
    """PP-OCR's cls model names H and W both '?': trtkit build refuses 48 != 192 for one name (TensorRT 10+
    requires equal sizes for equal dim names). trtkit reshape fixes H/W to 48x192, then frees the batch again."""
    from trtkit.graph.reshape import ReshapeConfig, reshape

    folder = Path(os.environ.get("TRTKIT_GPU_ENGINES", "/tmp/trtkit-gpu-engines"))
    folder.mkdir(parents=True, exist_ok=True)
    fixed, out = folder / "ppocr_cls_48x192.onnx", folder / "ppocr_cls_dynbatch.onnx"
    if not out.exists():
        reshape(asset_model("ppocr_cls"), fixed, config=ReshapeConfig(shapes={"x": (1, 3, 48, 192)}))
        reshape(fixed, out, config=ReshapeConfig(dynamic_batch=True))
    return out


@pytest.fixture(scope="session")
def fp32_engines() -> dict[str, Path]:
    return _Engines()


def _random(specs, shapes, seed=0):
    rng = np.random.default_rng(seed)
    return {n: rng.random(shape, dtype=np.float32) for n, shape in shapes.items()}


def _ort(model) -> trtkit.Backend:
    return trtkit.load(model, backend="onnxruntime")


def _assert_close(got: dict, want: dict, *, tol: float) -> None:
    for name, ref in want.items():
        out = np.asarray(got[name])
        assert out.shape == ref.shape, (name, out.shape, ref.shape)
        err = np.abs(out.astype(np.float64) - ref)
        bound = tol + tol * np.abs(ref)
        assert np.all(err <= bound), f"{name}: max abs err {err.max():.3g}, {int((err > bound).sum())} elements out of tol"


# ---------------------------------------------------------------- build + compare

@pytest.mark.parametrize("name", list(MODELS))
def test_fp32_no_tf32_matches_onnxruntime(fp32_engines, name):
    engine = fp32_engines[name]
    side = json.loads(Path(str(engine) + ".json").read_text())
    assert side["flags"]["tf32"] is False and side["backend_version"] == FLAVOR.version
    shapes = MODELS[name][1]
    feeds = _random(None, shapes)
    with trtkit.load(engine, config=CUDA) as e, _ort(asset_model(name)) as o:
        _assert_close(e.infer(feeds), o.infer(feeds), tol=TOL)


def test_static_engine_has_no_profiles_and_runs(fp32_engines):
    with trtkit.load(fp32_engines["scrfd"], config=CUDA) as e:
        assert all(not s.is_dynamic for s in e.inputs)
        assert len(e.infer(_random(None, {"input.1": (1, 3, 640, 640)}))) == 9


def test_fp16_engine(tmp_path):
    engine = build_engine(asset_model("efficientnet_lite0"), "efficientnet_lite0-fp16", precision="fp16",
                          profiles=(MODELS["efficientnet_lite0"][0],))
    feeds = _random(None, {"input": (8, 3, 224, 224)}, seed=3)
    with trtkit.load(engine, config=CUDA) as e, _ort(asset_model("efficientnet_lite0")) as o:
        got, want = e.infer(feeds)["logits"], o.infer(feeds)["logits"]
    assert np.abs(got - want).max() < 0.1 and (got.argmax(1) == want.argmax(1)).mean() >= 0.75


def test_int8_from_qdq_model(tmp_path):
    from trtkit.graph.quantize import QuantizeConfig, quantize

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "calib.npz", input=rng.random((16, 3, 224, 224), dtype=np.float32))
    qdq = tmp_path / "eff.qdq.onnx"
    quantize(asset_model("efficientnet_lite0"), qdq, config=QuantizeConfig(calib=str(tmp_path / "calib.npz"), max_samples=16))
    engine = build_engine(qdq, "efficientnet_lite0-int8", precision="int8", profiles=(MODELS["efficientnet_lite0"][0],))
    assert json.loads(Path(str(engine) + ".json").read_text())["precision"] == "int8 (explicit Q/DQ)"
    feeds = _random(None, {"input": (4, 3, 224, 224)}, seed=5)
    with trtkit.load(engine, config=CUDA) as e, _ort(qdq) as o:
        got, want = e.infer(feeds)["logits"].ravel(), o.infer(feeds)["logits"].ravel()
    assert np.corrcoef(got, want)[0, 1] > 0.98  # same quantized graph, different INT8 kernels


def test_two_profiles_and_profile_switching(tmp_path):
    small = _profile(input=((1, 3, 224, 224), (2, 3, 224, 224), (4, 3, 224, 224)))
    big = _profile(input=((8, 3, 224, 224), (16, 3, 224, 224), (16, 3, 224, 224)))
    engine = build_engine(asset_model("efficientnet_lite0"), "efficientnet_lite0-2profiles", profiles=(small, big))
    with trtkit.load(engine, config=CUDA) as e, _ort(asset_model("efficientnet_lite0")) as o:
        assert len(e.profiles) == 2
        for batch in (1, 12, 3, 16):  # profiles 0, 1, 0, 1 on one context
            feeds = _random(None, {"input": (batch, 3, 224, 224)}, seed=batch)
            _assert_close(e.infer(feeds), o.infer(feeds), tol=TOL)


def test_builder_flags_on_this_version(tmp_path, cli):
    out = tmp_path / "s.plan"
    args = ["build", asset_model("scrfd"), "-o", out, "--backend", "tensorrt", "--noTF32", "--workspace=256",
            "--skipInference", "--dumpLayerInfo", "--exportLayerInfo", tmp_path / "layers.json", "--stronglyTyped"]
    res = cli(*args, *([f"--tacticSources={KIT_TACTICS}"] if KIT_TACTICS else []))
    assert res.code == 0, res
    assert "note: --stronglyTyped" in res.err
    assert json.loads((tmp_path / "layers.json").read_text())
    flags = json.loads(Path(str(out) + ".json").read_text())["flags"]
    assert flags["tf32"] is False and flags["workspace_bytes"] == 256 << 20
    if KIT_TACTICS:
        assert not {"CUBLAS", "CUBLAS_LT", "CUDNN"} & set(flags["tactic_sources"])
    vc = cli("build", asset_model("scrfd"), "-o", tmp_path / "vc.plan", "--backend", "tensorrt", "--versionCompatible",
             *([f"--tacticSources={KIT_TACTICS}"] if KIT_TACTICS else []))
    if FLAVOR.has_version_compatibility:
        assert vc.code == 0 and json.loads(Path(str(tmp_path / "vc.plan") + ".json").read_text())["flags"]["version_compatible"]
    else:
        assert vc.code == 1 and "cannot build version-compatible engines" in vc.err, vc
    io = cli("build", asset_model("scrfd"), "-o", tmp_path / "io.plan", "--backend", "tensorrt", "--inputIOFormats=fp16:chw",
             *([f"--tacticSources={KIT_TACTICS}"] if KIT_TACTICS else []))
    assert io.code == 0, io
    with trtkit.load(tmp_path / "io.plan", config=CUDA) as e:
        assert e.inputs[0].dtype == "float16"


def test_plan_header_declares_its_size(fp32_engines):
    from trtkit.engine.plan_file import declared_plan_size

    from trtkit.engine.plan_file import PLAN_MAGIC

    data = fp32_engines["scrfd"].read_bytes()
    assert PLAN_MAGIC.get(data[:4]) == "tensorrt", data[:4]  # 8.5: b"ptrt"; 10.x: b"ftrt"
    assert declared_plan_size(data) is None  # full TensorRT's header is not read (undocumented)


# ---------------------------------------------------------------- runtime features

def test_batch_above_profile_max_is_chunked(fp32_engines):
    feeds = _random(None, {"input": (40, 3, 224, 224)}, seed=9)  # profile max 32
    with trtkit.load(fp32_engines["efficientnet_lite0"], config=CUDA) as e, _ort(asset_model("efficientnet_lite0")) as o:
        _assert_close(e.infer(feeds), o.infer(feeds), tol=TOL)


def _nonzero_model(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Greater", ["x", "zero"], ["mask"]), helper.make_node("NonZero", ["mask"], ["idx"])],
        "nonzero", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [64])],
        [helper.make_tensor_value_info("idx", TensorProto.INT64, [1, "k"])],
        [helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def test_data_dependent_output_through_output_allocator(tmp_path):
    engine = build_engine(_nonzero_model(tmp_path / "nz.onnx"), "nonzero")
    rng = np.random.default_rng(1)
    with trtkit.load(engine, config=CUDA) as e:
        for _ in range(3):  # a different count each call
            x = rng.standard_normal(64).astype(np.float32)
            got = e.infer({"x": x})["idx"]
            np.testing.assert_array_equal(got.reshape(-1), np.flatnonzero(x > 0))


def test_cuda_graph_replay_matches(fp32_engines):
    feeds = _random(None, {"input.1": (1, 3, 640, 640)}, seed=2)
    with trtkit.load(fp32_engines["scrfd"], config=CUDA) as plain, \
            trtkit.load(fp32_engines["scrfd"], config=RuntimeConfig(device="cuda", cuda_graph=True)) as graphed:
        want = plain.infer(feeds)
        for _ in range(3):  # 1st run plain + capture, then replays
            _assert_close(graphed.infer(feeds), want, tol=1e-6)


def test_contexts_on_a_one_profile_dynamic_engine(fp32_engines):
    """10+: contexts share profile 0. 8.5: refused clearly instead of the old segfault."""
    engine = fp32_engines["efficientnet_lite0"]
    if FLAVOR.profile_sharing == "always":
        with trtkit.load(engine, config=RuntimeConfig(device="cuda", contexts=2)) as e:
            assert len(e.infer(_random(None, {"input": (2, 3, 224, 224)}))) == 1
    else:
        with pytest.raises(EngineError, match="each concurrent context needs a profile of its own"):
            trtkit.load(engine, config=RuntimeConfig(device="cuda", contexts=2))


@pytest.mark.parametrize("kind", ["static", "pinned-profiles"])
def test_n_contexts_concurrent_submit_and_infer_many(fp32_engines, kind):
    if kind == "static":
        engine, name, shape = fp32_engines["scrfd"], "input.1", (1, 3, 640, 640)
    else:  # one identical profile per context: what 8.5 needs (and works everywhere)
        prof = MODELS["efficientnet_lite0"][0]
        engine = build_engine(asset_model("efficientnet_lite0"), "efficientnet_lite0-3profiles", profiles=(prof, prof, prof))
        name, shape = "input", (4, 3, 224, 224)
    batches = [_random(None, {name: shape}, seed=s) for s in range(12)]
    with trtkit.load(engine, config=CUDA) as one:
        want = [one.infer(b) for b in batches]
    with trtkit.load(engine, config=RuntimeConfig(device="cuda", contexts=3)) as e:
        futures = [e.submit(b) for b in batches]
        for fut, ref in zip(futures, want):
            _assert_close(fut.result(), ref, tol=1e-6)
        for got, ref in zip(e.infer_many(batches), want):
            _assert_close(got, ref, tol=1e-6)
        errors: list[BaseException] = []

        def worker(i: int) -> None:
            try:
                for k in range(i, len(batches), 4):
                    _assert_close(e.infer(batches[k]), want[k], tol=1e-6)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors


@pytest.mark.parametrize("config", [CUDA, RuntimeConfig(device="cuda", cuda_graph=True),
                                    RuntimeConfig(device="cuda", outputs_on_device=True)], ids=["numpy", "cuda-graph", "on-device"])
def test_pipelined_infer_many_matches_infer(fp32_engines, config):
    """The staged pipeline (4 IO slots over 1 context): same outputs, in order, for mixed batch sizes,
    including one above the profile max (40 > 32: chunked on a worker instead)."""
    sizes = [32, 8, 32, 1, 40, 32, 16, 32]
    batches = [_random(None, {"input": (b, 3, 224, 224)}, seed=s) for s, b in enumerate(sizes)]
    with trtkit.load(fp32_engines["efficientnet_lite0"], config=CUDA) as ref:
        want = [ref.infer(b)["logits"] for b in batches]
    with trtkit.load(fp32_engines["efficientnet_lite0"], config=config) as e:
        got = [out["logits"] for out in e.infer_many(batches * 3)]
    assert len(got) == 3 * len(batches)
    for out, ref_out in zip(got, want * 3):
        arr = out.numpy() if hasattr(out, "__cuda_array_interface__") else out
        np.testing.assert_allclose(arr, ref_out, rtol=1e-6, atol=1e-6)
        if hasattr(out, "close"):
            out.close()


def test_submit_into_on_an_engine(fp32_engines):
    """submit(into=) on an engine: page-locked (DMA straight into it: 8x22x2100 float32 is 1.5 MB, above the 1 MB
    pinned check) and pageable destinations come back filled as themselves; a batch above the profile max (chunked
    on a worker) and a destination of another shape give new arrays."""
    from trtkit.backends import cuda

    feeds = _random(None, {"images": (8, 3, 320, 320)}, seed=5)
    big = _random(None, {"images": (12, 3, 320, 320)}, seed=6)  # the profile's max batch is 8
    with trtkit.load(fp32_engines["yolov8n"], config=CUDA) as e:
        want, want_big = e.infer(feeds)["output0"], e.infer(big)["output0"]
        pinned = cuda.PinnedBuffer(want.nbytes)
        try:
            for dest in (pinned.view(want.dtype, want.shape), np.full_like(want, -1)):
                for _ in range(2):
                    got = e.submit(feeds, into={"output0": dest}).result()["output0"]
                    assert got is dest
                    np.testing.assert_array_equal(got, want)
            other = np.full(want_big.shape, -1, np.float32)
            got = e.submit(big, into={"output0": other}).result()["output0"]  # chunked: joined into a new array
            assert got is not other and (other == -1).all()
            np.testing.assert_array_equal(got, want_big)
        finally:
            pinned.close()


def test_numpy_outputs_come_in_page_locked_arrays_reused_once_released(fp32_engines):
    """On an engine too: outputs straight into the pool's page-locked arrays, reused only once released."""
    batches = [_random(None, {"images": (8, 3, 320, 320)}, seed=20 + i) for i in range(3)]  # 1.5 MB out: above 1 MB
    with trtkit.load(fp32_engines["yolov8n"], config=CUDA) as e:
        want = [e.infer(b)["output0"].copy() for b in batches]

    def same(got, ref):
        np.testing.assert_array_equal(got, ref)

    with trtkit.load(fp32_engines["yolov8n"], config=CUDA) as e:
        check_output_recycling(e, "output0", batches, want, same)


def test_data_dependent_output_through_the_pipeline(tmp_path):
    """Each slot gets its own data-dependent output (TensorRT's allocator asks per run): counts differ per batch."""
    engine = build_engine(_nonzero_model(tmp_path / "nz.onnx"), "nonzero")
    rng = np.random.default_rng(7)
    xs = [rng.standard_normal(64).astype(np.float32) for _ in range(40)]
    with trtkit.load(engine, config=CUDA) as e:
        outs = list(e.infer_many({"x": x} for x in xs))
    for x, out in zip(xs, outs):
        np.testing.assert_array_equal(out["idx"].reshape(-1), np.flatnonzero(x > 0))


def test_outputs_on_device(fp32_engines):
    feeds = _random(None, {"input": (3, 3, 224, 224)}, seed=4)
    with trtkit.load(fp32_engines["efficientnet_lite0"], config=CUDA) as host, \
            trtkit.load(fp32_engines["efficientnet_lite0"], config=RuntimeConfig(device="cuda", outputs_on_device=True)) as dev:
        want = host.infer(feeds)["logits"]
        out = dev.infer(feeds)["logits"]
        assert hasattr(out, "__cuda_array_interface__")
        np.testing.assert_array_equal(out.numpy(), want)
        big = dev.infer(_random(None, {"input": (40, 3, 224, 224)}))["logits"]  # chunked: joined on the device
        assert big.shape == (40, 1000)
        out.close()
        big.close()


def test_close_then_use(fp32_engines):
    e = trtkit.load(fp32_engines["scrfd"], config=CUDA)
    e.close()
    e.close()  # idempotent
    with pytest.raises(ClosedError):
        e.infer(_random(None, {"input.1": (1, 3, 640, 640)}))


def test_ten_thousand_calls_do_not_leak(tmp_path):
    from trtkit.backends import cuda

    engine = build_engine(_nonzero_model(tmp_path / "nz.onnx"), "nonzero")
    x = np.linspace(-1, 1, 64, dtype=np.float32)
    with trtkit.load(engine, config=CUDA) as e:
        for _ in range(200):  # warm: every buffer at its size
            e.infer({"x": x})
        gc.collect()
        free0 = cuda.mem_info()[0]
        rss0 = _rss()
        for _ in range(10_000):
            out = e.infer({"x": x})
        gc.collect()
        assert out["idx"].shape == (1, 32)
        assert free0 - cuda.mem_info()[0] < 8 << 20, "device memory grew"
        assert _rss() - rss0 < 32 << 20, "host memory grew"


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# ---------------------------------------------------------------- commands

def test_run_labels_the_gpu(fp32_engines, cli):
    res = cli("run", fp32_engines["scrfd"])
    assert res.code == 0, res
    assert "tensorrt (cuda:0)" in res.out and "(cpu)" not in res.out, res


def test_compare_names_no_tf32_for_a_tf32_engine(tmp_path, cli):
    engine = build_engine(asset_model("efficientnet_lite0"), "efficientnet_lite0-tf32", tf32=True,
                          profiles=(MODELS["efficientnet_lite0"][0],))
    res = cli("compare", engine, asset_model("efficientnet_lite0"), "--shapes", "input:8x3x224x224", "--atol", "1e-6", "--rtol", "1e-6")
    if res.code == 0:
        pytest.skip("TF32 happened to stay within 1e-6 here")
    assert "--noTF32" in res.out + res.err, res


def test_bench_stages_add_up_and_no_data_transfers(fp32_engines, tmp_path, cli):
    out = tmp_path / "b.json"
    res = cli("bench", "--loadEngine", fp32_engines["efficientnet_lite0"], "--batch", "1,32", "--duration", "1",
              "--warmUp", "100", "--json", out)
    assert res.code == 0, res
    report = json.loads(out.read_text())
    text = json.dumps(report)
    assert "h2d" in text and "d2h" in text
    res = cli("bench", fp32_engines["efficientnet_lite0"], "--batch", "32", "--duration", "1", "--noDataTransfers",
              "--useCudaGraph", "--infStreams", "1")
    assert res.code == 0, res


def _predict(cli, *args):
    res = cli("predict", *map(str, args), "--json")
    assert res.code == 0, res
    return json.loads(res.out)


def _close_boxes(a: list, b: list, key: str) -> None:
    assert len(a) == len(b), (len(a), len(b))
    for x, y in zip(sorted(a, key=lambda r: r["box"]), sorted(b, key=lambda r: r["box"])):
        assert np.allclose(x["box"], y["box"], atol=1.0), (x, y)


def test_predict_classify_on_engine_matches_onnx(fp32_engines, assets, cli):
    img = assets / "images"
    cls_e = _predict(cli, "--task", "classify", fp32_engines["efficientnet_lite0"], img / "coffee.png", img / "squirrel_cls.jpg")
    cls_o = _predict(cli, "--task", "classify", asset_model("efficientnet_lite0"), img / "coffee.png", img / "squirrel_cls.jpg")
    assert [r["top_k"][0]["class_id"] for r in cls_e] == [r["top_k"][0]["class_id"] for r in cls_o]


def test_predict_face_on_engine_matches_onnx(fp32_engines, assets, cli):
    img = assets / "images" / "solvay_conference_1927.jpg"
    face_e = _predict(cli, "--task", "face", fp32_engines["scrfd"], img)
    face_o = _predict(cli, "--task", "face", asset_model("scrfd"), img)
    _close_boxes(face_e[0]["faces"], face_o[0]["faces"], "faces")


def test_predict_detect_on_engine_matches_onnx(fp32_engines, assets, cli):
    det_args = (assets / "images" / "astronaut.png", "--imgsz", "320")
    det_e = _predict(cli, "--task", "detect", fp32_engines["yolov8n"], *det_args)
    det_o = _predict(cli, "--task", "detect", asset_model("yolov8n"), *det_args)
    _close_boxes(det_e[0]["detections"], det_o[0]["detections"], "detections")


def _ocr_text(cli, assets, det, rec, cls) -> str:
    image = assets / "images" / "imageTextN_rgb.png"
    return _predict(cli, "--task", "ocr", "--det", det, "--rec", rec, "--cls", cls, image)[0]["text"]


def test_predict_ocr_with_det_and_cls_engines_matches_onnx(fp32_engines, assets, cli):
    """Engines and ONNX models mix in one OCR pipeline: det and cls on TensorRT, rec on ONNX Runtime."""
    text = _ocr_text(cli, assets, fp32_engines["ppocr_det"], asset_model("ppocr_rec"), fp32_engines["ppocr_cls"])
    assert text and text == _ocr_text(cli, assets, asset_model("ppocr_det"), asset_model("ppocr_rec"), asset_model("ppocr_cls"))


def test_predict_ocr_on_engines_matches_onnx(fp32_engines, assets, cli):
    """No --rec-chars: the rec model's 'character' metadata travels into the engine's sidecar with trtkit build."""
    text = _ocr_text(cli, assets, fp32_engines["ppocr_det"], fp32_engines["ppocr_rec"], fp32_engines["ppocr_cls"])
    assert text and text == _ocr_text(cli, assets, asset_model("ppocr_det"), asset_model("ppocr_rec"), asset_model("ppocr_cls"))


def test_inspect_truncated_plan_fails_on_the_gpu(fp32_engines, tmp_path, cli):
    cut = tmp_path / "cut.plan"
    cut.write_bytes(fp32_engines["scrfd"].read_bytes()[:1000])
    res = cli("inspect", cut)
    assert res.code == 1 and "Traceback" not in res.err, res
